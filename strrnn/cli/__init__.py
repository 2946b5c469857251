"""strrnn's command lines: ``strrnn <command> ...`` (or ``python -m strrnn <command> ...``).

    strrnn train       train a model with STR (also ``python -m strrnn.train``)
    strrnn evaluate    test accuracy and confusion matrix of a trained run
    strrnn compare     rank-vs-accuracy table, CSV and plots across runs
    strrnn export      a run's model as ONNX (and int8) or as dependency-free C
    strrnn predict     label audio files with a trained run
    strrnn data        where each data set is read from; downloads
    strrnn synthesize  speak keyword lists with espeak-ng into the Speech Commands layout
    strrnn demo        dense and low-rank STR trained side by side on synthetic speech

Each command is one module of this package with a ``main(argv) -> exit status``; it is imported only when it runs,
so ``strrnn --help`` and every command's ``--help`` answer without importing torch. The library itself never
imports this package.
"""

from __future__ import annotations

import sys
from importlib import import_module

__all__ = ["COMMANDS", "main"]

#: command -> one line of help; the module is ``strrnn.cli.<command>``
COMMANDS = {
    "train": "train a model with STR (the same as python -m strrnn.train)",
    "evaluate": "test accuracy and confusion matrix of a trained run",
    "compare": "rank-vs-accuracy table, CSV and plots across run folders",
    "export": "a run's model as ONNX (and int8) or as dependency-free C",
    "predict": "label audio files with a trained run",
    "data": "where each data set is read from; downloads",
    "synthesize": "speak keyword lists with espeak-ng into the Speech Commands layout",
    "demo": "dense and low-rank STR trained side by side on synthetic speech",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return ("usage: strrnn <command> [--help] [ARGS ...]\n\nSoft Threshold Reparameterization: learn how much to "
            "compress each layer.\n\ncommands:\n" + "\n".join(lines) + "\n\n`strrnn <command> --help` lists a "
            "command's flags; `python -m strrnn <command>` is the same without the console script.\n")


def main(argv: list[str] | None = None) -> int:
    """Run ``strrnn <command> [ARGS ...]``; returns the command's exit status (2 for an unknown command)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"strrnn {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"strrnn: error: unknown command {command!r}{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(import_module(f".{command}", __name__).main(rest) or 0)
