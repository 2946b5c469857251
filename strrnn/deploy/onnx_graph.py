"""ONNX export of a run's exported model, checked with onnxruntime (the library side of ``strrnn export --onnx``).

The graph is traced from an input of the shape stored with the run (``exported.pt``'s ``input_shape``), so no
data set is needed; the batch axis stays dynamic, the others are fixed (FastGRNN/FastRNN's time loop is
unrolled over the stored number of frames; LSTM/GRU become one ONNX operator). The written model is checked
against PyTorch with onnxruntime on random inputs of that shape, with ``torch.onnx.export(..., dynamo=True)``.

``--int8`` also writes onnxruntime's dynamic quantization of it (``quantize_dynamic``: weight matrices as int8
with one scale each, activations quantized on the fly); ``--check-accuracy`` scores both on the run's test split
(this needs the data set). :func:`strrnn.model_size` gives the bytes the weights take in either. A file holds
more: the graph (an unrolled FastGRNN's outweighs its weights, and quantization adds nodes to every step), and
for LSTM/GRU, whose ONNX operator takes dense matrices, a low-rank weight's product rather than its factors.

The command line is :mod:`strrnn.cli.export`; the in-memory export of a model into plain modules is
:func:`strrnn.export`.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import check_label_set, exported_datamodule, load_exported
from ..fileio import atomic_path
from ..optional import require
from ..reporting import model_size
from ..run_folder import RunFolderError, check_output

__all__ = ["OnnxExport", "export_onnx", "onnx_accuracy", "int8_path"]


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and checked.

    ``input_shape``: one example's shape (the model reads ``(batch, *input_shape)``); ``max_abs_diff``: largest
    difference between PyTorch's and onnxruntime's logits on the check inputs; ``size``: the weights' storage,
    :func:`strrnn.model_size` (``fp32_kb``, ``int8_kb``); ``int8_agreement``: fraction of the check inputs on
    which the int8 model's argmax equals the fp32 model's (None without ``int8``).
    """

    onnx: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float
    size: dict[str, float]
    int8: Path | None = None
    int8_agreement: float | None = None


def int8_path(onnx_path: str | Path) -> Path:
    """Where ``--int8`` writes by default: ``model.onnx`` -> ``model.int8.onnx`` (same folder)."""
    return Path(onnx_path).with_suffix(".int8.onnx")


def _onnxruntime():
    require("onnx", extra="onnx", feature="ONNX export")  # the exporter writes through it
    require("onnxscript", extra="onnx", feature="ONNX export")  # the dynamo exporter translates through it
    return require("onnxruntime", extra="onnx", feature="ONNX export")


def _output_file(path: str | Path, flag: str) -> Path:
    """``path`` checked as an output (:func:`strrnn.run_folder.check_output`: never a run's own file, a folder or
    an unwritable place); ``ValueError`` saying why not."""
    try:
        return check_output(path, flag)
    except RunFolderError as err:
        raise ValueError(str(err)) from None


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the folder {path.parent} ({err.strerror or err})") from None


def _session(onnxruntime, path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _trace_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    import onnx

    for module in model.modules():
        if hasattr(module, "use_kernel"):
            # FastGRNN/FastRNN's hand-written scans (training and in-place inference) are speed devices writing
            # into preallocated tensors; the exporter needs the cell's plain step ops, which compute the same
            module.use_kernel = False
    example = torch.zeros(2, *input_shape)  # batch 2: torch.export specializes a dynamic dimension seen as 1
    with warnings.catch_warnings():
        # torch's own decomposition of nn.LSTM calls its deprecated torch._check_is_size while tracing; the
        # notice is about torch internals, nothing a user of this command can change
        warnings.filterwarnings("ignore", message=r"_check_is_size will be removed", category=FutureWarning)
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=["features"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    for node in proto.graph.node:
        # the exporter's provenance notes (Python stack traces naming this machine's files, FX node text) are
        # debugging aids, not part of the model: they made up 85% of an unrolled FastGRNN's file
        del node.metadata_props[:]
    onnx.save_model(proto, str(path))


def _quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="strrnn-int8-") as folder:
        # onnxruntime's recommended first step (shape inference, graph clean-up) before quantizing
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)


