"""C99 source for an exported keyword spotter: ``write_c(model_or_run, directory)``.

What is exported
----------------
A :class:`strrnn.models.SequenceClassifier` (``keyword_spotter``, ``har``) as :func:`strrnn.export` or
:func:`strrnn.artifacts.load_exported` returns it: unidirectional, one or more layers of FastGRNN, FastRNN, LSTM or
GRU cells (dense weights or the exported low-rank factors ``W_left``/``W_right``), pooling ``last`` or ``mean``,
and a linear classifier (``nn.Linear`` or :class:`strrnn.LowRankLinear`). Anything else (a CNN, a bidirectional
RNN, a callable nonlinearity, a model still carrying STR parametrizations) is refused with a one-line
``ValueError`` naming what is unsupported.

**Features are computed on the host side, not in C**: the C code receives *raw* feature frames, one
``FEATURES``-vector per call (e.g. 32 log-mel energies of a 25 ms window every 10 ms, exactly as
:mod:`strrnn.data.features` computes them), and applies the run's per-feature normalization itself. A device
needs its own front end producing the same features.

Files (``prefix`` = ``kws`` by default)
---------------------------------------
``kws_model.h``
    sizes as ``#define`` (``KWS_FRAMES``, ``KWS_FEATURES`` = the stored input shape (frames, features),
    ``KWS_CLASSES``, ``KWS_HIDDEN``, ``KWS_LAYERS``; also unprefixed ``FRAMES``/``FEATURES``/``CLASSES`` unless
    ``STRRNN_NO_SHORT_NAMES`` is defined), the state type ``kws_state`` and the API::

        void kws_init(kws_state *s);                       /* zero state */
        void kws_step(kws_state *s, const float *frame);   /* one raw frame of KWS_FEATURES floats */
        void kws_logits(const kws_state *s, float *out);   /* KWS_CLASSES logits of the frames so far */
        extern const char *const kws_labels[KWS_CLASSES];

    No ``malloc``: the state is a plain struct the caller owns, every scratch buffer a fixed-size local array.
``kws_model.c``
    the weights as ``static const`` arrays and the step. Needs only ``<stdint.h>`` and ``<string.h>``
    (``memset``, ``memcpy``): no libm, no other library.
``main.c``
    a checker: reads clips from stdin, each ``FRAMES x FEATURES`` little-endian float32 raw feature values
    (frame-major), prints one line of space-separated logits (``%.9g``) per clip; ``--stream`` prints the logits
    after every frame (``FRAMES`` lines per clip); ``--info`` prints ``frames features classes state_bytes``.

Math per frame (layer ``l``; ``x`` = the normalized frame ``(raw - mean) / std`` for layer 0, layer ``l-1``'s new
``h`` above; ``H`` hidden units, ``G`` gates: 1 for FastGRNN/FastRNN, 4 for LSTM, 3 for GRU)::

    p = W x + U h                                  (G*H,)  the two weight products
    FastGRNN  z = f_g(p + b_g),  c = f_u(p + b_u),  h' = z (h - sz c) + (sz + sn) c   sz = sigmoid(zeta),
                                                                                      sn = sigmoid(nu)
    FastRNN   c = f_u(p + b),  h' = sa c + sb h                                  sa = sigmoid(alpha), sb = ...(beta)
    LSTM      i, f, g, o = p + b_ih + b_hh (PyTorch's gate order),  c' = s(f) c + s(i) tanh(g),  h' = s(o) tanh(c')
    GRU       r, z = s(W_rz x + U_rz h + b_ih + b_hh),  n = tanh(W_n x + b_in + r (U_n h + b_hn)),  h' = n + z (h - n)

    pooled = h of the last layer (``last``) or the running sum of it divided by the frames seen (``mean``)
    logits = C pooled + b_c

A weight stored as factors ``left (out, r) @ right (r, in)`` is applied as ``left (right v)`` -- ``r (out + in)``
multiply-adds instead of ``out in`` -- wherever that is cheaper (:func:`strrnn.factored.factored_is_cheaper`,
the rule export itself uses); otherwise the product is materialized on the host and stored dense.

Layout and kernels
------------------
Every matrix (``L0_W`` dense, or ``L0_W_L`` (out, r) and ``L0_W_R`` (r, in); ``CLS`` the classifier) is one
contiguous ``static const`` array of its rows in *panels*: rows ``8p .. 8p+7`` stored column by column
(``M[8p + q][j]`` at ``8p*cols + 8j + q``), then -- if four or more rows remain -- one panel of 4 the same way,
then the last ``rows % 4`` rows row-major. ``mv(y, M, x)`` walks a panel's columns once keeping its 8 (4) sums in
registers: independent additions, one load of ``x[j]`` per 8 multiply-adds and no horizontal reduction, so a
short row (a rank-13 left factor) costs no more per multiply-add than a long one. Measured on x86-64 at -O2, a
(100 x 13) product ran at 7.5 multiply-adds/ns this way against 2.0 as row-major dot products, which must sum
each row across vector lanes; the leftover rows use a dot product with eight partial sums. Layer ``l`` computes
``pre = W x`` then ``pre += U h`` (GRU: ``U h`` apart, its n gate scales ``U_n h + b_hn`` by r), the factored
intermediates ``right v`` once per frame first, and only then overwrites the state (``U h`` reads the old
``h``). Nothing is allocated; the state is written in place.

tanh and sigmoid are a rational minimax fit (``x P(x^2) / Q(x^2)``, clamped where float32 tanh rounds to +-1;
largest error 3.2e-7 against 6e-8 for float32's own) and ``sigmoid(x) = (1 + tanh(x/2)) / 2``: no libm and no
branch, so the pointwise loop over the units vectorizes; glibc's ``tanhf`` alone took longer than a dense
FastGRNN's matrix products.

int8 (``int8=True``)
--------------------
Every matrix (factors, dense weights, the classifier) is stored as int8 ``q = round(w / s)``, ``|q| <= 127``,
with one fp32 scale ``s = max|w| / 127`` per row (``scales="row"``, default) or per matrix (``"tensor"``).
Each product quantizes its input vector on the fly with a dynamic per-vector scale ``t = max|v| / 127``,
multiply-accumulates ``int8 x int8`` in ``int32`` (the panels of fp32) and rescales once per output:
``y_i = (sum_j q_ij v_j) s_i t``.
A factored product quantizes twice (``v``, then ``right v``). Biases, normalization and the pointwise gates stay
fp32. The int32 accumulator of a product with ``n`` inputs can reach ``n * 127 * 127``; a product where that
exceeds ``2^31 - 1`` (n > 133,144) is refused rather than left to wrap.

Sizes (:func:`footprint`)
-------------------------
flash = code + const data of the compiled ``<prefix>_model.c`` (``size`` on the object, sections ``.text*``,
``.rodata*``, ``.data*``; ``.eh_frame`` -- host unwind tables a bare-metal build does not emit -- left out);
RAM = the state struct + the largest scratch (the locals of ``step`` and a layer, or of ``logits``, plus the int8
helpers' 64 bytes), from the sizes; multiply-adds per frame = the weight products of every layer as the C computes
them (the classifier's are counted separately: it runs only when ``logits`` is called).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..cells import FastGRNNCell, FastRNNCell, GRUCell, LSTMCell, read_weight
from ..factored import factored_is_cheaper
from ..fileio import DiskFullError, atomic_path
from ..low_rank import LowRankLinear
from ..models import POOLINGS, SequenceClassifier

__all__ = ["write_c", "compile_c", "run_c", "footprint", "export_c", "CExport", "SUPPORTED_CELLS", "C_NONLINEARITIES",
           "INT32_MAX"]

#: Cell classes the C export knows, by the name ``strrnn.cells.build_cell`` uses.
SUPPORTED_CELLS = {"fastgrnn": FastGRNNCell, "fastrnn": FastRNNCell, "lstm": LSTMCell, "gru": GRUCell}
#: FastGRNN/FastRNN nonlinearities (by name, as in ``strrnn.cells.NONLINEARITIES``) and their C function.
C_NONLINEARITIES = {"sigmoid": "nl_sigmoid", "tanh": "nl_tanh", "relu": "nl_relu", "quantTanh": "nl_quant_tanh",
                    "quantSigm": "nl_quant_sigm"}
INT32_MAX = 2**31 - 1
Q_MAX = 127  # symmetric int8: -128 is never used, so |q_w q_v| <= 127 * 127
SCALES = ("row", "tensor")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STRICT_FLAGS = ("-std=c99", "-O2", "-Wall")

PANEL = 8  # rows per panel of the stored matrices (see the module docstring)

# The C helpers, emitted only where used (an unused static function is a -Wall warning).
def _panel_loop(lanes: int, acc: str, x: str) -> str:
    """The inner loop of a panel of ``lanes`` rows (mv, qmv): walk the columns once, one load of ``x[j]`` per
    ``lanes`` multiply-adds into the named sums ``a0 ...`` of type ``acc``."""
    lines = [f"        for (j = 0; j < cols; ++j, p += {lanes}) {{", f"            {acc} xj = {x}[j];"]
    lines += [f"            a{k} += p[{k}] * xj;" for k in range(lanes)]
    return "\n".join([*lines, "        }"]) + "\n"


_HELPERS = {
    "dot": """\
