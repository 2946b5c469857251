"""Recurrent cells (FastGRNN, FastRNN, LSTM, GRU) and the sequence runner :class:`RNN`.

The cells hold explicit, named weight tensors ``W`` (input -> gates, shape ``(gates*hidden, input)``)
and ``U`` (hidden -> gates, shape ``(gates*hidden, hidden)``), so that STR (or anything else) is
applied to them from outside, by name, through :mod:`torch.nn.utils.parametrize`. Nothing in this
file imports strrnn's threshold or low-rank code. Low-rank weights are recognised by a duck-typed
protocol (``docs/CONTRACT.md``): the parametrization object has ``factors(*originals) -> (left
(out, r), spectrum (r,), right (r, in))``. Exported cells store ``W_left`` / ``W_right``
Parameters instead of ``W`` (see :meth:`RecurrentCell.export_low_rank`).

Shapes: ``B`` batch, ``T`` time steps, ``I`` input features, ``H`` hidden size, ``G`` gates per
hidden unit (1 for FastGRNN/FastRNN, 4 for LSTM, 3 for GRU).

Speed design (the runner, not the cells, owns the time loop):

* every weight is read once per sequence (a parametrized weight is materialized, or its factors
  computed, once -- never once per step);
* the input projection ``x_t W^T`` for all steps is one matrix product;
* the loop runs only the recurrence; FastGRNN/FastRNN use a hand-written backward through time
  (:mod:`strrnn.fastgrnn_kernel`); LSTM/GRU go through PyTorch's fused ``nn.LSTM``/``nn.GRU``
  kernels (cuDNN on GPU) via :func:`torch.func.functional_call` with the materialized weights;
* a low-rank weight is applied through its factors, ``((h B^T) diag(m)) A^T``, when that costs fewer
  multiply-adds than the dense product; thresholded-away spectrum entries are dropped first.

Inference (no autograd graph needed: ``torch.no_grad()``, or nothing requires grad) of FastGRNN/FastRNN
takes a leaner path (:meth:`RecurrentCell.infer_sequence`, :meth:`FastGRNNCell.forward`):

* whole sequences: the input projection (bias folded in) is computed batch-first for all frames and the
  recurrence then runs *in place* in it (``strrnn.fastgrnn_kernel.fastgrnn_infer_``): no saved buffers, no
  transposes, no output allocation -- the projection becomes the output;
* streaming (one frame per call): ``W x + U h + b`` is one product over the concatenated ``[x, h]``
  (``[A_w A_u] [B_w x; B_u h]`` through factors), with the stacked, transposed weights and the pointwise
  constants precomputed once and reused until a parameter changes (keyed by the parameters' versions).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .factored import caching_parametrizations, factored_is_cheaper, originals
from .fastgrnn_kernel import (
    KERNEL_NONLINEARITIES,
    fastgrnn_gates,
    fastgrnn_infer_,
    fastgrnn_pointwise_,
    fastgrnn_scan_final,
    fastrnn_infer_,
    fastrnn_scan,
)

__all__ = [
    "CELLS",
    "NONLINEARITIES",
    "RecurrentCell",
    "FastGRNNCell",
    "FastRNNCell",
    "LSTMCell",
    "GRUCell",
    "RNN",
    "WeightOp",
    "available_cells",
    "build_cell",
    "read_weight",
    "register_cell",
]

#: Pointwise nonlinearities a FastGRNN/FastRNN cell accepts by name (EdgeML's set). Names in
#: ``strrnn.fastgrnn_kernel.KERNEL_NONLINEARITIES`` run on the hand-written backward; the others
#: (and any callable) on a plain autograd loop.
NONLINEARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "quantTanh": lambda x: torch.clamp(x, -1.0, 1.0),
    "quantSigm": lambda x: torch.clamp((x + 1.0) / 2.0, 0.0, 1.0),
}

#: Cell registry: name -> class. Use :func:`build_cell` / :func:`register_cell`.
CELLS: dict[str, type[RecurrentCell]] = {}


def register_cell(name: str):
    """Class decorator: make a :class:`RecurrentCell` subclass buildable as ``build_cell(name, ...)``."""

    def deco(cls):
        CELLS[name] = cls
        cls.cell_name = name
        return cls

    return deco


def available_cells() -> list[str]:
    """Names accepted by :func:`build_cell` (and by ``RNN``/models as ``cell=``)."""
    return sorted(CELLS)


def build_cell(name: str, input_size: int, hidden_size: int, **kwargs) -> RecurrentCell:
    """Build a registered cell: ``build_cell("fastgrnn", 32, 100)``; unknown names raise ``ValueError``."""
    try:
        cls = CELLS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown cell {name!r}; choose one of: {', '.join(available_cells())}") from None
    return cls(input_size, hidden_size, **kwargs)


def _nonlinearity(spec) -> Callable:
    if callable(spec):
        return spec
    if spec not in NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {spec!r}; choose one of: {', '.join(NONLINEARITIES)} or a callable")
    return NONLINEARITIES[spec]


# ---------------------------------------------------------------------------------------------------
# Reading weights: dense, parametrized, low-rank parametrized (factor protocol) or exported factors.
# ---------------------------------------------------------------------------------------------------
class WeightOp:
    """A weight read once for a whole sequence: ``x -> x @ W^T``, dense or through factors.

    Exactly one form is set: ``weight`` (out, in), or ``left`` (out, r) and ``right`` (r, in) with
    ``W = left @ right`` (the spectrum already folded into ``left``).
    """

    __slots__ = ("weight", "left", "right")

    def __init__(self, weight=None, left=None, right=None):
        self.weight, self.left, self.right = weight, left, right

    @property
    def factored(self) -> bool:
        return self.weight is None

    @property
    def rank(self) -> int | None:
        return None if self.weight is not None else self.left.shape[1]

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """(..., in) -> (..., out) (+ bias): one product, or two through the factors."""
        if self.weight is not None:
            return F.linear(x, self.weight, bias)
        return F.linear(F.linear(x, self.right), self.left, bias)

    def dense(self) -> torch.Tensor:
        """The (out, in) matrix (materialized from the factors if needed)."""
        return self.weight if self.weight is not None else self.left @ self.right


def _from_factors(left: torch.Tensor, spectrum: torch.Tensor, right: torch.Tensor) -> WeightOp:
    out_f, in_f = left.shape[0], right.shape[1]
    keep = spectrum != 0
    r = int(keep.sum())  # the learned rank (one host sync per sequence)
    if r < spectrum.numel():
        # Cut entries carry no value and (relu sub-gradient) no gradient: dropping them is exact.
        idx = keep.nonzero().squeeze(1)
        left, spectrum, right = left.index_select(1, idx), spectrum.index_select(0, idx), right.index_select(0, idx)
    left = left * spectrum  # fold the spectrum once per sequence, not once per step
    if factored_is_cheaper(out_f, in_f, r):
        return WeightOp(left=left, right=right)
    return WeightOp(weight=left @ right)


def read_weight(module: nn.Module, name: str) -> WeightOp:
    """Read weight ``name`` of ``module`` once, in the cheapest form to multiply with.

    - exported factors (``{name}_left``, ``{name}_right`` Parameters) -> factored;
    - a single parametrization whose object has ``factors(*originals)`` (the low-rank protocol) ->
      factored if ``r (out + in) < out * in`` for the learned rank ``r``, else materialized;
    - anything else (plain tensor, other parametrizations) -> ``getattr(module, name)``, once.

    Inside ``torch.nn.utils.parametrize.cached()`` the cached dense weight is used.
    """
    params = module._parameters
    if f"{name}_left" in params:
        return WeightOp(left=params[f"{name}_left"], right=params[f"{name}_right"])
    if parametrize.is_parametrized(module, name) and not caching_parametrizations():
        plist = module.parametrizations[name]
        factors = getattr(plist[0], "factors", None)
        if len(plist) == 1 and callable(factors):
            return _from_factors(*factors(*originals(module, name)))
    return WeightOp(weight=getattr(module, name))


def _transposed(op: WeightOp) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(U^T, None)`` of a dense op, ``(left^T (r, out), right^T (in, r))`` of a factored one (views)."""
    return (op.weight.t(), None) if not op.factored else (op.left.t(), op.right.t())


