"""ONNX export of a run's exported model, checked with onnxruntime (the library side of ``strrnn export --onnx``).

Recurrent models: two hand-built graphs, each weight stored once
------------------------------------------------------------------
A :class:`strrnn.models.SequenceClassifier` (FastGRNN, FastRNN, LSTM, GRU; dense or low rank; ``last`` or ``mean``
pooling; one or more layers) is written with ``onnx.helper`` rather than traced: torch's exporter unrolls the time
loop over the stored number of frames, so an unrolled graph holds 99 copies of the step (int8 quantization then adds
nodes to every copy: 276 KB at int8 against 181 KB at fp32 for the FSDD STR FastGRNN). Two files:

``model.onnx`` -- the clip: ``features`` (batch, frames, F) -> ``logits`` (batch, C), a ``Scan`` over the frames
    whose body is one cell step. Both the batch and the frame axis are dynamic.
``model.step.onnx`` -- one frame: ``frame`` (batch, F) and ``state`` (batch, S) -> ``logits`` (batch, C) (of the
    frames stepped so far) and ``state_out`` (batch, S). The state starts at zeros; loop the graph over a clip's
    frames and the last ``logits`` are the clip graph's.

Inputs are *normalized* features, as the PyTorch model reads them (``strrnn.load(run).inputs``), unlike the C
export, which normalizes raw frames itself. The step and the readout are the math of :mod:`strrnn.deploy.c_source`
(the same validated description of the model, :func:`strrnn.deploy.c_source._describe`)::

    p = x W^T + h U^T, then per cell as in c_source (FastGRNN z, c, h'; FastRNN; LSTM i f g o; GRU r z n)
    pooled = h of the last layer (last) or sum / max(count, 1) (mean);  logits = pooled C^T + b

State layout, one float row per sequence (``S`` columns, ``L`` layers, ``H`` hidden units)::

    [h_0 (H) ... h_{L-1} (H) | LSTM: c_0 (H) ... c_{L-1} (H) | mean pooling: sum of h_{L-1} (H), frame count (1)]

so "zero the row" is ``init`` and a batch of sequences of different ages (sliding windows) steps together.

A weight is a ``MatMul`` with its stored transpose (in, out); a low-rank weight (``W_left``/``W_right`` of the
exported cells, LSTM and GRU included) is two, ``(x R^T) L^T``, wherever ``r (out + in) < out in`` (else the
product is stored). Low rank therefore shrinks the file as it shrinks the model: the file is the weights plus 1-3 KB
of graph (measured on 10-epoch FSDD runs, fp32 / int8: dense FastGRNN 57.6 / 17.4 KB, STR at ranks (16, 30) 37.9 /
12.8 KB, where the unrolled graphs took 175 / 189 and 173 / 265 KB).

int8 (``int8=True``; :func:`int8_path`: ``model.int8.onnx`` and ``model.int8.step.onnx``): the arithmetic of the C
export's int8. Every matrix is stored as int8 ``q = round(w / s)``, ``|q| <= 127``, with one scale per output
(``scales="row"``, default) or per matrix (``"tensor"``); each product quantizes its input row on the fly,
``t = max|x| / 127``, ``x_q = round(x / t)`` (int8), multiply-accumulates ``MatMulInteger`` (int8 x int8 -> int32)
and rescales once, ``y = acc t s`` -- one model-local function, ``strrnn.QMatMul``, called once per product. Biases
and gates stay fp32. Not onnxruntime's ``DynamicQuantizeLinear``: its one uint8 scale per tensor would make a
sequence's result depend on the rest of the batch, and onnxruntime's uint8 x int8 kernel on AVX2 adds pairs of
products in saturating int16 (measured: a FastGRNN's state off by a third of its range after one step). The int32
sum of a product over ``n`` inputs can reach ``n * 127 * 127``; ``n`` above 133,144 is refused rather than left to
wrap.

Other models (CNNs) are traced with ``torch.onnx.export(..., dynamo=True)`` as before (batch axis dynamic, the
others fixed), and ``int8`` is onnxruntime's ``quantize_dynamic`` (one scale per tensor); no step graph.

Every file is checked against PyTorch with onnxruntime on random inputs of the stored shape before it is kept
(fp32 within ``atol``; the step graph looped over the frames too; the int8 files must give finite logits of the
right shape, and their top-class agreement with fp32 is reported). ``--check-accuracy`` scores the clip graphs on
the run's test split (this needs the data set). :func:`strrnn.model_size` gives the bytes the weights take.

The command line is :mod:`strrnn.cli.export`; the in-memory export of a model into plain modules is
:func:`strrnn.export`.
"""