/* a . b over n floats. Eight partial sums: with one running sum every addition waits for the previous one. */
static float dot(const float *restrict a, const float *restrict b, int n)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f, s6 = 0.0f, s7 = 0.0f;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        s0 += a[j] * b[j];
        s1 += a[j + 1] * b[j + 1];
        s2 += a[j + 2] * b[j + 2];
        s3 += a[j + 3] * b[j + 3];
        s4 += a[j + 4] * b[j + 4];
        s5 += a[j + 5] * b[j + 5];
        s6 += a[j + 6] * b[j + 6];
        s7 += a[j + 7] * b[j + 7];
    }
    for (; j < n; ++j)
        s0 += a[j] * b[j];
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7));
}
""",
    "mv": """\
/* y = M x (accumulate = 0) or y += M x (accumulate = 1). M (rows, cols) is stored in panels: rows 8p..8p+7
   column by column (M[8p + q][j] at 8p cols + 8j + q), then, if 4 or more rows remain, one panel of 4 the same
   way, then the last rows % 4 rows row-major. A panel keeps its outputs in registers while it walks the columns
   once: independent sums, one load of x[j] per 8 (4) multiply-adds, no horizontal reduction, so short rows (a
   rank-13 left factor) cost no more per multiply-add than long ones. The sums are named variables, not an
   array: compilers keep those in (vector) registers more reliably. */
STRRNN_GENERIC static void mv(float *restrict y, const float *restrict m, const float *restrict x, int rows,
                              int cols, int accumulate)
{
    int i = 0, j;
    const float *p = m;
    for (; i + 8 <= rows; i += 8) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
        if (accumulate) {
            a0 = y[i], a1 = y[i + 1], a2 = y[i + 2], a3 = y[i + 3];
            a4 = y[i + 4], a5 = y[i + 5], a6 = y[i + 6], a7 = y[i + 7];
        }
@PANEL_8_FLOAT@
        y[i] = a0, y[i + 1] = a1, y[i + 2] = a2, y[i + 3] = a3;
        y[i + 4] = a4, y[i + 5] = a5, y[i + 6] = a6, y[i + 7] = a7;
    }
    if (i + 4 <= rows) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        if (accumulate)
            a0 = y[i], a1 = y[i + 1], a2 = y[i + 2], a3 = y[i + 3];
@PANEL_4_FLOAT@
        y[i] = a0, y[i + 1] = a1, y[i + 2] = a2, y[i + 3] = a3;
        i += 4;
    }
    for (; i < rows; ++i, p += cols)
        y[i] = (accumulate ? y[i] : 0.0f) + dot(p, x, cols);
}
""",
    "quantize": """\
/* q = round(x / t), t = max|x| / 127 (returned; 0 for an all-zero x): the dynamic per-vector activation scale.
   Both passes work in blocks of 8 independent lanes without branches (max |x| and the rounding's +-0.5 on the
   bits: the integer order of non-negative floats is their order), so a compiler can vectorize them. */
static float quantize(int8_t *restrict q, const float *restrict x, int n)
{
    uint32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, u, top = 0;
    float amax, inv, v, half;
    int j = 0, k;
    for (; j + 8 <= n; j += 8)
        for (k = 0; k < 8; ++k) {
            memcpy(&u, x + j + k, sizeof u);
            u &= 0x7fffffffu;
            lane[k] = u > lane[k] ? u : lane[k];
        }
    for (; j < n; ++j) {
        memcpy(&u, x + j, sizeof u);
        u &= 0x7fffffffu;
        lane[0] = u > lane[0] ? u : lane[0];
    }
    for (k = 0; k < 8; ++k)
        top = lane[k] > top ? lane[k] : top;
    memcpy(&amax, &top, sizeof amax);
    if (!(amax > 0.0f) || amax > 3.4e38f) { /* all zero, or a NaN / inf in x: no usable scale */
        memset(q, 0, (size_t)n);
        return 0.0f;
    }
    inv = 127.0f / amax;
    for (j = 0; j < n; ++j) {
        v = x[j] * inv; /* |v| <= 127 (+ rounding): the cast below stays in [-127, 127] */
        memcpy(&u, &v, sizeof u);
        u = (u & 0x80000000u) | 0x3f000000u; /* 0.5 with v's sign: round half away from zero */
        memcpy(&half, &u, sizeof half);
        q[j] = (int8_t)(v + half);
    }
    return amax / 127.0f;
}
""",
    "qdot": """\
/* int8 . int8 in int32 over 8 independent lanes (the export checked n * 127 * 127 <= INT32_MAX) */
static int32_t qdot(const int8_t *restrict a, const int8_t *restrict b, int n)
{
    int32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0;
    int j = 0, k;
    for (; j + 8 <= n; j += 8)
        for (k = 0; k < 8; ++k)
            lane[k] += a[j + k] * b[j + k];
    for (; j < n; ++j)
        s += a[j] * b[j];
    for (k = 0; k < 8; ++k)
        s += lane[k];
    return s;
}
""",
    "qmv": """\
/* y (+)= M x in integers: M int8 (rows, cols) in the panels of mv with its scales ms, x = xq * xs. Each output
   is one int32 sum of int8 x int8 products, rescaled once (qput). */
STRRNN_GENERIC static void qmv(float *restrict y, const int8_t *restrict m, const float *restrict ms,
                               const int8_t *restrict xq, float xs, int rows, int cols, int accumulate)
{
    int32_t a[8];
    int i = 0, j;
    const int8_t *p = m;
    for (; i + 8 <= rows; i += 8) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
@PANEL_8_INT@
        a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3, a[4] = a4, a[5] = a5, a[6] = a6, a[7] = a7;
        qput(y, a, ms, xs, i, 8, accumulate);
    }
    if (i + 4 <= rows) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
@PANEL_4_INT@
        a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
        qput(y, a, ms, xs, i, 4, accumulate);
        i += 4;
    }
    for (; i < rows; ++i, p += cols) {
        a[0] = qdot(p, xq, cols);
        qput(y, a, ms, xs, i, 1, accumulate);
    }
}
""",
    "qput": """\
/* y[i..i+n) (+)= a * (scale of the row) * xs: the one rescale of each int32 sum */
static void qput(float *restrict y, const int32_t *restrict a, const float *restrict ms, float xs, int i, int n,
                 int accumulate)
{
    float v[8];
    int q;
    for (q = 0; q < n; ++q)
        v[q] = (float)a[q] * (ms[@ROW@] * xs);
    if (accumulate)
        for (q = 0; q < n; ++q)
            y[i + q] += v[q];
    else
        for (q = 0; q < n; ++q)
            y[i + q] = v[q];
}
""",
    "nl_tanh": """\