def _plain_ops_needed() -> bool:
    """Whether the plain step ops must run instead of the hand-written kernels (speed devices only): tracing and
    torch.export/compile (ONNX export) record ops, which a custom backward or an in-place loop would hide."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _needs_graph(module: nn.Module, *tensors) -> bool:
    """Whether autograd must record: grad mode is on and an input (tensors or tuples of them) or a
    parameter of ``module`` requires grad. Under ``torch.no_grad()`` this costs one call."""
    if not torch.is_grad_enabled():
        return False
    flat = [t for x in tensors for t in (x if isinstance(x, tuple) else (x,)) if t is not None]
    return any(t.requires_grad for t in flat) or any(p.requires_grad for p in module.parameters())


def _version_key(module: nn.Module) -> tuple:
    """Changes whenever a parameter of ``module`` is moved (new memory) or modified in place (version counter)."""
    return tuple((p.data_ptr(), p._version) for p in module._parameters.values() if p is not None)


class _FusedStep:
    """``x W^T + h U^T + b`` for one frame as one product over ``[x, h]``: ``[x', h'] @ [A_w A_u]^T + b``
    where ``x' = x B_w^T`` (or ``x`` for a dense W) and ``h' = h B_u^T`` (or ``h``).

    Fewer, larger products than four thin ones: at batch 1 every op costs a fixed dispatch time that
    exceeds its arithmetic. With both weights factored and a small batch, ``[x, h]`` goes through one
    block-diagonal right factor (``diag(B_w^T, B_u^T)``, zeros included): one op fewer at the price of
    ``r_w*H + r_u*I`` multiply-adds per row that are zero.
    """

    BLOCK_MAX_BATCH = 16  # up to here an op saved is worth more than the zeros multiplied

    def __init__(self, w: WeightOp, u: WeightOp, bias: torch.Tensor) -> None:
        with torch.no_grad():
            self.bias = bias.detach()
            self.right_x = None if not w.factored else w.right.detach().t().contiguous()
            self.right_h = None if not u.factored else u.right.detach().t().contiguous()
            left = torch.cat([w.weight if not w.factored else w.left, u.weight if not u.factored else u.left], 1)
            self.left_t = left.detach().t().contiguous()  # (kx + kh, out)
            self.block = None
            if self.right_x is not None and self.right_h is not None:
                (i, rw), (h, ru) = self.right_x.shape, self.right_h.shape
                self.block = self.right_x.new_zeros(i + h, rw + ru)
                self.block[:i, :rw] = self.right_x
                self.block[i:, rw:] = self.right_h

    def __call__(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x (B, I), h (B, H) -> (B, out), a new tensor."""
        if self.block is not None and x.shape[0] <= self.BLOCK_MAX_BATCH:
            p = torch.cat([x, h], 1).mm(self.block)
        else:
            p = torch.cat([x if self.right_x is None else x.mm(self.right_x),
                           h if self.right_h is None else h.mm(self.right_h)], 1)
        return torch.addmm(self.bias, p, self.left_t)


