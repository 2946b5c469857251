"""The vocabulary of bad input, shared by the command lines and the mode registry; imports nothing heavy.

:class:`UsageError` is what a command line reports in one line with exit status 2 (no traceback);
:func:`close_match` adds the "did you mean" hint to it.
"""

from __future__ import annotations

import difflib

__all__ = ["UsageError", "close_match"]


class UsageError(ValueError):
    """Bad command-line or config input: reported in one line with exit status 2, no traceback."""


def close_match(name, known, prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the entry of ``known`` closest to ``name``, or an empty string.

    ``prefix`` (``"--"`` for flags) is left out of the comparison: shared by every entry, it would make any two
    short names look alike.
    """
    names = {str(k)[len(prefix):] if str(k).startswith(prefix) else str(k): k for k in known}
    close = difflib.get_close_matches(str(name).removeprefix(prefix), list(names), n=1)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""