/* tanh(x) ~ x P(x^2) / Q(x^2), a rational minimax fit (degrees 11 / 6 in x) on |x| <= 7.9053, beyond which
   tanh(x) rounds to +-1 in float32. Largest error 3.2e-7 evaluated in float32 (float32's own tanh: 6e-8);
   relative error 2.5e-7 near 0. No libm call and no branch, so a loop over the units vectorizes: a tenth of
   glibc's tanhf time. The clamp works on the bits: the integer order of non-negative floats is their order
   (and a NaN or inf input saturates to +-1). */
static inline float nl_tanh(float x)
{
    uint32_t u, sign;
    float s, p, q;
    memcpy(&u, &x, sizeof u);
    sign = u & 0x80000000u;
    u &= 0x7fffffffu;
    u = u < 0x40fcf84fu ? u : 0x40fcf84fu; /* min(|x|, 7.90531111f) */
    u |= sign;
    memcpy(&x, &u, sizeof x);
    s = x * x;
    p = ((((2.35861435e-11f * s - 1.47094683e-08f) * s + 9.87399744e-06f) * s + 0.00298489677f) * s
         + 0.129781544f) * s + 0.99999994f;
    q = ((0.000237096523f * s + 0.0240234677f) * s + 0.46311456f) * s + 1.0f;
    return x * p / q;
}
""",
    "nl_sigmoid": """\
/* sigmoid(x) = (1 + tanh(x / 2)) / 2 exactly; through nl_tanh: largest error 1.6e-7 */
static inline float nl_sigmoid(float x) { return 0.5f + 0.5f * nl_tanh(0.5f * x); }
""",
    "nl_relu": "static float nl_relu(float x) { return x > 0.0f ? x : 0.0f; }\n",
    "nl_quant_tanh": "static float nl_quant_tanh(float x) { return x < -1.0f ? -1.0f : x > 1.0f ? 1.0f : x; }\n",
    "nl_quant_sigm": ("static float nl_quant_sigm(float x)\n{\n    float y = (x + 1.0f) / 2.0f;\n"
                      "    return y < 0.0f ? 0.0f : y > 1.0f ? 1.0f : y;\n}\n"),
}
# the fp32 and the int8 product walk their panels alike: that loop is written once (_panel_loop)
_PANELS = {"@PANEL_8_FLOAT@\n": _panel_loop(8, "float", "x"), "@PANEL_4_FLOAT@\n": _panel_loop(4, "float", "x"),
           "@PANEL_8_INT@\n": _panel_loop(8, "int32_t", "xq"), "@PANEL_4_INT@\n": _panel_loop(4, "int32_t", "xq")}
for _name in ("mv", "qmv"):
    for _marker, _loop in _PANELS.items():
        _HELPERS[_name] = _HELPERS[_name].replace(_marker, _loop)
_HELPER_DEPS = {"mv": ("dot",), "qmv": ("qdot", "qput"), "nl_sigmoid": ("nl_tanh",)}


# ---------------------------------------------------------------------------------------------------------------
# What is exported: a validated, framework-free description of the model
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Matrix:
    """One weight product ``y = M v`` as the C computes it: ``dense`` (out, in), or ``left`` (out, r) and
    ``right`` (r, in) applied as ``left (right v)``; ``out``/``cols`` are the matrix's shape either way."""

    name: str
    out: int
    cols: int
    dense: np.ndarray | None = None
    left: np.ndarray | None = None
    right: np.ndarray | None = None

    @property
    def factored(self) -> bool:
        return self.left is not None

    @property
    def rank(self) -> int | None:
        return self.left.shape[1] if self.factored else None

    @property
    def macs(self) -> int:
        return self.rank * (self.out + self.cols) if self.factored else self.out * self.cols

    def products(self) -> list[tuple[str, np.ndarray]]:
        """``(C name, (rows, cols) array)`` of every stored matrix."""
        if self.factored:
            return [(f"{self.name}_R", self.right), (f"{self.name}_L", self.left)]
        return [(self.name, self.dense)]


def _as_matrix(name: str, weight=None, left=None, right=None) -> _Matrix:
    """A dense weight, or factors kept as factors only where ``r (out + in) < out in``."""
    if weight is not None:
        w = _array(weight, name)
        return _Matrix(name, w.shape[0], w.shape[1], dense=w)
    lf, rt = _array(left, name), _array(right, name)
    out, rank, cols = lf.shape[0], lf.shape[1], rt.shape[1]
    if rank > 0 and factored_is_cheaper(out, cols, rank):
        return _Matrix(name, out, cols, left=lf, right=rt)
    # cheaper as one matrix: materialize on the host in float64, then round once
    dense = (lf.astype(np.float64) @ rt.astype(np.float64)).astype(np.float32)
    return _Matrix(name, out, cols, dense=dense)


def _array(t, what: str) -> np.ndarray:
    a = t.detach().to("cpu", torch.float32).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds non-finite values (NaN or inf); the C export needs finite weights")
    return np.ascontiguousarray(a, dtype=np.float32)


def _scalar(t) -> float:
    return float(np.float32(t.detach().to("cpu", torch.float32).reshape(-1)[0]))


@dataclass
class _Layer:
    kind: str
    input_size: int
    hidden: int
    W: _Matrix
    U: _Matrix
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # biases, C name suffix -> (n,)
    scalars: dict[str, float] = field(default_factory=dict)  # gate constants folded on the host
    nonlinearities: dict[str, str] = field(default_factory=dict)  # "gate"/"update" -> C function

    @property
    def gates(self) -> int:
        return {"fastgrnn": 1, "fastrnn": 1, "lstm": 4, "gru": 3}[self.kind]


@dataclass
class _Spec:
    layers: list[_Layer]
    pooling: str
    classifier: _Matrix
    classifier_bias: np.ndarray | None
    frames: int
    features: int
    mean: np.ndarray | None
    std: np.ndarray | None
    labels: list[str]

    @property
    def hidden(self) -> int:
        return self.layers[0].hidden

    @property
    def classes(self) -> int:
        return self.classifier.out


def _unsupported(what: str) -> ValueError:
    return ValueError(f"the C export does not support {what}; it supports strrnn.models.SequenceClassifier "
                      f"(keyword_spotter, har): unidirectional {', '.join(SUPPORTED_CELLS)} cells, pooling "
                      f"{' or '.join(POOLINGS)}, an nn.Linear or LowRankLinear classifier")


def _cell_kind(cell: nn.Module) -> str:
    cls = parametrize.type_before_parametrizations(cell)
    for name, supported in SUPPORTED_CELLS.items():
        if issubclass(cls, supported):
            return name
    raise _unsupported(f"the cell {cls.__name__}")


def _nonlinearity(cell: nn.Module, attr: str) -> str:
    spec = getattr(cell, attr)
    if not isinstance(spec, str) or spec not in C_NONLINEARITIES:
        shown = spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
        raise ValueError(f"the C export does not support the {attr} {shown!r} of {type(cell).__name__}; it "
                         f"supports {', '.join(C_NONLINEARITIES)}")
    return C_NONLINEARITIES[spec]


def _weight(cell: nn.Module, name: str, layer: int) -> _Matrix:
    op = read_weight(cell, name)
    cname = f"L{layer}_{name}"
    if op.factored:
        return _as_matrix(cname, left=op.left, right=op.right)
    return _as_matrix(cname, weight=op.weight)