def _last(seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(T, B, H) -> (B, H): the entry at step ``lengths[b] - 1`` of each sequence (or the last)."""
    if lengths is None:
        return seq[-1]
    return seq[lengths - 1, torch.arange(seq.shape[1], device=seq.device)]


def _reverse(seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of (T, B, F) within its own length (padding stays in place)."""
    if lengths is None:
        return seq.flip(0)
    T = seq.shape[0]
    t = torch.arange(T, device=seq.device).unsqueeze(1)
    idx = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B); an involution
    return seq.gather(0, idx.unsqueeze(-1).expand_as(seq))


# ---------------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------------
class RecurrentCell(nn.Module):
    """Base class of the cells: one time step ``state' = cell(x_t, state)``.

    Subclasses set ``n_gates`` and implement :meth:`project` (input projection, any leading dims) and
    :meth:`recur` (one step from the projected input). :meth:`scan` (the time loop used by
    :class:`RNN`) may be overridden by a faster kernel.

    State: a tensor ``h`` (B, H), or for LSTM a tuple ``(h, c)``; ``None`` means zeros.
    """

    #: Names of the weight matrices a low-rank helper (``strrnn.lowrank_rnn``) should parametrize.
    recurrent_weights: tuple[str, ...] = ("W", "U")
    n_gates: int = 1
    state_is_tuple: bool = False
    cell_name: str = ""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{type(self).__name__}: {what} must be a positive int, got {v!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size

    # -- configuration ----------------------------------------------------------------------------
    def config(self) -> dict:
        """Constructor keyword arguments other than the sizes (used to clone a cell for more layers)."""
        return {}

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.config().items())
        return f"{self.input_size}, {self.hidden_size}{extra}"

    # -- state ------------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None):
        """Zero state for ``batch_size`` sequences: (B, H), or ``(h, c)`` for LSTM."""
        ref = self.bias_like()
        z = torch.zeros(batch_size, self.hidden_size, device=device or ref.device, dtype=dtype or ref.dtype)
        return (z, z.clone()) if self.state_is_tuple else z

    def bias_like(self) -> torch.Tensor:
        """Any plain parameter of the cell (gives device and dtype)."""
        return next(p for n, p in self._parameters.items() if p is not None)

    @staticmethod
    def hidden(state):
        """The output ``h`` (B, H) of a state."""
        return state[0] if isinstance(state, tuple) else state

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if the last dimension of ``x`` is not ``input_size``."""
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input feature size {self.input_size}, "
                f"got {x.shape[-1]} (input shape {tuple(x.shape)})"
            )

    # -- weights ----------------------------------------------------------------------------------
    def read_weights(self) -> dict[str, WeightOp]:
        """Read every recurrent weight once (see :func:`read_weight`)."""
        return {name: read_weight(self, name) for name in self.recurrent_weights}

    def project(self, x: torch.Tensor, weights: dict[str, WeightOp]) -> torch.Tensor:
        """Input projection (..., I) -> (..., G*H), one matrix product for all leading dims."""
        return weights["W"](x)

    def recur(self, xw: torch.Tensor, state, weights: dict[str, WeightOp]):
        """One step from the projected input ``xw`` (B, G*H) and ``state``; returns the new state."""
        raise NotImplementedError

    def scan(self, xw: torch.Tensor, state, weights: dict[str, WeightOp]) -> tuple[torch.Tensor, ...]:
        """Run the recurrence over a time-major projection ``xw`` (T, B, G*H).

        Returns a tuple of (T, B, H) tensors, one per state component (``h`` first): the state after
        every step. This default is a plain autograd loop; subclasses may use a kernel.
        """
        return self._loop(xw, state, weights)[0]

    def scan_final(self, xw: torch.Tensor, state, weights: dict[str, WeightOp]):
        """:meth:`scan` and the state after the last step (``h`` (B, H), or ``(h, c)``), as its own tensor.

        :class:`RNN` takes the final state from here: where only it is used (a classifier on the last state),
        nothing downstream depends on the stacked sequence -- an exported graph drops the stacking, and a
        kernel's backward skips the sequence's all-zero gradient.
        """
        if type(self).scan is not RecurrentCell.scan:  # a subclass's own scan (a kernel): its result
            seqs = self.scan(xw, state, weights)
            return seqs, (tuple(s[-1] for s in seqs) if self.state_is_tuple else seqs[0][-1])
        return self._loop(xw, state, weights)

    def _loop(self, xw, state, weights):
        """The plain autograd loop: ``(stacked states per component, final state)``."""
        if state is None:
            state = self.init_state(xw.shape[1], xw.device, xw.dtype)
        seqs = []
        for t in range(xw.shape[0]):
            state = self.recur(xw[t], state, weights)
            seqs.append(state if isinstance(state, tuple) else (state,))
        return tuple(torch.stack(s) for s in zip(*seqs, strict=True)), state

    # -- inference without autograd (optional) ----------------------------------------------------
    def infer_ok(self) -> bool:
        """Whether this cell has an in-place inference loop (:meth:`infer_sequence`). :class:`RNN` uses it
        only where no autograd graph is needed."""
        return False

    def infer_sequence(self, x: torch.Tensor, state, weights: dict[str, WeightOp], batch_first: bool = True):
        """The whole sequence without autograd: x (B, T, I) (``batch_first=False``: (T, B, I)), state (B, H) or
        None -> the state after every step, (B, T, H) (or (T, B, H)). Only where :meth:`infer_ok`."""
        raise NotImplementedError

    # -- one step (streaming) ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None):
        """One time step. x: (B, I); state: (B, H) / ``(h, c)`` or None. Returns the new state."""
        self.check_input(x)
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        w = self.read_weights()
        return self.recur(self.project(x, w), state, w)

    def step(self, x_t: torch.Tensor, state=None):
        """Streaming alias of :meth:`forward`: feed frames as they arrive, carrying ``state``."""
        return self(x_t, state)

    # -- export protocol (docs/CONTRACT.md) -------------------------------------------------------
    def export_low_rank(self, name: str, left: torch.Tensor, right: torch.Tensor) -> None:
        """Replace weight ``name`` by stored factors ``{name}_left`` (out, r) and ``{name}_right`` (r, in).

        Called by ``strrnn.export`` after the parametrization was removed (spectrum folded into
        ``left``). The cell then computes ``x -> (x right^T) left^T``; ``cell.W`` still returns the
        (materialized) product for inspection. A fresh cell loads such a state dict directly.
        """
        if name not in self.recurrent_weights:
            raise ValueError(f"{type(self).__name__} has no recurrent weight {name!r}; has {self.recurrent_weights}")
        if parametrize.is_parametrized(self, name):
            raise ValueError(f"remove the parametrization of {name!r} before export_low_rank")
        ref = self._parameters.get(name)
        out_f = self.n_gates * self.hidden_size
        in_f = self.input_size if name == "W" else self.hidden_size
        if left.dim() != 2 or right.dim() != 2 or left.shape[0] != out_f or right.shape[1] != in_f:
            raise ValueError(
                f"export_low_rank({name!r}): expected left (out={out_f}, r) and right (r, in={in_f}), "
                f"got {tuple(left.shape)} and {tuple(right.shape)}"
            )
        if left.shape[1] != right.shape[0]:
            raise ValueError(f"export_low_rank({name!r}): rank mismatch {tuple(left.shape)} @ {tuple(right.shape)}")
        if name in self._parameters:
            del self._parameters[name]
        elif name in self.__dict__:
            del self.__dict__[name]
        grad = True if ref is None else ref.requires_grad
        self.register_parameter(f"{name}_left", nn.Parameter(left.detach().clone(), requires_grad=grad))
        self.register_parameter(f"{name}_right", nn.Parameter(right.detach().clone(), requires_grad=grad))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        # An exported state dict loads into a fresh (dense) cell: switch to factors of the stored shape.
        for name in self.recurrent_weights:
            lk, rk = f"{prefix}{name}_left", f"{prefix}{name}_right"
            if lk in state_dict and rk in state_dict and name in self._parameters:
                ref = self._parameters[name]
                left = torch.empty(state_dict[lk].shape, dtype=ref.dtype, device=ref.device)
                right = torch.empty(state_dict[rk].shape, dtype=ref.dtype, device=ref.device)
                self.export_low_rank(name, left, right)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            params = self.__dict__.get("_parameters", {})
            if f"{name}_left" in params:
                return params[f"{name}_left"] @ params[f"{name}_right"]
            raise


def _init_normal_(*tensors: torch.Tensor, std: float = 0.1) -> None:
    with torch.no_grad():
        for t in tensors:
            t.normal_(0.0, std)


@register_cell("fastgrnn")
class FastGRNNCell(RecurrentCell):
    """FastGRNN (Kusupati et al., NeurIPS 2018).

    ``z = f_g(W x + U h + b_g)``, ``c = f_u(W x + U h + b_u)``,
    ``h' = z * h + (sigmoid(zeta) * (1 - z) + sigmoid(nu)) * c``.

    Parameters: ``W`` (H, I), ``U`` (H, H), ``bias_gate`` (H,), ``bias_update`` (H,) (ones), ``zeta``
    (1,), ``nu`` (1,). ``W`` and ``U`` are initialised as in the classic implementation (EdgeML's
    ``FastGRNNCell``): ``0.1 * N(0, 1)``.

    Args:
        input_size, hidden_size: I and H.
        gate_nonlinearity, update_nonlinearity: names in :data:`NONLINEARITIES` or callables.
        zeta_init, nu_init: initial raw values of zeta and nu (passed through a sigmoid).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gate_nonlinearity="sigmoid",
        update_nonlinearity="tanh",
        zeta_init: float = 1.0,
        nu_init: float = -4.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.gate_nonlinearity, self.update_nonlinearity = gate_nonlinearity, update_nonlinearity
        self._f_gate, self._f_update = _nonlinearity(gate_nonlinearity), _nonlinearity(update_nonlinearity)
        self._zeta_init, self._nu_init = zeta_init, nu_init
        self.W = nn.Parameter(torch.empty(hidden_size, input_size))
        self.U = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_gate = nn.Parameter(torch.ones(hidden_size))
        self.bias_update = nn.Parameter(torch.ones(hidden_size))
        self.zeta = nn.Parameter(torch.full((1,), float(zeta_init)))
        self.nu = nn.Parameter(torch.full((1,), float(nu_init)))
        _init_normal_(self.W, self.U)
        #: Use the hand-written backward through time when the nonlinearities allow it.
        self.use_kernel = True

    def config(self) -> dict:
        return dict(
            gate_nonlinearity=self.gate_nonlinearity,
            update_nonlinearity=self.update_nonlinearity,
            zeta_init=self._zeta_init,
            nu_init=self._nu_init,
        )

    def bias_like(self) -> torch.Tensor:
        return self.bias_gate

    def recur(self, xw, state, weights):
        pre = xw + weights["U"](state)
        z = self._f_gate(pre + self.bias_gate)
        c = self._f_update(pre + self.bias_update)
        # z*h + (sz*(1-z) + sn)*c == z*(h - sz*c) + (sz + sn)*c: one elementwise op fewer per step (an exported
        # graph folds the scalar sigmoids into constants)
        sz = torch.sigmoid(self.zeta)
        return z * (state - sz * c) + (sz + torch.sigmoid(self.nu)) * c

    def _kernel_ok(self) -> bool:
        # the hand-written backward and the in-place inference loop are speed devices; tracing and
        # torch.export/compile (ONNX export) need the plain step ops
        return (
            self.use_kernel
            and not _plain_ops_needed()
            and self.gate_nonlinearity in KERNEL_NONLINEARITIES
            and self.update_nonlinearity in KERNEL_NONLINEARITIES
        )

    def infer_ok(self) -> bool:
        return self._kernel_ok()

    def _gates(self):
        return fastgrnn_gates(self.bias_update - self.bias_gate, self.zeta, self.nu, self.gate_nonlinearity,
                              self.update_nonlinearity)

    def infer_sequence(self, x, state, weights, batch_first=True):
        with torch.no_grad():
            wx = weights["W"](x, self.bias_gate)  # one product for all frames, b_g folded in; becomes the output
            steps = wx.unbind(1 if batch_first else 0)
            if state is None and steps:
                state = wx.new_zeros(steps[0].shape)
            fastgrnn_infer_(steps, state, *_transposed(weights["U"]), self._gates())
        return wx

    def _step_weights(self) -> tuple[_FusedStep, object]:
        """The fused product and the pointwise constants for :meth:`forward`, reused while no parameter changes
        (a parametrized cell recomputes them every call: its weights depend on more than its parameters)."""
        key = _version_key(self)
        cache = self.__dict__.get("_step_cache")
        if cache is not None and cache[0] == key:
            return cache[1]
        w = self.read_weights()
        value = (_FusedStep(w["W"], w["U"], self.bias_gate), self._gates())
        if not parametrize.is_parametrized(self):
            self.__dict__["_step_cache"] = (key, value)
        return value

    def forward(self, x: torch.Tensor, state=None):
        """One time step. x: (B, I); state: (B, H) or None. Returns the new state (B, H).

        Without an autograd graph (see the module docstring), one fused product and six pointwise ops.
        """
        if not self.infer_ok() or _needs_graph(self, x, state):
            return super().forward(x, state)
        self.check_input(x)
        # nothing requires grad here, so autograd records nothing even outside no_grad (no context needed)
        fused, gates = self._step_weights()
        h = state if state is not None else x.new_zeros(x.shape[0], self.hidden_size)
        return fastgrnn_pointwise_(fused(x, h), h, gates)

    def scan(self, xw, state, weights):
        return self.scan_final(xw, state, weights)[0]

    def scan_final(self, xw, state, weights):
        if not self._kernel_ok():
            return self._loop(xw, state, weights)
        if state is None:
            state = xw.new_zeros(xw.shape[1:])
        u = weights["U"]
        u_left, u_right = (u.weight, None) if not u.factored else (u.left, u.right)
        hs, h_last = fastgrnn_scan_final(
            xw, state, u_left, u_right, self.bias_gate, self.bias_update, self.zeta, self.nu,
            self.gate_nonlinearity, self.update_nonlinearity,
        )
        return (hs,), h_last


