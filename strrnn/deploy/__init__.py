"""From a trained run to a device: dependency-free C and ONNX files, each checked against PyTorch.

:func:`write_c` writes C99 source (weights as ``const`` arrays, fp32 or int8, a streaming ``init``/``step``/
``logits`` API with no ``malloc``) and a ``main.c`` checker; :func:`compile_c` builds the checker, :func:`run_c`
feeds it feature clips, :func:`footprint` gives flash, RAM and multiply-adds per frame (:mod:`.c_source` describes
the math and the memory layout); :func:`export_c` does it for a run folder and checks the C against PyTorch
(``strrnn export --c``). :func:`export_onnx` writes a run's model as ONNX (and int8), checked with
onnxruntime (:mod:`.onnx_graph`): hand-built clip (``Scan``) and step graphs for recurrent models, each weight
stored once.
"""

from .c_source import CExport, compile_c, export_c, footprint, run_c, write_c
from .onnx_graph import OnnxExport, build_graphs, export_onnx, int8_path, onnx_accuracy, run_step_graph, step_path

__all__ = ["write_c", "compile_c", "run_c", "footprint", "export_c", "CExport", "export_onnx", "onnx_accuracy",
           "OnnxExport", "int8_path", "step_path", "build_graphs", "run_step_graph"]
