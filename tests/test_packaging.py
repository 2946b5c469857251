"""Packaging: declared dependencies and extras, clear messages for missing extras, a fresh clone's benchmarks and
an empty or all-failed compare."""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import strrnn
from strrnn.cli import compare
from strrnn.optional import MissingExtraError, require

tomllib = pytest.importorskip("tomllib", reason="Python 3.11's tomllib reads pyproject.toml")

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

#: third-party modules imported by strrnn/ or cnn/ that need not be required dependencies, and why
NOT_REQUIRED = {
    "matplotlib": "plot extra, imported only after require('matplotlib', extra='plot')",
    "onnx": "onnx extra, imported only after require('onnx', extra='onnx')",
    "onnxruntime": "onnx extra, imported only after require('onnxruntime', extra='onnx')",
    "tabulate": "optional: report.md falls back to plain text without it",
    "PIL": "pillow, which torchvision requires",
}


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it, anywhere in the file."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("strrnn", "cnn"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_required_dependencies_cover_every_import():
    required = {_name(r) for r in PROJECT["dependencies"]}
    distributions = packages_distributions()
    imports = _imports(REPO / "strrnn") | _imports(REPO / "cnn")
    for module, files in sorted(imports.items()):
        if module in NOT_REQUIRED:
            continue
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert names & required, f"{module} (imported by {sorted(files)}) is not a required dependency"


# extras that only a benchmark needs (edgeml: the reference FastGRNN of benchmarks/rnn_speed.py), kept out of
# [dev] so that the tests never import a package that probes for nvcc on import
BENCHMARK_ONLY = {"edgeml"}


def test_optional_packages_are_not_required_and_dev_holds_every_extra():
    required = {_name(r) for r in PROJECT["dependencies"]}
    assert not required & {"matplotlib", "mlxtend", "scipy", "onnx", "onnxruntime", "tabulate", "lightning"}
    dev = {_name(r) for r in EXTRAS["dev"]}
    for extra, requirements in EXTRAS.items():
        if extra in BENCHMARK_ONLY:
            continue
        assert {_name(r) for r in requirements} <= dev, extra
    assert {"pytest", "hypothesis", "ruff", "tabulate", "python-speech-features"} <= dev
    torch = Requirement(next(r for r in PROJECT["dependencies"] if _name(r) == "torch"))
    assert torch.specifier.contains("2.5.0") and not torch.specifier.contains("2.4.1")  # onnx.export(dynamo=...)


def test_every_require_call_names_a_declared_extra_holding_the_module():
    calls = []
    for path in (REPO / "strrnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                args = {k.arg: k.value for k in node.keywords}
                module = node.args[0] if node.args else args["module"]
                literal = module.value if isinstance(module, ast.Constant) else None
                calls.append((path.name, literal, args["extra"].value))
    assert {extra for _, _, extra in calls} >= {"onnx", "plot", "lightning"}
    distributions = packages_distributions()
    for file, module, extra in calls:
        assert extra in EXTRAS, f"{file}: require({module!r}) names the undeclared extra [{extra}]"
        if module is None:  # computed (strrnn.lightning_compat: lightning.pytorch or lightning.fabric)
            continue
        wanted = {d.lower() for d in distributions.get(module.split(".")[0], [module.split(".")[0]])}
        assert wanted & {_name(r) for r in EXTRAS[extra]}, f"{file}: [{extra}] does not install {module}"


def test_require_names_the_extra_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError) as err:
        require("matplotlib", extra="plot", feature="The plot")
    assert str(err.value) == "The plot needs the [plot] extra: pip install 'strrnn[plot]' (matplotlib is not installed)"
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)  # the CLIs report ValueError
    assert require("json", extra="x", feature="y").dumps([]) == "[]"


def test_onnx_export_without_the_extra_says_which(monkeypatch, tmp_path):
    from strrnn.deploy.onnx_graph import export_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"ONNX export needs the \[onnx\] extra: pip install 'strrnn\[onnx\]'"):
        export_onnx(tmp_path / "no-run", tmp_path / "model.onnx")


# --- strrnn compare on nothing to compare ---