from __future__ import annotations

import itertools
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import check_label_set, exported_datamodule, load_exported
from ..fileio import atomic_path
from ..models import SequenceClassifier
from ..optional import require
from ..reporting import model_size
from ..run_folder import RunFolderError, check_output
from .c_source import INT32_MAX, Q_MAX, _describe, _quantize_rows

__all__ = ["OnnxExport", "export_onnx", "onnx_accuracy", "int8_path", "step_path", "build_graphs", "run_step_graph",
           "state_layout"]


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and checked.

    ``input_shape``: one example's shape (the model reads ``(batch, *input_shape)``); ``max_abs_diff``: largest
    difference between PyTorch's and onnxruntime's logits on the check inputs; ``size``: the weights' storage,
    :func:`strrnn.model_size` (``fp32_kb``, ``int8_kb``); ``int8_agreement``: fraction of the check inputs on
    which the int8 model's argmax equals the fp32 model's (None without ``int8``); ``step``, ``int8_step``: the step
    graphs (recurrent models); ``graph``: ``"scan"`` (hand-built clip and step graphs) or ``"traced"``.
    """

    onnx: Path
    input_shape: tuple[int, ...]
    max_abs_diff: float
    size: dict[str, float]
    int8: Path | None = None
    int8_agreement: float | None = None
    step: Path | None = None
    int8_step: Path | None = None
    graph: str = "traced"


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


# ---------------------------------------------------------------------------------------------------------------
# Hand-built graphs of recurrent models: the step, and the clip as a Scan over it (see the module docstring)
# ---------------------------------------------------------------------------------------------------------------
OPSET = 17  # Split with sizes as an input (13+), Scan with scan_input_axes (9+): onnxruntime >= 1.12 runs it
IR_VERSION = 8  # the oldest IR that carries opset 17: readable by older runtimes too
ONNX_NONLINEARITIES = {"nl_sigmoid": "Sigmoid", "nl_tanh": "Tanh", "nl_relu": "Relu"}
FUNCTION_DOMAIN = "strrnn"  # the int8 product is one model-local function, defined once, called per product


def _qmatmul_function():
    """``QMatMul(x (B, in) fp32, wq (in, out) int8, s (out,) or () fp32) -> y (B, out)``: the int8 product.

    The input's own scale per row, ``t = max|x| / 127``: a sequence's result does not depend on the others in the
    batch (``DynamicQuantizeLinear`` has one scale per tensor), and int8 x int8 keeps every product exact in int32
    (onnxruntime's uint8 x int8 kernel on AVX2 sums pairs of products in saturating int16: a FastGRNN's state was off
    by a third of its range after one step). Its 13 nodes are stored once per file; each product is one node calling
    it.
    """
    from onnx import TensorProto, helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))

    nodes = [
        const("qmax", float(Q_MAX)), const("tiny", 1e-30),
        helper.make_node("Abs", ["x"], ["ax"]),
        helper.make_node("ReduceMax", ["ax"], ["amax"], axes=[1], keepdims=1),
        helper.make_node("Div", ["amax", "qmax"], ["t"]),
        helper.make_node("Max", ["t", "tiny"], ["safe"]),  # an all-zero row: 0 / tiny = 0
        helper.make_node("Div", ["x", "safe"], ["xs"]),
        helper.make_node("Round", ["xs"], ["xr"]),
        helper.make_node("Cast", ["xr"], ["xq"], to=TensorProto.INT8),
        helper.make_node("MatMulInteger", ["xq", "wq"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["accf", "t"], ["yt"]),
        helper.make_node("Mul", ["yt", "s"], ["y"]),
    ]
    return helper.make_function(FUNCTION_DOMAIN, "QMatMul", ["x", "wq", "s"], ["y"], nodes,
                                [helper.make_opsetid("", OPSET)])


def step_path(onnx_path: str | Path) -> Path:
    """The step graph beside a clip graph: ``model.onnx`` -> ``model.step.onnx`` (``m.int8.onnx`` ->
    ``m.int8.step.onnx``)."""
    return Path(onnx_path).with_suffix(".step.onnx")


def state_layout(spec) -> dict[str, tuple[int, int]]:
    """``{part: (start, stop)}`` of the step graph's state row: ``h0``, ``h1``, ... (LSTM: ``c0``, ...), and with
    mean pooling ``sum`` and ``count``; ``"size"`` maps to ``(0, S)``."""
    H, L = spec.hidden, len(spec.layers)
    names = [f"h{i}" for i in range(L)]
    if spec.layers[0].kind == "lstm":
        names += [f"c{i}" for i in range(L)]
    if spec.pooling == "mean":
        names.append("sum")
    layout, at = {}, 0
    for name in names:
        layout[name] = (at, at + H)
        at += H
    if spec.pooling == "mean":
        layout["count"] = (at, at + 1)
        at += 1
    layout["size"] = (0, at)
    return layout


class _GraphBuilder:
    """Initializers (shared by the main graph and the Scan body, which reads them from its outer scope) and node
    lists; every value name is unique across the whole model."""

    def __init__(self, int8: bool, per_row: bool) -> None:
        self.int8, self.per_row = int8, per_row
        self.initializers: dict[str, object] = {}
        self._count = 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), name)
        return name

    def add(self, nodes: list, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        from onnx import helper

        names = []
        for _ in range(outputs):
            self._count += 1
            names.append(f"v{self._count}")  # short names: the graph of a small model outweighs its weights
        nodes.append(helper.make_node(op, inputs, names, **attrs))
        return names

    def op(self, nodes: list, op: str, *inputs: str, **attrs) -> str:
        return self.add(nodes, op, list(inputs), **attrs)[0]

    # -- products ---------------------------------------------------------------------------------------------
    def _stored(self, nodes, x: str, name: str, w: np.ndarray) -> str:
        """``x (B, in) @ w^T`` for a stored (out, in) matrix ``w``: fp32, or int8 with integer accumulation."""
        if not self.int8:
            return self.op(nodes, "MatMul", x, self.const(f"{name}_T", w.T))
        if w.shape[1] * Q_MAX * Q_MAX > INT32_MAX:
            raise ValueError(f"int8 ONNX export refused: the product {name} {w.shape[0]}x{w.shape[1]} can "
                             f"accumulate {w.shape[1]}*127*127 = {w.shape[1] * Q_MAX * Q_MAX:,} > 2^31-1 in "
                             "int32; export it without --int8")
        q, scale = _quantize_rows(w, self.per_row)
        wq = self.const(f"{name}_T_Q", q.T, np.int8)
        ws = self.const(f"{name}_S", scale if self.per_row else scale.reshape(()))
        return self.add(nodes, "QMatMul", [x, wq, ws], domain=FUNCTION_DOMAIN)[0]

    def product(self, nodes, x: str, mat) -> str:
        """``x @ M^T`` of a c_source ``_Matrix``: one stored matrix, or ``(x R^T) L^T`` through its factors."""
        if mat.factored:
            return self._stored(nodes, self._stored(nodes, x, f"{mat.name}_R", mat.right), f"{mat.name}_L", mat.left)
        return self._stored(nodes, x, mat.name, mat.dense)

    def nonlinearity(self, nodes, fn: str, x: str) -> str:
        if fn in ONNX_NONLINEARITIES:
            return self.op(nodes, ONNX_NONLINEARITIES[fn], x)
        lo, hi = self.const("ZERO", 0.0), self.const("ONE", 1.0)
        if fn == "nl_quant_tanh":
            return self.op(nodes, "Clip", x, self.const("MINUS_ONE", -1.0), hi)
        # nl_quant_sigm: clamp((x + 1) / 2, 0, 1)
        half = self.op(nodes, "Mul", self.op(nodes, "Add", x, hi), self.const("HALF", 0.5))
        return self.op(nodes, "Clip", half, lo, hi)

    # -- the step ---------------------------------------------------------------------------------------------
    def split(self, nodes, x: str, sizes: list[int]) -> list[str]:
        if len(sizes) == 1:
            return [x]
        sizes_name = self.const("SPLIT_" + "_".join(map(str, sizes)), sizes, np.int64)
        return self.add(nodes, "Split", [x, sizes_name], len(sizes), axis=1)

    def layer(self, nodes, layer, index: int, x: str, h: str, c: str | None) -> tuple[str, str | None]:
        """One frame of one layer: ``(h', c')`` (``c'`` for LSTM only)."""
        k = f"L{index}_"
        vec = {name: self.const(k + name, v) for name, v in layer.vectors.items()}
        sc = {name: self.const(k + name, np.float32(v)) for name, v in layer.scalars.items()}
        fg, fu = layer.nonlinearities.get("gate"), layer.nonlinearities["update"]
        wx = self.product(nodes, x, layer.W)
        uh = self.product(nodes, h, layer.U)
        if layer.kind == "gru":
            H = layer.hidden
            xr, xz, xn = self.split(nodes, wx, [H] * 3)
            hr, hz, hn = self.split(nodes, uh, [H] * 3)
            br = self.const(k + "BR", layer.vectors["BRZ"][:H])
            bz = self.const(k + "BZ", layer.vectors["BRZ"][H:])
            r = self.nonlinearity(nodes, fg, self.op(nodes, "Add", self.op(nodes, "Add", xr, hr), br))
            z = self.nonlinearity(nodes, fg, self.op(nodes, "Add", self.op(nodes, "Add", xz, hz), bz))
            gated = self.op(nodes, "Mul", r, self.op(nodes, "Add", hn, vec["BHN"]))
            n = self.nonlinearity(nodes, fu, self.op(nodes, "Add", self.op(nodes, "Add", xn, vec["BXN"]), gated))
            return self.op(nodes, "Add", n, self.op(nodes, "Mul", z, self.op(nodes, "Sub", h, n))), None
        pre = self.op(nodes, "Add", wx, uh)
        if layer.kind == "fastgrnn":
            z = self.nonlinearity(nodes, fg, self.op(nodes, "Add", pre, vec["BG"]))
            u = self.nonlinearity(nodes, fu, self.op(nodes, "Add", pre, vec["BU"]))
            kept = self.op(nodes, "Mul", z, self.op(nodes, "Sub", h, self.op(nodes, "Mul", u, sc["SZ"])))
            return self.op(nodes, "Add", kept, self.op(nodes, "Mul", u, sc["SZSN"])), None
        if layer.kind == "fastrnn":
            u = self.nonlinearity(nodes, fu, self.op(nodes, "Add", pre, vec["B"]))
            return self.op(nodes, "Add", self.op(nodes, "Mul", u, sc["SA"]), self.op(nodes, "Mul", h, sc["SB"])), None
        # lstm: gates i, f, g, o (PyTorch's order)
        i, f, g, o = self.split(nodes, self.op(nodes, "Add", pre, vec["B"]), [layer.hidden] * 4)
        sig = [self.nonlinearity(nodes, fg, t) for t in (i, f, o)]
        c_new = self.op(nodes, "Add", self.op(nodes, "Mul", sig[1], c),
                        self.op(nodes, "Mul", sig[0], self.nonlinearity(nodes, fu, g)))
        return self.op(nodes, "Mul", sig[2], self.nonlinearity(nodes, fu, c_new)), c_new

    def step(self, nodes, spec, frame: str, state: str) -> tuple[str, list[str]]:
        """One frame of every layer: ``(new state, its parts in layout order)``."""
        layout = state_layout(spec)
        parts = [name for name in layout if name != "size"]
        pieces = dict(zip(parts, self.split(nodes, state, [b - a for a, b in (layout[n] for n in parts)]),
                          strict=True))
        lstm = spec.layers[0].kind == "lstm"
        x, new = frame, {}
        for index, layer in enumerate(spec.layers):
            h, c = self.layer(nodes, layer, index, x, pieces[f"h{index}"], pieces.get(f"c{index}"))
            new[f"h{index}"] = x = h
            if lstm:
                new[f"c{index}"] = c
        if spec.pooling == "mean":
            new["sum"] = self.op(nodes, "Add", pieces["sum"], x)
            new["count"] = self.op(nodes, "Add", pieces["count"], self.const("ONE", 1.0))
        ordered = [new[name] for name in parts]
        out = ordered[0] if len(ordered) == 1 else self.op(nodes, "Concat", *ordered, axis=1)
        return out, ordered

    def readout(self, nodes, spec, state: str) -> str:
        """``logits`` (B, C) of a state: the last layer's h (last) or the running mean (mean), then the classifier."""
        layout = state_layout(spec)
        L = len(spec.layers)
        if spec.pooling == "mean":
            start, stop = layout["sum"][0], layout["count"][1]
            piece = self.op(nodes, "Slice", state, self.const(f"AT_{start}", [start], np.int64),
                            self.const(f"AT_{stop}", [stop], np.int64), self.const("AXIS_1", [1], np.int64))
            total, count = self.split(nodes, piece, [spec.hidden, 1])
            # no frame yet: count 0 and sum 0, so max(count, 1) gives the C export's zero embedding
            pooled = self.op(nodes, "Div", total, self.op(nodes, "Max", count, self.const("ONE", 1.0)))
        else:
            start, stop = layout[f"h{L - 1}"]
            if (start, stop) == layout["size"]:
                pooled = state
            else:
                pooled = self.op(nodes, "Slice", state, self.const(f"AT_{start}", [start], np.int64),
                                 self.const(f"AT_{stop}", [stop], np.int64), self.const("AXIS_1", [1], np.int64))
        logits = self.product(nodes, pooled, spec.classifier)
        if spec.classifier_bias is not None:
            logits = self.op(nodes, "Add", logits, self.const("CLS_B", spec.classifier_bias))
        return logits


def _metadata(model_proto, spec, what: str) -> None:
    from onnx import helper

    layout = state_layout(spec)
    entries = {"strrnn.graph": what, "strrnn.labels": "\n".join(spec.labels),
               "strrnn.input_shape": f"{spec.frames},{spec.features}", "strrnn.state_size": str(layout["size"][1]),
               "strrnn.state_layout": ",".join(f"{k}:{a}:{b}" for k, (a, b) in layout.items() if k != "size"),
               "strrnn.inputs": "normalized features (the PyTorch model's input)"}
    helper.set_model_props(model_proto, entries)


def build_graphs(spec, int8: bool = False, per_row: bool = True):
    """The clip graph (a Scan over the frames) and the step graph of a described model (``c_source._describe``):
    ``(clip ModelProto, step ModelProto)``, sharing the same initializers' values."""
    from onnx import TensorProto, helper

    F, C, S = spec.features, spec.classes, state_layout(spec)["size"][1]
    opset = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(FUNCTION_DOMAIN, 1)] if int8 else [])

    def model(graph, what):
        proto = helper.make_model(graph, opset_imports=opset, producer_name="strrnn",
                                  doc_string=f"strrnn keyword spotter: {what}",
                                  functions=[_qmatmul_function()] if int8 else None)
        proto.ir_version = IR_VERSION
        _metadata(proto, spec, what)
        return proto

    # the step: frame + state -> logits + state_out
    b = _GraphBuilder(int8, per_row)
    nodes: list = []
    state_out, _ = b.step(nodes, spec, "frame", "state")
    logits = b.readout(nodes, spec, state_out)
    nodes.append(helper.make_node("Identity", [state_out], ["state_out"]))
    nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    step_graph = helper.make_graph(
        nodes, "strrnn_step",
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["batch", F]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", S])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", C]),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", S])],
        initializer=list(b.initializers.values()))
    step_model = model(step_graph, "step")

    # the clip: zeros (B, S) -> Scan(step body) over axis 1 of the features -> readout
    b = _GraphBuilder(int8, per_row)
    body: list = []
    body_out, _ = b.step(body, spec, "body_frame", "body_state")
    body.append(helper.make_node("Identity", [body_out], ["body_state_out"]))
    body_graph = helper.make_graph(
        body, "strrnn_scan_body",
        [helper.make_tensor_value_info("body_state", TensorProto.FLOAT, ["batch", S]),
         helper.make_tensor_value_info("body_frame", TensorProto.FLOAT, ["batch", F])],
        [helper.make_tensor_value_info("body_state_out", TensorProto.FLOAT, ["batch", S])])
    nodes = []
    shape = b.op(nodes, "Shape", "features")
    batch = b.op(nodes, "Slice", shape, b.const("AT_0", [0], np.int64), b.const("AT_1", [1], np.int64))
    dims = b.op(nodes, "Concat", batch, b.const(f"STATE_SIZE_{S}", [S], np.int64), axis=0)
    zeros = b.op(nodes, "ConstantOfShape", dims, value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    final = b.op(nodes, "Scan", zeros, "features", body=body_graph, num_scan_inputs=1, scan_input_axes=[1])
    nodes.append(helper.make_node("Identity", [b.readout(nodes, spec, final)], ["logits"]))
    clip_graph = helper.make_graph(
        nodes, "strrnn_clip",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "frames", F])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", C])],
        initializer=list(b.initializers.values()))
    return model(clip_graph, "clip"), step_model