@register_cell("fastrnn")
class FastRNNCell(RecurrentCell):
    """FastRNN (Kusupati et al., NeurIPS 2018): ``h' = sigmoid(alpha) * f(W x + U h + b) + sigmoid(beta) * h``.

    Parameters: ``W`` (H, I), ``U`` (H, H) (``0.1 * N(0, 1)``), ``bias_update`` (H,) (ones),
    ``alpha`` (1,) (init ``alpha_init=-3``), ``beta`` (1,) (init ``beta_init=3``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        update_nonlinearity="tanh",
        alpha_init: float = -3.0,
        beta_init: float = 3.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.update_nonlinearity = update_nonlinearity
        self._f_update = _nonlinearity(update_nonlinearity)
        self._alpha_init, self._beta_init = alpha_init, beta_init
        self.W = nn.Parameter(torch.empty(hidden_size, input_size))
        self.U = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_update = nn.Parameter(torch.ones(hidden_size))
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))
        self.beta = nn.Parameter(torch.full((1,), float(beta_init)))
        _init_normal_(self.W, self.U)
        self.use_kernel = True

    def config(self) -> dict:
        return dict(
            update_nonlinearity=self.update_nonlinearity, alpha_init=self._alpha_init, beta_init=self._beta_init
        )

    def bias_like(self) -> torch.Tensor:
        return self.bias_update

    def project(self, x, weights):
        return weights["W"](x, self.bias_update)  # the bias is per step constant: fold it in

    def recur(self, xw, state, weights):
        c = self._f_update(xw + weights["U"](state))
        return torch.sigmoid(self.alpha) * c + torch.sigmoid(self.beta) * state

    def _kernel_ok(self) -> bool:
        return self.use_kernel and not _plain_ops_needed() and self.update_nonlinearity in KERNEL_NONLINEARITIES

    def infer_ok(self) -> bool:
        return self._kernel_ok()

    def infer_sequence(self, x, state, weights, batch_first=True):
        with torch.no_grad():
            wx = weights["W"](x, self.bias_update)  # (B, T, H), the bias folded in; becomes the output
            steps = wx.unbind(1 if batch_first else 0)
            if state is None and steps:
                state = wx.new_zeros(steps[0].shape)
            fastrnn_infer_(steps, state, *_transposed(weights["U"]), self.alpha, self.beta, self.update_nonlinearity)
        return wx

    def scan(self, xw, state, weights):
        if not self._kernel_ok():
            return super().scan(xw, state, weights)
        if state is None:
            state = xw.new_zeros(xw.shape[1:])
        u = weights["U"]
        u_left, u_right = (u.weight, None) if not u.factored else (u.left, u.right)
        return (fastrnn_scan(xw, state, u_left, u_right, self.alpha, self.beta, self.update_nonlinearity),)


class _TorchGatedCell(RecurrentCell):
    """LSTM/GRU layout shared with PyTorch: ``W`` = weight_ih, ``U`` = weight_hh, ``bias_ih``, ``bias_hh``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        g = self.n_gates * hidden_size
        self.W = nn.Parameter(torch.empty(g, input_size))
        self.U = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        # PyTorch's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every tensor.
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            for p in (self.W, self.U, self.bias_ih, self.bias_hh):
                p.uniform_(-bound, bound)

    def bias_like(self) -> torch.Tensor:
        return self.bias_ih