def _layer(cell: nn.Module, index: int) -> _Layer:
    kind = _cell_kind(cell)
    layer = _Layer(kind, cell.input_size, cell.hidden_size, _weight(cell, "W", index), _weight(cell, "U", index))
    vec = {}
    with torch.no_grad():
        if kind == "fastgrnn":
            vec = {"BG": cell.bias_gate, "BU": cell.bias_update}
            sz, sn = torch.sigmoid(cell.zeta.float()), torch.sigmoid(cell.nu.float())
            # the same float32 constants PyTorch's step uses: sz and sz + sn
            layer.scalars = {"SZ": _scalar(sz), "SZSN": _scalar(sz + sn)}
            layer.nonlinearities = {"gate": _nonlinearity(cell, "gate_nonlinearity"),
                                    "update": _nonlinearity(cell, "update_nonlinearity")}
        elif kind == "fastrnn":
            vec = {"B": cell.bias_update}
            layer.scalars = {"SA": _scalar(torch.sigmoid(cell.alpha.float())),
                             "SB": _scalar(torch.sigmoid(cell.beta.float()))}
            layer.nonlinearities = {"update": _nonlinearity(cell, "update_nonlinearity")}
        elif kind == "lstm":
            vec = {"B": cell.bias_ih.float() + cell.bias_hh.float()}
            layer.nonlinearities = {"gate": "nl_sigmoid", "update": "nl_tanh"}
        else:  # gru: r and z see both biases, n keeps them apart (b_hn is scaled by r)
            h = cell.hidden_size
            vec = {"BRZ": cell.bias_ih[: 2 * h].float() + cell.bias_hh[: 2 * h].float(),
                   "BXN": cell.bias_ih[2 * h:], "BHN": cell.bias_hh[2 * h:]}
            layer.nonlinearities = {"gate": "nl_sigmoid", "update": "nl_tanh"}
    layer.vectors = {k: _array(v, f"layer {index} {k}") for k, v in vec.items()}
    for value in layer.scalars.values():
        if not np.isfinite(value):
            raise ValueError(f"layer {index} has a non-finite gate constant; the C export needs finite weights")
    return layer


def _classifier(model: nn.Module) -> tuple[_Matrix, np.ndarray | None]:
    head = model.classifier
    if isinstance(head, LowRankLinear):
        mat = _as_matrix("CLS", left=head.left, right=head.right)
    elif isinstance(head, nn.Linear):
        mat = _as_matrix("CLS", weight=head.weight)
    else:
        raise _unsupported(f"the classifier {type(head).__name__}")
    bias = None if head.bias is None else _array(head.bias, "the classifier bias")
    return mat, bias


def _normalization(normalization, features: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if normalization is None:
        return None, None
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    if mean.size != features or std.size != features or mean.shape != std.shape or \
            mean.squeeze().shape not in ((features,), ()):
        raise ValueError(f"the C export needs one normalization mean/std per feature ({features},); got mean "
                         f"{mean.shape}, std {std.shape}")
    mean, std = mean.reshape(features), std.reshape(features)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std == 0).any():
        raise ValueError("the normalization holds non-finite values or a zero std")
    return np.ascontiguousarray(mean), np.ascontiguousarray(std)


def _describe(model: nn.Module, input_shape, normalization, class_names) -> _Spec:
    """Validate ``model`` for the C export and read everything the C code needs."""
    if not isinstance(model, SequenceClassifier):
        raise _unsupported(f"the model {type(model).__name__}")
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            raise ValueError(f"{name or 'the model'} still carries parametrizations (STR or other): pass the "
                             "exported model, strrnn.export(model)")
    rnn = model.rnn
    if rnn.bidirectional:
        raise _unsupported("a bidirectional RNN (streaming needs the future for the backward direction)")
    if model.pooling not in POOLINGS:
        raise _unsupported(f"pooling {model.pooling!r}")
    layers = [_layer(cell, i) for i, cell in enumerate(rnn.cells)]
    if len({(layer.kind, layer.hidden) for layer in layers}) != 1:
        raise _unsupported("layers of different cells or hidden sizes")
    classifier, bias = _classifier(model)
    if classifier.cols != layers[-1].hidden:
        raise ValueError(f"the classifier reads {classifier.cols} features, the RNN gives {layers[-1].hidden}")
    if input_shape is None:
        raise ValueError("the C export needs the input shape (frames, features): pass payload= (from "
                         "strrnn.artifacts.load_exported) or input_shape=")
    shape = tuple(int(n) for n in input_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"input_shape must be (frames, features), got {tuple(input_shape)}")
    frames, features = shape
    if features != layers[0].input_size:
        raise ValueError(f"input_shape has {features} features per frame, the model reads {layers[0].input_size}")
    mean, std = _normalization(normalization, features)
    labels = [str(c) for c in class_names] if class_names is not None else [str(k) for k in range(classifier.out)]
    if len(labels) != classifier.out:
        raise ValueError(f"{len(labels)} class names for {classifier.out} classes")
    return _Spec(layers, model.pooling, classifier, bias, frames, features, mean, std, labels)


# ---------------------------------------------------------------------------------------------------------------
# Code generation
# ---------------------------------------------------------------------------------------------------------------
def _c_float(x: float) -> str:
    s = f"{x:.9g}"  # 9 significant digits round-trip every float32
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


