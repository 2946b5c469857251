"""Command-line modules that share their name with a public function stay callable as that function.

``python -m strrnn.export`` and ``python -m strrnn.data.synthesize`` are command lines, while ``strrnn.export``
and ``strrnn.data.synthesize`` are library functions. Importing a submodule makes Python bind it to the package
attribute of the same name, which would replace the function; :func:`make_callable` turns the module object into
one that calls the function, so both spellings keep working whatever was imported first.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

__all__ = ["make_callable"]


def make_callable(module_name: str, function: Callable) -> None:
    """Make ``sys.modules[module_name]`` callable: calling it calls ``function`` with the same arguments."""

    class CallableModule(types.ModuleType):
        __doc__ = function.__doc__

        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
