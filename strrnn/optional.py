"""Optional dependencies: one place that imports them and says which extra installs a missing one.

The extras are declared in ``pyproject.toml`` (``pip install 'strrnn[onnx]'``, ``[plot]``, ``[images]``,
``[tensorboard]``, ``[lightning]``; ``[dev]`` holds them all). A feature that needs one calls::

    onnxruntime = require("onnxruntime", extra="onnx", feature="ONNX export")

and gets the module, or a :class:`MissingExtraError` whose message names the extra and the install command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require", "install_hint"]


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is missing; the message names the extra that installs it.

    Also a ``ValueError`` so that the command lines, which report ``ValueError`` as a one-line usage error
    (exit status 2), print the install command instead of a traceback.
    """


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'strrnn[extra]'``."""
    return f"pip install 'strrnn[{extra}]'"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``; if it cannot be imported, raise :class:`MissingExtraError` saying that
    ``feature`` needs the ``[extra]`` extra (the original ``ImportError`` is chained and quoted)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # a package that is installed but fails to import (a broken native library) gets its own error quoted
        missing = exc.name is not None and module.split(".")[0] == exc.name.split(".")[0]
        reason = f"{module} is not installed" if missing else f"import {module} failed: {exc}"
        raise MissingExtraError(f"{feature} needs the [{extra}] extra: {install_hint(extra)} ({reason})") from exc