@register_cell("lstm")
class LSTMCell(_TorchGatedCell):
    """LSTM in PyTorch's gate order (i, f, g, o); numerically ``torch.nn.LSTMCell`` given the same weights.

    ``W`` (4H, I) = ``weight_ih``, ``U`` (4H, H) = ``weight_hh``, ``bias_ih``, ``bias_hh`` (4H,).
    State: ``(h, c)``, each (B, H).
    """

    n_gates = 4
    state_is_tuple = True

    def project(self, x, weights):
        return weights["W"](x, self.bias_ih + self.bias_hh)

    def recur(self, xw, state, weights):
        h, c = state
        i, f, g, o = (xw + weights["U"](h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


@register_cell("gru")
class GRUCell(_TorchGatedCell):
    """GRU in PyTorch's gate order (r, z, n); numerically ``torch.nn.GRUCell`` given the same weights.

    ``n = tanh(W_n x + b_in + r * (U_n h + b_hn))``, ``h' = (1 - z) * n + z * h``.
    ``W`` (3H, I), ``U`` (3H, H), ``bias_ih``, ``bias_hh`` (3H,).
    """

    n_gates = 3

    def project(self, x, weights):
        return weights["W"](x, self.bias_ih)

    def recur(self, xw, state, weights):
        hh = weights["U"](state, self.bias_hh)
        xr, xz, xn = xw.chunk(3, dim=-1)
        hr, hz, hn = hh.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (state - n)


# ---------------------------------------------------------------------------------------------------
# The sequence runner
# ---------------------------------------------------------------------------------------------------
_FUSED = {LSTMCell: nn.LSTM, GRUCell: nn.GRU}


class RNN(nn.Module):
    """Multi-layer, optionally bidirectional recurrent network over any registered cell.

    ``RNN("fastgrnn", 32, 100)`` builds the cells; ``RNN(FastGRNNCell(32, 100))`` wraps a given cell
    (further layers/directions are fresh cells of the same class and configuration). Cells live in
    ``self.cells`` (index ``layer * num_directions + direction``), so ``strrnn.lowrank_rnn`` and
    ``strrnn.sparsify`` find their ``W``/``U`` from outside.

    Args:
        cell: a cell name (see :func:`available_cells`) or a :class:`RecurrentCell` instance.
        input_size, hidden_size: needed with a name; taken from the cell otherwise.
        num_layers, bidirectional, batch_first, dropout: as in ``torch.nn.LSTM`` (dropout between layers).
        fused: for LSTM/GRU cells, run through PyTorch's fused ``nn.LSTM``/``nn.GRU`` kernels with the
            weights materialized once per sequence (low-rank factors included). ``"auto"`` (default) and
            ``True``: fused; ``False``: the cell loop, which applies low-rank factors at every step. The
            fused kernel wins even where the factors save multiply-adds: a rank-20 LSTM (hidden 100,
            batch 100, 99 steps) trains 2.2x faster fused than through its factors in the loop.
        **cell_kwargs: passed to the cell constructor when ``cell`` is a name.

    Shapes (batch_first): input (B, T, I) -> output (B, T, D*H), final state ``h_n`` (L*D, B, H)
    (LSTM: ``(h_n, c_n)``), as in PyTorch. With ``lengths`` (B,), the final state is the state after
    each sequence's last valid step and outputs past a sequence's length are zero.
    """

    def __init__(
        self,
        cell: str | RecurrentCell,
        input_size: int | None = None,
        hidden_size: int | None = None,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = True,
        dropout: float = 0.0,
        fused: bool | str = "auto",
        **cell_kwargs,
    ) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused must be True, False or 'auto', got {fused!r}")
        if isinstance(cell, RecurrentCell):
            if cell_kwargs:
                raise ValueError("cell keyword arguments are only accepted with a cell name")
            for what, given, have in (("input_size", input_size, cell.input_size), ("hidden_size", hidden_size,
                                                                                     cell.hidden_size)):
                if given is not None and given != have:
                    raise ValueError(f"{what}={given} disagrees with the given cell's {what}={have}")
            first, cls, kw = cell, parametrize.type_before_parametrizations(cell), cell.config()
            input_size, hidden_size = cell.input_size, cell.hidden_size
        else:
            if input_size is None or hidden_size is None:
                raise ValueError("RNN(cell_name, input_size, hidden_size): sizes are required with a cell name")
            first = build_cell(cell, input_size, hidden_size, **cell_kwargs)
            cls, kw = type(first), first.config()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.bidirectional, self.batch_first = num_layers, bool(bidirectional), batch_first
        self.num_directions = 2 if bidirectional else 1
        self.dropout, self.fused = float(dropout), fused
        cells = [first]
        for i in range(1, num_layers * self.num_directions):
            layer_in = input_size if i < self.num_directions else hidden_size * self.num_directions
            cells.append(cls(layer_in, hidden_size, **kw))
        self.cells = nn.ModuleList(cells)
        self._template = None  # nn.LSTM/nn.GRU on the meta device, for the fused path (not a submodule)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}, fused={self.fused!r}"
        )

    @property
    def cell_type(self) -> type[RecurrentCell]:
        """The cells' class (as defined, not the subclass a parametrization creates)."""
        return parametrize.type_before_parametrizations(self.cells[0])

    def _fused_kind(self) -> type[nn.RNNBase] | None:
        return next((k for c, k in _FUSED.items() if issubclass(self.cell_type, c)), None)

    # -- state layout -----------------------------------------------------------------------------
    def _split_state(self, state, n: int):
        if state is None:
            return [None] * n
        if isinstance(state, tuple):
            return [tuple(s[i] for s in state) for i in range(n)]
        return [state[i] for i in range(n)]

    @staticmethod
    def _stack_state(finals):
        if isinstance(finals[0], tuple):
            return tuple(torch.stack(s) for s in zip(*finals, strict=True))
        return torch.stack(finals)

    def _check_lengths(self, lengths, B: int, T: int, device):
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=device).long()
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must lie in [1, {T}], got min {int(lengths.min())}, max {int(lengths.max())}")
        return lengths

    # -- whole sequence ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        """Run the whole sequence.

        Args:
            x: (B, T, I) (or (T, B, I) with ``batch_first=False``).
            state: initial state, (L*D, B, H) or ``(h0, c0)`` for LSTM; None = zeros.
            lengths: optional (B,) valid lengths (1..T) of right-padded sequences.

        Returns:
            ``(output, h_n)``: output (B, T, D*H), h_n (L*D, B, H) (LSTM: a tuple of two).
        """
        if x.dim() != 3:
            layout = "B, T, I" if self.batch_first else "T, B, I"
            raise ValueError(f"RNN expects a 3-D input ({layout}), got {tuple(x.shape)}")
        self.cells[0].check_input(x)
        xt = x.transpose(0, 1) if self.batch_first else x  # time-major inside
        T, B = xt.shape[:2]
        lengths = self._check_lengths(lengths, B, T, x.device)
        path = self.execution_path(x, state, lengths)
        if path == "infer":
            return self._forward_infer(x, state)
        weights = [c.read_weights() for c in self.cells]  # once per sequence
        if path == "fused":
            out, h_n = self._forward_fused(xt, state, lengths, weights)
        else:  # "kernel" or "loop": each cell's scan (its scan_final applies the same kernel test)
            out, h_n = self._forward_loop(xt, state, lengths, weights)
        return (out.transpose(0, 1) if self.batch_first else out), h_n

    def execution_path(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None) -> str:
        """Which of the four execution paths :meth:`forward` takes for this input — the one place that decides.

        ==========  =========================================  ==============================================
        path        runs for                                   what it is
        ==========  =========================================  ==============================================
        ``infer``   FastGRNN / FastRNN with kernel              the in-place inference loop
                    nonlinearities (sigmoid, tanh, ...) and     (:func:`strrnn.fastgrnn_kernel.fastgrnn_infer_`):
                    ``use_kernel``, when no autograd graph is   no saved buffers, the projection becomes the
                    needed (``torch.no_grad()``, or nothing     output. Any device and floating dtype.
                    requires grad), without ``lengths``,
                    bidirectional layers or active dropout
        ``fused``   LSTM, GRU: always                           PyTorch's own ``nn.LSTM`` / ``nn.GRU`` kernels
                                                                (cuDNN on CUDA) through ``functional_call`` with
                                                                the materialized (low-rank) weights
        ``kernel``  FastGRNN / FastRNN with kernel              the hand-written backward through time
                    nonlinearities and ``use_kernel`` when a    (:mod:`strrnn.fastgrnn_kernel`), any device
                    graph is needed
        ``loop``    any other cell (custom nonlinearity,        one autograd op per step: the plain step ops,
                    ``use_kernel = False``, a registered user   which tracing, ``torch.compile`` and ONNX export
                    cell) and every FastGRNN / FastRNN under    record
                    ``torch.jit.trace`` / ``torch.compile``
        ==========  =========================================  ==============================================

        Args: as :meth:`forward` (``x`` in the module's layout). Returns the path's name.
        """
        if self._use_fused():
            return "fused"
        cells_ok = all(c.infer_ok() for c in self.cells)  # kernel nonlinearities, use_kernel, not tracing
        quiet = not (self.dropout and self.training and self.num_layers > 1)
        if cells_ok and lengths is None and not self.bidirectional and quiet and not _needs_graph(self, x, state):
            return "infer"
        return "kernel" if cells_ok else "loop"

    def _forward_infer(self, x, state):
        """Layer by layer in the input's own layout (batch-first in, batch-first out: no transposes)."""
        layer_in, finals = x, []
        for cell, s in zip(self.cells, self._split_state(state, len(self.cells)), strict=True):
            layer_in = cell.infer_sequence(layer_in, s, cell.read_weights(), self.batch_first)
            finals.append(layer_in[:, -1] if self.batch_first else layer_in[-1])
        return layer_in, torch.stack(finals)

    def _use_fused(self) -> bool:
        return self.fused is not False and self._fused_kind() is not None

    def _forward_loop(self, xt, state, lengths, weights):
        D = self.num_directions
        states = self._split_state(state, len(self.cells))
        layer_in, finals = xt, []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                i = layer * D + d
                cell, w = self.cells[i], weights[i]
                inp = layer_in if d == 0 else _reverse(layer_in, lengths)
                seq, final = cell.scan_final(cell.project(inp, w), states[i], w)
                if lengths is not None:  # each sequence's own last step
                    final = tuple(_last(s, lengths) for s in seq) if cell.state_is_tuple else _last(seq[0], lengths)
                finals.append(final)
                outs.append(seq[0] if d == 0 else _reverse(seq[0], lengths))
            layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        if lengths is not None:
            mask = torch.arange(xt.shape[0], device=xt.device).unsqueeze(1) < lengths
            layer_in = layer_in * mask.unsqueeze(-1).to(layer_in.dtype)
        return layer_in, self._stack_state(finals)

    def _fused_template(self) -> nn.RNNBase:
        kind = self._fused_kind()
        t = self._template
        if t is None or type(t) is not kind:
            t = kind(
                self.input_size, self.hidden_size, num_layers=self.num_layers, bidirectional=self.bidirectional,
                dropout=self.dropout, device="meta",
            )
            object.__setattr__(self, "_template", t)  # a plain attribute: not a submodule, not in state_dict
        return t

    def _forward_fused(self, xt, state, lengths, weights):
        template = self._fused_template()
        template.train(self.training)
        params = {}
        for i, (cell, w) in enumerate(zip(self.cells, weights, strict=True)):
            layer, d = divmod(i, self.num_directions)
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            params["weight_ih" + sfx] = w["W"].dense()
            params["weight_hh" + sfx] = w["U"].dense()
            params["bias_ih" + sfx] = cell.bias_ih
            params["bias_hh" + sfx] = cell.bias_hh
        T = xt.shape[0]
        inp = xt
        if lengths is not None:
            inp = nn.utils.rnn.pack_padded_sequence(xt, lengths.cpu(), enforce_sorted=False)
        out, h_n = torch.func.functional_call(template, params, (inp, state))
        if lengths is not None:
            out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=T)
        return out, h_n

    # -- streaming --------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device=None, dtype=None):
        """Zero state (L, B, H) (LSTM: a tuple of two) for :meth:`step`."""
        return self._stack_state([c.init_state(batch_size, device, dtype) for c in self.cells])

    def step(self, x_t: torch.Tensor, state=None):
        """One frame for streaming inference: x_t (B, I), state (L, B, H) or None.

        Returns ``(output (B, H), state)``; stepping through a sequence equals :meth:`forward` on it.
        Unidirectional only (the backward direction needs the future).
        """
        if self.bidirectional:
            raise ValueError("step() needs a unidirectional RNN: a bidirectional one reads the whole sequence")
        if x_t.dim() != 2:
            raise ValueError(f"step expects one frame of shape (B, I), got {tuple(x_t.shape)}")
        if len(self.cells) == 1 and not self.cells[0].state_is_tuple:
            # the edge case (one layer, one frame per call): no per-layer lists; the state is a copy, as with
            # several layers (an in-place change of the output must not change the carried state)
            h = self.cells[0](x_t, None if state is None else state[0])
            return h, h.unsqueeze(0).clone()
        states = self._split_state(state, len(self.cells))
        inp, new = x_t, []
        for layer, cell in enumerate(self.cells):
            s = cell(inp, states[layer])
            new.append(s)
            inp = cell.hidden(s)
            if self.dropout and self.training and layer < self.num_layers - 1:
                inp = F.dropout(inp, self.dropout, training=True)
        return inp, self._stack_state(new)