def _run(folder: Path, **summary) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_compare_all_failed_runs_says_so(tmp_path, capsys):
    failed = [_run(tmp_path / "a", dataset="fsdd", mode="lowrank", test_acc=None),
              _run(tmp_path / "b", status="failed"),  # no dataset, no decays: the old KeyError: 'weight_decay'
              _run(tmp_path / "c")]
    with pytest.warns(UserWarning, match="left out 3 run"):
        assert compare.main([str(p) for p in failed]) == 2
    assert "none of the runs has a test accuracy (did every run fail?)" in capsys.readouterr().err


def test_compare_folder_without_summary_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'}: no summary.json" in capsys.readouterr().err


def test_compare_runs_without_decays_and_without_matplotlib(tmp_path, capsys, monkeypatch):
    run = _run(tmp_path / "r", dataset="fsdd", mode="lowrank", test_acc=0.5, seed=0, params_str=10,
               params_str_dense=20, params_exported=30)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    csv = tmp_path / "t.csv"
    assert compare.main([str(run), "--csv", str(csv), "--plot", str(tmp_path / "p.png")]) == 0
    captured = capsys.readouterr()
    assert "| fsdd | lowrank |" in captured.out and csv.is_file() and not (tmp_path / "p.png").exists()
    assert "needs the [plot] extra: pip install 'strrnn[plot]'" in captured.err


# --- the benchmark suite on a fresh clone without ../shared ---


def test_suite_skips_a_benchmark_whose_data_is_missing(tmp_path, monkeypatch, capsys):
    from benchmarks import rank_vs_accuracy, suite

    monkeypatch.setattr(rank_vs_accuracy, "REPO", tmp_path / "clone")  # no ../shared next to it
    monkeypatch.setenv("STRRNN_FSDD", str(tmp_path / "no-fsdd"))
    monkeypatch.setattr(suite, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(suite, "BENCHMARKS", {"rank_vs_accuracy_100ep": ("rank_vs_accuracy", ["--epochs", "1"],
                                                                         ["--quick"])})
    monkeypatch.setattr(suite, "run_benchmark", lambda *a: pytest.fail("a benchmark without its data was started"))
    assert suite.main(["--quick"]) == 0  # skipped is not failed
    table = (tmp_path / "results" / "suite" / "quick" / "suite.md").read_text()
    assert f"| skipped: needs FSDD (recordings/*.wav), not found at {tmp_path / 'no-fsdd'}" in table
    assert "strrnn data download fsdd" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs FSDD"):  # run on its own, it says the same and exits
        monkeypatch.setattr(sys, "argv", ["rank_vs_accuracy", "--quick", "--out", str(tmp_path / "out")])
        rank_vs_accuracy.main()


# --- one name per concept: public functions stay functions whatever was imported --------------------------------
def test_public_functions_keep_their_type_whatever_is_imported():
    import importlib
    import inspect

    for module in ("strrnn.cli.export", "strrnn.cli.synthesize", "strrnn.cli.data", "strrnn.deploy.onnx_graph",
                   "strrnn.data.downloader", "strrnn.train"):
        importlib.import_module(module)
    assert inspect.isfunction(strrnn.export) and "model" in inspect.signature(strrnn.export).parameters
    assert inspect.isfunction(strrnn.data.synthesize) and inspect.isfunction(strrnn.data.download)
    assert inspect.isfunction(strrnn.load) and inspect.isfunction(strrnn.lowrank)


def test_deprecated_sparse_warns_and_still_works():
    from torch import nn

    with pytest.warns(FutureWarning, match="strrnn.unstructured"):
        layer = strrnn.sparse(nn.Linear(4, 3))
    assert isinstance(layer.parametrizations.weight[0], strrnn.UnstructuredSTR)


def test_no_committed_file_names_a_machines_folders():
    """Results, tables and docs are portable: no absolute path of the machine that wrote them."""
    import re
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    listed = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    pattern = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users|mnt|data)/[\w.-]+/")
    offenders = []
    for name in listed.stdout.splitlines():
        path = repo / name
        if not path.is_file() or path.suffix in (".png", ".pt", ".onnx"):
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not offenders, offenders[:10]