def _c_string(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in "\\\"?":  # '?' too: trigraphs (??/ ...) are live under -std=c99
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _quantize_rows(w: np.ndarray, per_row: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 of ``w`` (rows, cols): ``(q int8, scales float32 (rows,) or (1,))``, ``w ~ q * s``."""
    amax = np.abs(w).max(axis=1) if per_row else np.array([np.abs(w).max()], dtype=np.float32)
    scale = (amax / Q_MAX).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.rint(w / (safe[:, None] if per_row else safe[0]))
    return np.clip(q, -Q_MAX, Q_MAX).astype(np.int8), scale


class _Source:
    """Collects the ``const`` arrays, the helpers used and the code of ``<prefix>_model.c``."""

    def __init__(self, int8: bool, per_row: bool) -> None:
        self.int8, self.per_row = int8, per_row
        self.arrays: list[str] = []
        self.const_bytes = 0
        self.helpers: set[str] = set()

    def use(self, *names: str) -> None:
        for name in names:
            self.helpers.add(name)
            self.use(*_HELPER_DEPS.get(name, ()))

    def array(self, name: str, values: np.ndarray, comment: str = "") -> None:
        flat = np.asarray(values).reshape(-1)
        if flat.dtype == np.int8:
            ctype, per_line, items = "int8_t", 24, [str(int(v)) for v in flat.tolist()]
            self.const_bytes += flat.size
        else:
            ctype, per_line, items = "float", 8, [_c_float(v) for v in flat.astype(np.float32).tolist()]
            self.const_bytes += 4 * flat.size
        lines = [", ".join(items[i: i + per_line]) for i in range(0, len(items), per_line)]
        head = f"/* {comment} */\n" if comment else ""
        self.arrays.append(f"{head}static const {ctype} {name}[{flat.size}] = {{\n    " + ",\n    ".join(lines)
                           + "\n};\n")

    def matrix(self, mat: _Matrix) -> None:
        """The stored matrices of a product in the panel layout of ``mv``: fp32, or int8 with their scales
        (``<name>_Q``, ``<name>_S``; the scales in row order)."""
        for name, values in mat.products():
            rows, cols = values.shape
            part = {"_R": "right factor", "_L": "left factor"}.get(name[-2:], "dense")
            what = f"{mat.name} {part} ({rows}, {cols}), in panels of {PANEL} rows"
            if self.int8:
                q, s = _quantize_rows(values, self.per_row)
                self.array(f"{name}_Q", _panels(q), what + ", int8")
                self.array(f"{name}_S", s, f"{name}: {'per-row' if self.per_row else 'per-matrix'} int8 scales")
            else:
                self.array(name, _panels(values), what)


def _panels(m: np.ndarray) -> np.ndarray:
    """(rows, cols) -> the flat layout of the C ``mv``: panels of 8 rows column by column, then (if 4 or more rows
    remain) one panel of 4 rows column by column, then the last ``rows % 4`` rows row-major."""
    rows, cols = m.shape
    parts, i = [], 0
    for width in (PANEL, PANEL // 2):
        n = (rows - i) // width if width == PANEL else int(rows - i >= width)
        block = m[i: i + n * width]
        parts.append(block.reshape(n, width, cols).transpose(0, 2, 1).reshape(-1))
        i += n * width
    parts.append(m[i:].reshape(-1))
    return np.concatenate(parts)


def _product(src: _Source, mat: _Matrix, vec: str, out: str, accumulate: bool, tag: str) -> tuple[list, list, int]:
    """C for ``out (+)= mat vec``: ``(declarations, statements, scratch bytes)``. Factored: the right factor into a
    local ``<tag>r`` first. int8: every vector quantized on the fly (``<tag>q``, ``<tag>rq`` and their scales)."""
    decls, stmts, scratch = [], [], 0
    acc = int(accumulate)
    if not src.int8:
        src.use("mv")
        if mat.factored:
            r = mat.rank
            decls.append(f"float {tag}r[{r}];")
            scratch += 4 * r
            stmts += [f"mv({tag}r, {mat.name}_R, {vec}, {r}, {mat.cols}, 0);",
                      f"mv({out}, {mat.name}_L, {tag}r, {mat.out}, {r}, {acc});"]
        else:
            stmts.append(f"mv({out}, {mat.name}, {vec}, {mat.out}, {mat.cols}, {acc});")
        return decls, stmts, scratch
    src.use("quantize", "qmv")
    decls += [f"int8_t {tag}q[{mat.cols}];", f"float {tag}s;"]
    stmts.append(f"{tag}s = quantize({tag}q, {vec}, {mat.cols});")
    scratch += mat.cols + 4
    if mat.factored:
        r = mat.rank
        decls += [f"float {tag}r[{r}];", f"int8_t {tag}rq[{r}];", f"float {tag}rs;"]
        scratch += 4 * r + r + 4
        stmts += [f"qmv({tag}r, {mat.name}_R_Q, {mat.name}_R_S, {tag}q, {tag}s, {r}, {mat.cols}, 0);",
                  f"{tag}rs = quantize({tag}rq, {tag}r, {r});",
                  f"qmv({out}, {mat.name}_L_Q, {mat.name}_L_S, {tag}rq, {tag}rs, {mat.out}, {r}, {acc});"]
    else:
        stmts.append(f"qmv({out}, {mat.name}_Q, {mat.name}_S, {tag}q, {tag}s, {mat.out}, {mat.cols}, {acc});")
    return decls, stmts, scratch


def _layer_code(src: _Source, layer: _Layer, index: int) -> tuple[str, int]:
    """The C function ``layer<index>`` (one frame of one layer, state in place) and its scratch bytes.

    ``pre`` collects ``W x`` then, accumulated, ``U h`` (GRU: ``U h`` apart in ``gh``, since its n gate scales
    ``U_n h + b_hn`` by r); the pointwise loop then overwrites the state.
    """
    H, GH = layer.hidden, layer.gates * layer.hidden
    src.matrix(layer.W)
    src.matrix(layer.U)
    for suffix, values in layer.vectors.items():
        src.array(f"L{index}_{suffix}", values, f"layer {index} bias {suffix}")
    gru = layer.kind == "gru"
    w_decls, w_stmts, w_scratch = _product(src, layer.W, "x", "pre", False, "x")
    u_decls, u_stmts, u_scratch = _product(src, layer.U, "h", "gh" if gru else "pre", not gru, "h")
    for fn in layer.nonlinearities.values():
        src.use(fn)
    fg, fu = layer.nonlinearities.get("gate"), layer.nonlinearities["update"]
    b = f"L{index}_"
    k = {name: _c_float(v) for name, v in layer.scalars.items()}
    params = "float *restrict h, float *restrict c, const float *restrict x" if layer.kind == "lstm" else \
        "float *restrict h, const float *restrict x"
    body = [f"float pre[{GH}];", *([f"float gh[{GH}];"] if gru else []), *w_decls, *u_decls, "int i;",
            *w_stmts, *u_stmts, f"for (i = 0; i < {H}; ++i) {{"]
    scratch = 4 * GH * (2 if gru else 1) + w_scratch + u_scratch
    if layer.kind == "fastgrnn":
        body += [f"    float z = {fg}(pre[i] + {b}BG[i]);",
                 f"    float u = {fu}(pre[i] + {b}BU[i]);",
                 f"    h[i] = z * (h[i] - {k['SZ']} * u) + {k['SZSN']} * u;"]
    elif layer.kind == "fastrnn":
        body += [f"    h[i] = {k['SA']} * {fu}(pre[i] + {b}B[i]) + {k['SB']} * h[i];"]
    elif layer.kind == "lstm":  # gates i, f, g, o
        body += [f"    float ig = nl_sigmoid(pre[i] + {b}B[i]);",
                 f"    float fg = nl_sigmoid(pre[{H} + i] + {b}B[{H} + i]);",
                 f"    float g = nl_tanh(pre[{2 * H} + i] + {b}B[{2 * H} + i]);",
                 f"    float og = nl_sigmoid(pre[{3 * H} + i] + {b}B[{3 * H} + i]);",
                 "    c[i] = fg * c[i] + ig * g;",
                 "    h[i] = og * nl_tanh(c[i]);"]
    else:  # gru: gates r, z, n
        body += [f"    float r = nl_sigmoid(pre[i] + gh[i] + {b}BRZ[i]);",
                 f"    float z = nl_sigmoid(pre[{H} + i] + gh[{H} + i] + {b}BRZ[{H} + i]);",
                 f"    float n = nl_tanh(pre[{2 * H} + i] + {b}BXN[i] + r * (gh[{2 * H} + i] + {b}BHN[i]));",
                 "    h[i] = n + z * (h[i] - n);"]
    body.append("}")
    shape = "; ".join(_shape_note(m) for m in (layer.W, layer.U))
    text = (f"/* layer {index}: {layer.kind} {layer.input_size} -> {H}; {shape} */\n"
            f"static void layer{index}({params})\n{{\n" + "".join(f"    {line}\n" for line in body) + "}\n")
    return text, scratch


def _shape_note(m: _Matrix) -> str:
    name = m.name.split("_")[-1]
    if m.factored:
        return f"{name} rank {m.rank}: ({m.out}x{m.rank})({m.rank}x{m.cols}), {m.macs} MACs"
    return f"{name} dense {m.out}x{m.cols}, {m.macs} MACs"


def _generate(spec: _Spec, prefix: str, int8: bool, per_row: bool) -> dict:
    """The three files' text and the sizes: ``{"header", "source", "main", "const_bytes", "state_bytes",
    "scratch_bytes", "macs_per_frame", "logits_macs"}``."""
    P, p = prefix.upper(), prefix
    src = _Source(int8, per_row)
    H, L, F, C = spec.hidden, len(spec.layers), spec.features, spec.classes
    lstm = spec.layers[0].kind == "lstm"
    mean = spec.pooling == "mean"

    if spec.mean is not None:
        src.array("NORM_MEAN", spec.mean, "input normalization: x = (raw - mean) / std, per feature")
        src.array("NORM_STD", spec.std)
    layer_funcs, layer_scratch = [], []
    for i, layer in enumerate(spec.layers):
        text, scratch = _layer_code(src, layer, i)
        layer_funcs.append(text)
        layer_scratch.append(scratch)

    # step
    step = []
    step_scratch = 0
    if spec.mean is not None:
        step += [f"float x[{F}];", "int f;", f"for (f = 0; f < {F}; ++f)",
                 "    x[f] = (frame[f] - NORM_MEAN[f]) / NORM_STD[f];"]
        step_scratch += 4 * F
        first = "x"
    else:
        first = "frame"
    if mean:
        step.insert(0, "int i;")
    for i in range(L):
        inp = first if i == 0 else f"s->h[{i - 1}]"
        step.append(f"layer{i}(s->h[{i}], {'s->c[' + str(i) + '], ' if lstm else ''}{inp});")
    if mean:
        step += [f"for (i = 0; i < {H}; ++i)", f"    s->sum[i] += s->h[{L - 1}][i];"]
    step.append("s->frames++;")

    # logits
    cls = spec.classifier
    src.matrix(cls)
    if spec.classifier_bias is not None:
        src.array("CLS_B", spec.classifier_bias, "classifier bias")
    decls, pooling, logits_scratch = ["int i;"], [], 0
    if mean:
        decls += [f"float pooled[{H}];", "float n = (float)s->frames;"]
        pooling = [f"for (i = 0; i < {H}; ++i)",
                   "    pooled[i] = s->frames ? s->sum[i] / n : 0.0f; /* no frame yet: a zero embedding */"]
        logits_scratch += 4 * H
        vec = "pooled"
    else:
        vec = f"s->h[{L - 1}]"
    p_decls, p_stmts, p_scratch = _product(src, cls, vec, "out", False, "p")
    logits = [*decls, *p_decls, *pooling, *p_stmts]
    if spec.classifier_bias is not None:
        logits += [f"for (i = 0; i < {C}; ++i)", "    out[i] += CLS_B[i];"]
    elif not mean:
        logits = [line for line in logits if line != "int i;"]  # nothing loops: an unused i would warn
    logits_scratch += p_scratch
    state_fields = [f"float h[{P}_LAYERS][{P}_HIDDEN]; /* hidden state of every layer */"]
    state_bytes = 4 * L * H
    if lstm:
        state_fields.append(f"float c[{P}_LAYERS][{P}_HIDDEN]; /* LSTM cell state */")
        state_bytes += 4 * L * H
    if mean:
        state_fields.append(f"float sum[{P}_HIDDEN]; /* running sum of the last layer's h (mean pooling) */")
        state_bytes += 4 * H
    state_fields.append("uint32_t frames; /* frames stepped since init */")
    state_bytes += 4

    macs = sum(layer.W.macs + layer.U.macs for layer in spec.layers)
    ranks = ", ".join(_shape_note(m) for layer in spec.layers for m in (layer.W, layer.U))
    kind = spec.layers[0].kind
    arith = f"int8 weights ({'per-row' if per_row else 'per-matrix'} scales), int32 accumulation" if int8 else "fp32"
    summary = (f"{kind}, {L} layer(s), hidden {H}, {F} features x {spec.frames} frames, {C} classes, pooling "
               f"{spec.pooling}; {arith}\n   {ranks}\n   {macs} multiply-adds per frame (+ {cls.macs} per "
               f"{p}_logits call)")

    header = f"""\
/* {p}_model.h -- generated by strrnn.deploy.write_c; C99, no dependencies, no malloc.
   {summary}

   Usage: {p}_state s; {p}_init(&s); for each frame: {p}_step(&s, frame); then {p}_logits(&s, out).
   A frame is {P}_FEATURES raw feature values (before normalization: the model normalizes them itself);
   features are computed by the host front end (as strrnn.data.features does). The model was trained on clips
   of {P}_FRAMES frames: call {p}_init before each clip / window. */
#ifndef {P}_MODEL_H
#define {P}_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_FRAMES {spec.frames}
#define {P}_FEATURES {F}
#define {P}_CLASSES {C}
#define {P}_HIDDEN {H}
#define {P}_LAYERS {L}

#ifndef STRRNN_NO_SHORT_NAMES /* define it to include the headers of several models in one file */
#define FRAMES {P}_FRAMES
#define FEATURES {P}_FEATURES
#define CLASSES {P}_CLASSES
#endif

typedef struct {{
""" + "".join(f"    {line}\n" for line in state_fields) + f"""\
}} {p}_state;

/* class names, in the order of the logits */
extern const char *const {p}_labels[{P}_CLASSES];

/* reset the state (no frame seen) */
void {p}_init({p}_state *s);
/* advance by one frame of {P}_FEATURES raw features */
void {p}_step({p}_state *s, const float *frame);
/* the {P}_CLASSES logits of the frames stepped since {p}_init */
void {p}_logits(const {p}_state *s, float *out);

#ifdef __cplusplus
}}
#endif