def run_step_graph(session, frames: np.ndarray, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loop an onnxruntime session of a step graph over ``frames`` (B, T, F) (normalized features): the logits after
    every frame, (B, T, C), and the final state (B, S). ``state``: the initial state (default zeros)."""
    size = session.get_inputs()[1].shape[1]
    if state is None:
        state = np.zeros((frames.shape[0], size), np.float32)
    out = []
    for t in range(frames.shape[1]):
        logits, state = session.run(["logits", "state_out"], {"frame": np.ascontiguousarray(frames[:, t]),
                                                                "state": state})
        out.append(logits)
    return np.stack(out, axis=1), state


def _describe_rnn(model: nn.Module, input_shape, class_names=None):
    """The validated description of a recurrent model for the hand-built graphs (one-line ``ValueError`` when it is
    unsupported), or None for any other model (traced)."""
    if not isinstance(model, SequenceClassifier):
        return None
    return _describe(model, input_shape, None, class_names)


@torch.no_grad()
def export_onnx(run_dir, onnx_path, *, int8: bool | str | Path = False, atol: float = 1e-3, samples: int = 64,
                seed: int = 0, scales: str = "row") -> OnnxExport:
    """Write the exported model of ``run_dir`` to ONNX (and, with ``int8``, its int8 version) and check it.

    No data set is read. A recurrent model becomes the hand-built clip graph (a ``Scan``) plus its step graph
    (:func:`step_path`); any other model is traced from the input shape stored in ``exported.pt`` (see the module
    docstring). Every graph is checked on ``samples`` standard-normal inputs of shape ``(batch, *input_shape)``,
    fed in batches of 1 and of the rest (the batch axis is dynamic); the step graph is looped over the frames of
    all of them at once. Each file is written atomically, once its check passed (a clip graph and its step graph
    together).

    Args:
        run_dir: a run folder written by ``strrnn train`` (or its ``exported.pt``).
        onnx_path: the fp32 ONNX file to write.
        int8: also write the int8 model: True for :func:`int8_path` of ``onnx_path``, or a file name.
        atol: the largest difference allowed between PyTorch's and onnxruntime's fp32 logits, relative to the
            logits' size: ``|onnx - torch| <= atol * max(1, |torch|)`` per logit. float32 rounding grows with the
            logits, and the graph sums in another order than PyTorch (factored products) over every recurrent step:
            a trained rank-(4, 9) FastGRNN differs by 1.1e-4 (relative); a wrong graph by O(1). The C export checks
            the same way.
        samples, seed: how many random check inputs, drawn with which seed.
        scales: int8 weight scales of a recurrent model, ``"row"`` (one per output) or ``"tensor"`` (one per
            matrix); a traced model's int8 is ``quantize_dynamic``'s (one per tensor).

    Raises:
        ValueError: a missing or unreadable run, an output path that cannot be used (a folder, a run's own file,
            an unwritable place: :func:`strrnn.run_folder.check_output`, before anything is traced), an ``atol``
            that is not a finite number >= 0, an unsupported recurrent model, an int8 product that could overflow
            int32, or fp32 logits further than ``atol`` from PyTorch's (the files are then not written).
        strrnn.optional.MissingExtraError: onnx, onnxscript or onnxruntime is missing (the ``[onnx]`` extra).
    """
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0 or atol == float("inf"):
        raise ValueError(f"--atol must be a finite number >= 0, got {atol!r}")  # checked before the slow tracing
    onnxruntime = _onnxruntime()
    if scales not in ("row", "tensor"):
        raise ValueError(f"scales must be one of row, tensor, got {scales!r}")
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
    spec = _describe_rnn(model, input_shape, payload.get("class_names"))
    if spec is None:
        return _export_traced(onnxruntime, model, input_shape, onnx_path, q_path, inputs, expected, atol)
    for path in (onnx_path, q_path):  # the step graphs beside them: checked like every output
        if path is not None:
            _output_file(step_path(path), "--onnx" if path is onnx_path else "--int8")
    if q_path is not None:
        for a, b in itertools.combinations([onnx_path, step_path(onnx_path), q_path, step_path(q_path)], 2):
            if a.resolve() == b.resolve():
                raise ValueError(f"--int8 {q_path} would overwrite {a} (the clip and step graphs of fp32 and int8 "
                                 "need four different files); give another name")
    clip, step = build_graphs(spec)
    got, worst, _ = _write_checked(onnxruntime, clip, step, onnx_path, inputs, expected, atol, "ONNX")
    result = OnnxExport(onnx_path, input_shape, worst, model_size(model), step=step_path(onnx_path), graph="scan")
    if q_path is not None:
        clip, step = build_graphs(spec, int8=True, per_row=scales == "row")
        quantized, _, stepped = _write_checked(onnxruntime, clip, step, q_path, inputs, got, None, "int8 ONNX")
        result.int8, result.int8_step = q_path, step_path(q_path)
        result.int8_agreement = float((quantized.argmax(1) == got.argmax(1)).mean())
    return result


def _relative_error(expected: np.ndarray, got: np.ndarray) -> float:
    """The largest ``|got - expected| / max(1, |expected|)`` over (B, C) logits (NaN when ``got`` has one)."""
    return float((np.abs(expected - got) / np.maximum(1.0, np.abs(expected))).max())


def _write_checked(onnxruntime, clip, step, path: Path, inputs, expected: np.ndarray, atol: float | None,
                   what: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Write the clip graph to ``path`` and the step graph beside it, once both pass their check against
    ``expected`` (B, C): within ``atol`` (None: finite and of the right shape only). Returns the clip graph's
    logits, the largest difference to ``expected`` of either graph, and the looped step graph's last logits."""
    import onnx

    with atomic_path(path) as tmp, atomic_path(step_path(path)) as tmp_step:
        onnx.save_model(clip, str(tmp))
        onnx.save_model(step, str(tmp_step))
        session = _session(onnxruntime, tmp)
        got = np.concatenate([session.run(None, {"features": part.numpy()})[0] for part in inputs])
        frames = np.concatenate([part.numpy() for part in inputs])
        stepped = run_step_graph(_session(onnxruntime, tmp_step), frames)[0][:, -1]
        for name, values in (("clip", got), ("step", stepped)):
            if values.shape != expected.shape or not np.isfinite(values).all():
                raise ValueError(f"the {what} {name} graph gives logits of shape {values.shape} (non-finite: "
                                 f"{int((~np.isfinite(values)).sum())}), expected {expected.shape}; not written")
        worst = float(max(np.abs(expected - got).max(), np.abs(expected - stepped).max()))
        relative = max(_relative_error(expected, got), _relative_error(expected, stepped))
        if atol is not None and not relative <= atol:
            raise ValueError(f"{what} output differs from PyTorch by {relative:.3g} (relative) > {atol}; not written")
    return got, worst, stepped


def _export_traced(onnxruntime, model, input_shape, onnx_path, q_path, inputs, expected, atol) -> OnnxExport:
    """A model the hand-built graphs do not cover (a CNN): torch's exporter, and quantize_dynamic for int8."""
    with atomic_path(onnx_path) as tmp:
        _trace_onnx(model, input_shape, tmp)
        session = _session(onnxruntime, tmp)
        got = np.concatenate([session.run(None, {"features": part.numpy()})[0] for part in inputs])
        worst, relative = float(np.abs(expected - got).max()), _relative_error(expected, got)
        if not relative <= atol:  # also refuses NaN
            raise ValueError(f"ONNX output differs from PyTorch by {relative:.3g} (relative) > {atol}; not written")
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
