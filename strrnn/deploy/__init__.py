"""Deployment of trained keyword spotters outside Python.

:func:`write_c` writes dependency-free C99 source (weights as ``const`` arrays, fp32 or int8, a streaming
``init``/``step``/``logits`` API with no ``malloc``) and a ``main.c`` checker; :func:`compile_c` builds the
checker, :func:`run_c` feeds it feature clips, :func:`footprint` gives flash, RAM and multiply-adds per frame.
The math and the memory layout are described in :mod:`strrnn.deploy.c_source`.
"""

from .c_source import compile_c, footprint, run_c, write_c

__all__ = ["write_c", "compile_c", "run_c", "footprint"]
