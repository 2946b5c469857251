# The README's two set-up commands: `make demo` and `make test`. Both create .venv if missing and install.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test install espeak lint clean-demo bench bench-quick

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# espeak-ng speaks the synthetic Speech Commands data (the demo's embedded default).
espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
	      || { echo "could not install espeak-ng with apt-get; install it and rerun"; exit 1; }; \
	  else \
	    echo "espeak-ng is missing; install it with: sudo apt-get install -y espeak-ng"; exit 1; \
	  fi; }

# Main job: dense and low-rank STR FastGRNN keyword spotters side by side on synthetic google13 (synthesized on
# first use); prints accuracy, learned ranks, parameters and KB of both.
demo: $(STAMP) espeak
	$(PY) -m strrnn demo --config configs/demo.yaml --out $(DEMO_OUT)

test: $(STAMP) espeak
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every benchmark (python -m benchmarks.suite): --quick is a smoke run under 10 minutes; the full suite resumes.
bench-quick: $(STAMP)
	$(PY) -m benchmarks.suite --quick

bench: $(STAMP)
	$(PY) -m benchmarks.suite