@torch.no_grad()
def export_onnx(run_dir, onnx_path, *, int8: bool | str | Path = False, atol: float = 1e-4, samples: int = 64,
                seed: int = 0) -> OnnxExport:
    """Write the exported model of ``run_dir`` to ONNX (and, with ``int8``, its int8 quantization) and check it.

    No data set is read: the model is traced from the input shape stored in ``exported.pt`` and checked on
    ``samples`` standard-normal inputs of shape ``(batch, *input_shape)``, fed in batches of 1 and of the rest
    (the batch axis is dynamic). Each file is written atomically, once its check passed.

    Args:
        run_dir: a run folder written by ``python -m strrnn.train`` (or its ``exported.pt``).
        onnx_path: the fp32 ONNX file to write.
        int8: also write ``quantize_dynamic``'s int8 model (QInt8 weights): True for :func:`int8_path` of
            ``onnx_path``, or a file name.
        atol: the largest difference allowed between PyTorch's and onnxruntime's fp32 logits.
        samples, seed: how many random check inputs, drawn with which seed.

    Raises:
        ValueError: a missing or unreadable run, an output path that cannot be used (a folder, a run's own file,
            an unwritable place: :func:`strrnn.run_folder.check_output`, before anything is traced), an ``atol``
            that is not a finite number >= 0, or fp32 logits further than ``atol`` from PyTorch's (the file is
            then not written).
        strrnn.optional.MissingExtraError: onnx, onnxscript or onnxruntime is missing (the ``[onnx]`` extra).
    """
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0 or atol == float("inf"):
        raise ValueError(f"--atol must be a finite number >= 0, got {atol!r}")  # checked before the slow tracing
    onnxruntime = _onnxruntime()
    onnx_path = _output_file(onnx_path, "--onnx")
    q_path = None
    if int8:
        q_path = _output_file(int8_path(onnx_path) if int8 is True else int8, "--int8")
        if q_path.resolve() == onnx_path.resolve():
            raise ValueError(f"--int8 {q_path} is the fp32 --onnx file; give another name")
    model, payload = load_exported(run_dir)
    for path in (onnx_path, q_path):
        if path is not None:
            _make_parent(path)
    input_shape = tuple(int(n) for n in payload["input_shape"])
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(max(samples, 2), *input_shape, generator=generator)
    inputs = [x[:1], x[1:]]
    expected = np.concatenate([model(part).numpy() for part in inputs])
    with atomic_path(onnx_path) as tmp:
        _trace_onnx(model, input_shape, tmp)
        session = _session(onnxruntime, tmp)
        got = np.concatenate([session.run(None, {"features": part.numpy()})[0] for part in inputs])
        worst = float(np.abs(expected - got).max())
        if not worst <= atol:  # also refuses NaN
            raise ValueError(f"ONNX output differs from PyTorch by {worst:.3g} > {atol}; not written")
    result = OnnxExport(onnx_path, input_shape, worst, model_size(model))
    if q_path is not None:
        with atomic_path(q_path) as tmp:
            _quantize_int8(onnx_path, tmp)
            session = _session(onnxruntime, tmp)
            quantized = np.concatenate([session.run(None, {"features": part.numpy()})[0] for part in inputs])
            if quantized.shape != got.shape or not np.isfinite(quantized).all():
                raise ValueError(f"the int8 model gives logits of shape {quantized.shape} (non-finite: "
                                 f"{int((~np.isfinite(quantized)).sum())}), fp32 {got.shape}; not written")
        result.int8 = q_path
        result.int8_agreement = float((quantized.argmax(1) == got.argmax(1)).mean())
    return result


def onnx_accuracy(run_dir, onnx_files, data_dir: str | None = None) -> tuple[dict[str, float], int]:
    """Test accuracy of ONNX models of ``run_dir`` on the run's test split (this one reads the data set).

    ``onnx_files``: ``{name: path}`` (e.g. ``{"fp32": ..., "int8": ...}``); ``data_dir``: another root of the
    same data set (default: the run's). Features use the normalization stored with the run, as
    ``python -m strrnn.evaluate`` does. Returns ``({name: accuracy in 0…1}, number of test examples)``.
    """
    onnxruntime = _onnxruntime()
    _, payload = load_exported(run_dir)
    datamodule = exported_datamodule(payload, data_dir)
    datamodule.setup("test")
    check_label_set(datamodule, payload)
    sessions = {name: _session(onnxruntime, Path(path)) for name, path in onnx_files.items()}
    correct, total = dict.fromkeys(sessions, 0), 0
    for x, y in datamodule.test_dataloader():
        total += len(y)
        for name, session in sessions.items():
            pred = session.run(None, {"features": x.numpy()})[0].argmax(1)
            correct[name] += int((pred == y.numpy()).sum())
    return {name: c / max(total, 1) for name, c in correct.items()}, total