#endif /* {P}_MODEL_H */
"""
    # the arrays are complete now: emit helpers (in dependency order), arrays, functions
    order = ["dot", "mv", "quantize", "qdot", "qput", "qmv", "nl_tanh", "nl_sigmoid", "nl_relu", "nl_quant_tanh",
             "nl_quant_sigm"]
    helpers = "\n".join(_HELPERS[name] for name in order if name in src.helpers)
    helpers = helpers.replace("@ROW@", "i + q" if per_row else "0")  # the scales' layout is fixed per export
    labels = ",\n".join(f"    {_c_string(label)}" for label in spec.labels)
    source = f"""\
/* {p}_model.c -- generated by strrnn.deploy.write_c: {kind}, {L} layer(s), hidden {H}, {arith}.
   Math and layout: the docstring of strrnn/deploy/c_source.py. */
#include "{p}_model.h"

#include <string.h>

/* mv and qmv stay generic: where every call passes a column count that is a multiple of 4, GCC's interprocedural
   analysis learns it and vectorizes their column loop with shuffles that halve its speed */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define STRRNN_GENERIC __attribute__((noipa))
#else
#define STRRNN_GENERIC
#endif

const char *const {p}_labels[{P}_CLASSES] = {{
{labels}
}};

{helpers}
""" + "\n".join(src.arrays) + "\n" + "\n".join(layer_funcs) + f"""
void {p}_init({p}_state *s)
{{
    memset(s, 0, sizeof *s);
}}

void {p}_step({p}_state *s, const float *frame)
{{
""" + "".join(f"    {line}\n" for line in step) + f"""}}

void {p}_logits(const {p}_state *s, float *out)
{{
""" + "".join(f"    {line}\n" for line in logits) + "}\n"
    # + the helpers' own locals below the deepest call: qmv's int32 sums and qput's rescaled values (int8 only)
    scratch = max(step_scratch + max(layer_scratch), logits_scratch) + (64 if int8 else 0)
    return {"header": header, "source": source, "main": _main_c(prefix), "const_bytes": src.const_bytes,
            "state_bytes": state_bytes, "scratch_bytes": scratch, "macs_per_frame": macs,
            "logits_macs": cls.macs}


def _main_c(prefix: str) -> str:
    P, p = prefix.upper(), prefix
    return f"""\
/* main.c -- checker generated by strrnn.deploy.write_c.
   stdin: clips of {P}_FRAMES x {P}_FEATURES little-endian float32 raw features (frame-major), back to back.
   stdout: one line of {P}_CLASSES space-separated logits (%.9g) per clip;
           with --stream, the logits after every frame ({P}_FRAMES lines per clip);
           with --info, "frames features classes state_bytes" and nothing is read. */
#include <stdio.h>
#include <string.h>

#include "{p}_model.h"

static unsigned char clip[(size_t){P}_FRAMES * {P}_FEATURES * 4];

/* little-endian bytes -> float on any host (IEEE 754 binary32 floats assumed) */
static float le_float(const unsigned char *b)
{{
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}}

static void print_logits(const {p}_state *s)
{{
    float out[{P}_CLASSES];
    int k;
    {p}_logits(s, out);
    for (k = 0; k < {P}_CLASSES; ++k)
        printf(k ? " %.9g" : "%.9g", (double)out[k]);
    putchar('\\n');
}}

int main(int argc, char **argv)
{{
    int stream = argc > 1 && strcmp(argv[1], "--stream") == 0;
    unsigned long clips = 0;
    if (argc > 1 && strcmp(argv[1], "--info") == 0) {{
        printf("%d %d %d %lu\\n", {P}_FRAMES, {P}_FEATURES, {P}_CLASSES, (unsigned long)sizeof({p}_state));
        return 0;
    }}
    if (argc > 1 && !stream) {{
        fprintf(stderr, "usage: %s [--stream | --info] < clips.f32\\n", argv[0]);
        return 2;
    }}
    for (;;) {{
        {p}_state s;
        float frame[{P}_FEATURES];
        size_t got = fread(clip, 1, sizeof clip, stdin);
        int t, f;
        if (got == 0 && feof(stdin))
            break;
        if (got != sizeof clip) {{
            fprintf(stderr, "%s: clip %lu is truncated: %lu of %lu bytes\\n", argv[0], clips + 1,
                    (unsigned long)got, (unsigned long)sizeof clip);
            return 1;
        }}
        {p}_init(&s);
        for (t = 0; t < {P}_FRAMES; ++t) {{
            for (f = 0; f < {P}_FEATURES; ++f)
                frame[f] = le_float(clip + ((size_t)t * {P}_FEATURES + f) * 4);
            {p}_step(&s, frame);
            if (stream)
                print_logits(&s);
        }}
        if (!stream)
            print_logits(&s);
        clips++;
    }}
    return fflush(stdout) == 0 ? 0 : 1;
}}
"""


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------
def _resolve(model_or_run, payload, input_shape, normalization, class_names):
    """``(model, input_shape, normalization, class_names)`` from a model (+ payload / keywords) or a run folder."""
    if isinstance(model_or_run, (str, os.PathLike)):
        # a run folder needs the run machinery (Lightning, data modules); a model passed in does not
        from ..artifacts import load_exported

        model, payload = load_exported(model_or_run)
    elif isinstance(model_or_run, nn.Module):
        model = model_or_run
    else:
        raise ValueError(f"write_c takes an exported model (nn.Module) or a run folder, got "
                         f"{type(model_or_run).__name__}")
    payload = payload or {}
    input_shape = input_shape if input_shape is not None else payload.get("input_shape")
    normalization = normalization if normalization is not None else payload.get("normalization")
    class_names = class_names if class_names is not None else payload.get("class_names")
    return model, input_shape, normalization, class_names


def _check_options(prefix: str, int8: bool, scales: str) -> None:
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(f"prefix must be a C identifier ([A-Za-z_][A-Za-z0-9_]*), got {prefix!r}")
    if scales not in SCALES:
        raise ValueError(f"scales must be one of {', '.join(SCALES)}, got {scales!r}")
    if not isinstance(int8, bool):
        raise ValueError(f"int8 must be True or False, got {int8!r}")


def _check_int32(spec: _Spec) -> None:
    """Refuse an int8 product whose int32 accumulator could overflow (``cols * 127 * 127 > 2^31 - 1``)."""
    mats = [m for layer in spec.layers for m in (layer.W, layer.U)] + [spec.classifier]
    for mat in mats:
        for name, values in mat.products():
            worst = values.shape[1] * Q_MAX * Q_MAX
            if worst > INT32_MAX:
                raise ValueError(f"int8 export refused: the product {name} {values.shape[0]}x{values.shape[1]} "
                                 f"can accumulate {values.shape[1]}*127*127 = {worst:,} > 2^31-1 in int32; "
                                 "export it with int8=False")


def _footprint_fields(gen: dict) -> dict:
    return {k: gen[k] for k in ("const_bytes", "state_bytes", "scratch_bytes", "macs_per_frame", "logits_macs")} | {
        "ram_bytes": gen["state_bytes"] + gen["scratch_bytes"]}


def _prepare(model_or_run, payload, int8, scales, prefix, input_shape, normalization, class_names):
    _check_options(prefix, int8, scales)
    model, shape, norm, names = _resolve(model_or_run, payload, input_shape, normalization, class_names)
    spec = _describe(model, shape, norm, names)
    if int8:
        _check_int32(spec)
    return spec, _generate(spec, prefix, int8, scales == "row")


def write_c(model_or_run, directory, *, payload: dict | None = None, int8: bool = False, scales: str = "row",
            prefix: str = "kws", input_shape=None, normalization: dict | None = None, class_names=None) -> dict:
    """Write ``<prefix>_model.h``, ``<prefix>_model.c`` and ``main.c`` for an exported keyword spotter.

    Args:
        model_or_run: an exported model (plain modules, as :func:`strrnn.export` or
            :func:`strrnn.artifacts.load_exported` return it: a :class:`strrnn.models.SequenceClassifier`), or a run
            folder / ``exported.pt`` (its stored input shape, normalization and class names are used).
        directory: output folder (created if missing); existing files of the same names are replaced.
        payload: the ``exported.pt`` payload of a model passed in (``input_shape`` (frames, features),
            ``normalization`` ``{"mean": (F,), "std": (F,)}`` or None, ``class_names``); the keyword arguments
            below override its entries.
        int8: int8 weights and integer multiply-accumulate (see the module docstring) instead of fp32.
        scales: int8 weight scales, ``"row"`` (one per matrix row) or ``"tensor"`` (one per matrix).
        prefix: C identifier prefixed to every public name and file (``kws_step``, ``KWS_FRAMES``, ...).
        input_shape: ``(frames, features)`` of one clip; ``features`` must be the model's input size.
        normalization: per-feature ``mean`` and ``std`` (each F values) applied to raw frames, or None.
        class_names: C labels, in logit order (default ``"0"``, ``"1"``, ...).

    Returns:
        ``{"header", "source", "main"}`` (paths) and the sizes: ``const_bytes`` (the arrays), ``state_bytes``
        (``sizeof(<prefix>_state)``), ``scratch_bytes`` (locals of the deepest call), ``ram_bytes`` (their sum),
        ``macs_per_frame`` (weight products of one ``step``), ``logits_macs`` (one ``logits`` call), and
        ``prefix``, ``int8``, ``frames``, ``features``, ``classes``.

    Raises:
        ValueError: an unsupported model (one line naming what and what is supported), an int8 product that could
            overflow int32, a bad option, or an output folder that cannot be written (nothing is then written).
        strrnn.fileio.DiskFullError: the disk filled up (nothing half-written is left).
    """
    spec, gen = _prepare(model_or_run, payload, int8, scales, prefix, input_shape, normalization, class_names)
    directory = Path(directory)
    files = {"header": directory / f"{prefix}_model.h", "source": directory / f"{prefix}_model.c",
             "main": directory / "main.c"}
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"cannot write the C files: {directory} is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # all three files land together or not at all: each is written to a temporary file first and they
        # replace their destinations only once every one is complete
        with contextlib.ExitStack() as stack:
            for key, path in files.items():
                if path.is_dir():
                    raise ValueError(f"cannot write {path}: a folder of that name is in the way")
                tmp = stack.enter_context(atomic_path(path))
                tmp.write_text(gen[key], encoding="utf-8")
    except DiskFullError:
        raise
    except OSError as err:
        raise ValueError(f"cannot write the C files to {directory}: {err.strerror or err}") from None
    return {**files, **_footprint_fields(gen), "prefix": prefix, "int8": int8, "frames": spec.frames,
            "features": spec.features, "classes": spec.classes}


def _compiler(cc) -> list[str]:
    spec = cc or os.environ.get("CC") or "cc"
    argv = shlex.split(spec) if isinstance(spec, str) else list(spec)
    if not argv or shutil.which(argv[0]) is None:
        raise ValueError(f"no C compiler: {argv[0] if argv else spec!r} not found on PATH; install gcc or clang, or "
                         "pass cc= (or set $CC)")
    return argv


def _run_compiler(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {what} failed ({shlex.join(argv)}):\n{done.stderr.strip()}")


def compile_c(directory, *, prefix: str = "kws", cc=None, output=None, flags=_STRICT_FLAGS) -> Path:
    """Compile ``main.c`` + ``<prefix>_model.c`` of ``directory`` (written by :func:`write_c`) into the checker.

    Args:
        cc: the compiler (a path, a command line, or a list); default ``$CC``, else ``cc``.
        output: the executable (default ``<directory>/<prefix>_check``).
        flags: compiler flags (default ``-std=c99 -O2 -Wall``); ``-lm`` is always added last.

    Returns the executable's path. Raises ``ValueError`` when no compiler is found, ``RuntimeError`` (with the
    compiler's messages) when compilation fails.
    """
    directory = Path(directory)
    out = Path(output) if output is not None else directory / f"{prefix}_check"
    argv = [*_compiler(cc), *flags, "-o", str(out), str(directory / "main.c"), str(directory / f"{prefix}_model.c"),
            "-lm"]
    _run_compiler(argv, f"the C export in {directory}")
    return out


def run_c(executable, clips, *, stream: bool = False, timeout: float | None = 600) -> np.ndarray:
    """Run the checker built by :func:`compile_c` on raw feature clips.

    Args:
        executable: the checker.
        clips: (N, FRAMES, FEATURES) raw features (before normalization), any float dtype; sent as float32.
        stream: return the logits after every frame, (N, FRAMES, CLASSES), instead of after each clip, (N, CLASSES).

    Raises ``ValueError`` when ``clips`` does not have the model's shape, ``RuntimeError`` when the checker fails.
    """
    exe = str(executable)
    info = subprocess.run([exe, "--info"], capture_output=True, text=True, timeout=timeout, check=True)
    frames, features, classes, _ = (int(v) for v in info.stdout.split())
    x = np.asarray(clips, dtype="<f4")
    if x.ndim != 3 or x.shape[1:] != (frames, features):
        raise ValueError(f"clips must have shape (N, {frames}, {features}), got {x.shape}")
    done = subprocess.run([exe, *(["--stream"] if stream else [])], input=x.tobytes(), capture_output=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{exe} failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    values = np.array(done.stdout.split(), dtype=np.float64)
    shape = (len(x), frames, classes) if stream else (len(x), classes)
    return values.reshape(shape)


def _section_sizes(obj: Path) -> dict[str, int] | None:
    """``size -A`` of an object: bytes per section name, or None when ``size`` is missing or fails."""
    tool = shutil.which("size")
    if tool is None:
        return None
    done = subprocess.run([tool, "-A", "-d", str(obj)], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    sections = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = sections.get(parts[0], 0) + int(parts[1])
    return sections


def footprint(model_or_run, *, payload: dict | None = None, int8: bool = False, scales: str = "row", cc=None,
              flags=("-std=c99", "-O2"), **meta) -> dict:
    """Flash, RAM and multiply-adds per frame of the C export of ``model_or_run`` (arguments as :func:`write_c`;
    ``meta``: its ``input_shape``, ``normalization``, ``class_names``, ``prefix``).

    Compiles ``<prefix>_model.c`` alone to an object with ``flags`` and reads its sections with ``size -A``:
    ``code_bytes`` (``.text*``), ``rodata_bytes`` (``.rodata*``), ``data_bytes`` (``.data*``, e.g. the label
    pointers of a position-independent build), ``flash_bytes`` (their sum) and ``bss_bytes`` (0: the export has
    no mutable globals). ``.eh_frame`` (host unwind tables; a bare-metal build has none) is not counted. Without a
    compiler or ``size``, ``flash_bytes`` is the arrays' bytes alone (``flash_source`` says which).

    Also: ``const_bytes``, ``state_bytes``, ``scratch_bytes``, ``ram_bytes`` (state + scratch),
    ``macs_per_frame``, ``logits_macs`` (see :func:`write_c`), ``arch`` (the host the object was built for: code
    size is the host's instruction set, e.g. x86-64, not a microcontroller's).
    """
    prefix = meta.pop("prefix", "kws")
    with tempfile.TemporaryDirectory(prefix="strrnn-c-") as folder:
        written = write_c(model_or_run, folder, payload=payload, int8=int8, scales=scales, prefix=prefix, **meta)
        result = {k: written[k] for k in ("const_bytes", "state_bytes", "scratch_bytes", "ram_bytes",
                                          "macs_per_frame", "logits_macs")}
        result |= {"code_bytes": None, "rodata_bytes": None, "data_bytes": None, "bss_bytes": None,
                   "flash_bytes": written["const_bytes"], "flash_source": "const arrays only (no compiler or size)",
                   "arch": platform.machine()}
        try:
            argv = _compiler(cc)
        except ValueError:
            return result
        obj = Path(folder) / f"{prefix}_model.o"
        _run_compiler([*argv, *flags, "-c", "-o", str(obj), str(written["source"])], "the C export")
        sections = _section_sizes(obj)
        if sections is None:
            return result

        def total(*starts: str) -> int:
            return sum(n for name, n in sections.items() if name.startswith(starts))

        result |= {"code_bytes": total(".text"), "rodata_bytes": total(".rodata"),
                   "data_bytes": total(".data", ".sdata"), "bss_bytes": total(".bss", ".sbss")}
        result["flash_bytes"] = result["code_bytes"] + result["rodata_bytes"] + result["data_bytes"]
        result["flash_source"] = "size -A of the compiled object"
    return result


# ---------------------------------------------------------------------------------------------------------------
# A run folder to checked C (the library side of ``strrnn export --c``)
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CExport:
    """What :func:`export_c` wrote and measured.

    ``files``: header, source and ``main.c``; ``info``: :func:`write_c`'s sizes; ``footprint``: :func:`footprint`
    (flash, RAM, multiply-adds); ``checked``: whether the C ran against PyTorch (False without a compiler, with the
    reason in ``note``); ``max_rel_diff``: largest ``|c - torch| / max(1, |torch|)`` over the check's logits;
    ``agreement``: fraction of check clips with the same top class; ``clips``: how many; ``compiler``: the command
    that compiled the check.
    """

    directory: Path
    files: list[Path]
    info: dict
    footprint: dict
    checked: bool
    note: str = ""
    max_rel_diff: float | None = None
    agreement: float | None = None
    clips: int = 0
    compiler: str = ""

    def build_command(self, output: str = "kws") -> str:
        """How to build the checker from the written files (the shell expands the glob)."""
        return f"cc -std=c99 -O2 {shlex.quote(str(self.directory))}/*.c -lm -o {output}"


def export_c(run_dir, directory, *, int8: bool = False, scales: str = "row", prefix: str = "kws", atol: float = 1e-3,
             samples: int = 16, seed: int = 0, cc=None) -> CExport:
    """Write the C of a run's exported model into ``directory`` and check it against PyTorch.

    The check compiles the written files (``-std=c99 -O2 -Wall``, in a temporary folder) and runs the checker on
    ``samples`` random clips of the stored shape: standard-normal *normalized* features (what the model reads),
    turned into raw features with the run's normalization (what the C reads). fp32 logits must lie within
    ``atol * max(1, |torch|)`` of PyTorch's; int8 logits are only required to be finite (their agreement with
    PyTorch's top class is reported). Without a C compiler the files are written and the check is skipped
    (``checked`` False, ``note`` says why).

    Raises:
        ValueError: no exported model in ``run_dir``, an unsupported model, an int8 product that could overflow
            int32, an output folder that cannot be written (one line each, from :func:`write_c`), or C logits
            outside the tolerance (the files are kept for inspection).
        RuntimeError: the compiler rejected the generated code (its messages follow the first line).
    """
    from ..artifacts import load_exported

    model, payload = load_exported(run_dir)
    directory = Path(directory)
    info = write_c(model, directory, payload=payload, int8=int8, scales=scales, prefix=prefix)
    sizes = footprint(model, payload=payload, int8=int8, scales=scales, prefix=prefix, cc=cc)
    files = [info["header"], info["source"], info["main"]]
    result = CExport(directory, files, info, sizes, checked=False)
    try:
        result.compiler = shlex.join(_compiler(cc))
    except ValueError as err:
        result.note = f"not checked against PyTorch: {err}"
        return result
    frames, features = info["frames"], info["features"]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, frames, features, generator=generator)
    norm = payload.get("normalization")
    raw = x.numpy()
    if norm is not None:
        raw = raw * np.asarray(norm["std"], np.float32).reshape(-1) + np.asarray(norm["mean"], np.float32).reshape(-1)
    with torch.no_grad():
        expected = model(x).numpy()
    with tempfile.TemporaryDirectory(prefix="strrnn-c-check-") as folder:
        exe = compile_c(directory, prefix=prefix, cc=cc, output=Path(folder) / f"{prefix}_check")
        got = run_c(exe, raw.astype(np.float32))
    if got.shape != expected.shape or not np.isfinite(got).all():
        raise ValueError(f"the C checker gave logits of shape {got.shape} (non-finite: "
                         f"{int((~np.isfinite(got)).sum())}), PyTorch {expected.shape}; the files are in {directory}")
    worst = float((np.abs(got - expected) / np.maximum(1.0, np.abs(expected))).max())
    if not int8 and not worst <= atol:
        raise ValueError(f"the C logits differ from PyTorch's by {worst:.3g} (relative) > {atol} on random clips; "
                         f"the files are in {directory}")
    result.checked, result.max_rel_diff, result.clips = True, worst, samples
    result.agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    return result
