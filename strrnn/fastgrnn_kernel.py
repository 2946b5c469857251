"""Hand-written backward through time for FastGRNN and FastRNN.

Why this file exists: a plain autograd loop over 99 time steps records ~15 graph nodes per step and
then replays them one by one in the backward pass; on a CPU that bookkeeping, not arithmetic,
dominates (FastGRNN does a third of a GRU's matrix work yet measures 0.6-1.0x ``torch.nn.GRU``).
Here the whole sequence is one ``torch.autograd.Function``:

- forward: one loop over time writing into time-major preallocated buffers (``out=`` / in-place
  ops, no per-step allocation or graph recording);
- backward: everything that does not depend on the carried gradient is computed for all steps at
  once before the loop; the loop itself does 2 small ops and one matrix product per step (which
  writes the carried gradient straight into the next step's slot; one more op where every step's
  output has a gradient); the weight gradients are one matrix product over all steps after the loop
  (``dU = sum_t dpre_t^T h_{t-1}``);
- the final state is a separate output (:func:`fastgrnn_scan_final`): a loss on it alone gives the
  sequence output no gradient at all (``set_materialize_grads(False)``), not a (T, B, H) tensor of zeros.

The kernels take the input projection for all steps (``wx = x @ W^T``, computed outside by one
matrix product, possibly through low-rank factors) and the recurrent matrix either dense ``U``
(hidden, hidden) or as factors ``U = left @ right`` (left (hidden, r), right (r, hidden)). Autograd
handles everything outside the kernel (the factors of W and U, the thresholded spectrum), so
low-rank STR weights train through the same kernel.

Not twice differentiable (``once_differentiable``). Supported nonlinearities: sigmoid, tanh, relu
(derivatives are computed from the saved outputs).

Training-step memory: the forward's saved buffers (:func:`_lease`) and the backward's temporaries
(:func:`_scratch`) are reused from step to step instead of being fresh multi-MB allocations: glibc returns
large freed blocks to the system, and the kernel then zeroes every page again on first touch. At batch
100 x 99 steps x hidden 100 that was 5,200 page faults per training step, a quarter to a third of its
CPU time (one thread). With reuse the kernel's own buffers cause none; the tensors it hands out (the
output sequence, the gradient of the projection) and the projection itself stay fresh allocations, whose
cost depends on glibc's heap state: 0 to ~1,700 faults per step measured.

Inference (:func:`fastgrnn_infer_`, :func:`fastrnn_infer_`) needs none of the saved buffers: the loop
runs in place in the input projection itself, which then holds the outputs. Nothing of size
``T x B x H`` is allocated besides that projection, and no autograd node is built.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "fastgrnn_scan", "fastgrnn_scan_final", "fastrnn_scan", "fastgrnn_infer_", "fastrnn_infer_", "fastgrnn_gates",
    "fastgrnn_pointwise_", "GRNNGates", "KERNEL_NONLINEARITIES", "release_buffers",
]

_ONE = {}


def _full(like: torch.Tensor, value: float) -> torch.Tensor:
    """A 0-d tensor ``value`` of ``like``'s dtype/device (a broadcasting operand)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _one(like: torch.Tensor) -> torch.Tensor:
    """A cached 0-d tensor 1 of ``like``'s dtype/device (input of broadcasting ``addcmul``)."""
    key = (like.dtype, like.device)
    if key not in _ONE:
        _ONE[key] = torch.ones((), dtype=like.dtype, device=like.device)
    return _ONE[key]


def _tanh_(y: torch.Tensor) -> torch.Tensor:
    # On the CPU, torch.tanh measures ~6x slower than torch.sigmoid here (AVX512 build, AMD EPYC);
    # tanh(x) = 2*sigmoid(2x) - 1 in four cheap in-place ops is ~2x faster (abs. error ~2e-7 in fp32).
    if y.is_cpu:
        return y.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)
    return y.tanh_()


# Each nonlinearity: in-place forward, and its derivative computed from its own output y (one op).
_NONLIN = {
    "sigmoid": (torch.Tensor.sigmoid_, lambda y: torch.addcmul(y, y, y, value=-1.0)),
    "tanh": (_tanh_, lambda y: torch.addcmul(_one(y), y, y, value=-1.0)),
    "relu": (torch.Tensor.relu_, lambda y: (y > 0).to(y.dtype)),
}
KERNEL_NONLINEARITIES = tuple(_NONLIN)


def _sigmoid_deriv(y, out, scale=1.0):
    """sigmoid' = s (1 - s) from ``y = scale * s``, into ``out``."""
    if scale == 1.0:
        return torch.addcmul(y, y, y, value=-1.0, out=out)
    out = torch.mul(y, 1.0 / scale, out=out)
    return out.addcmul_(out, out, value=-1.0)


# The same derivatives written into ``out`` (no allocation), from ``y = scale * f(x)`` (scale > 0); relu's output
# is >= 0, so its sign is its derivative.
_DERIV = {
    "sigmoid": _sigmoid_deriv,
    "tanh": lambda y, out, scale=1.0: torch.addcmul(_one(y), y, y, value=-1.0 / scale**2, out=out),
    "relu": lambda y, out, scale=1.0: torch.sign(y, out=out),
}

_WORKSPACE = threading.local()


def _scratch(name: str, like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor shaped like ``like`` that lives on between calls (per thread, name, dtype, device).

    Why: a fresh multi-MB CPU tensor is zeroed page by page by the kernel on first touch, and glibc hands large
    freed blocks back to the system, so every training step paid that again: 5,200 page faults per FastGRNN step
    (batch 100, 99 steps, hidden 100), a third of its CPU time. Only the backward's temporaries come from here:
    they die with the call (nothing returned or saved aliases them). On other devices the caching allocator
    already reuses memory: a plain allocation.
    """
    if like.device.type != "cpu":
        return torch.empty_like(like)
    pool = _WORKSPACE.__dict__.setdefault("buffers", {})
    key = (name, like.dtype)
    buf = pool.get(key)
    if buf is None or buf.numel() < like.numel():
        buf = pool[key] = like.new_empty(like.numel())
    return buf[: like.numel()].view(like.shape)


_MAX_LEASES = 16  # buffers kept per thread: three per sequence whose graph is alive (layers, retained graphs)
_MAX_LEASE_BYTES = 1 << 30  # and at most this much memory: beyond it, plain allocations


def release_buffers() -> None:
    """Drop the calling thread's kept buffers (:func:`_scratch`, :func:`_lease`); buffers still in use stay
    valid (their tensors hold them) and are simply not handed out again."""
    _WORKSPACE.__dict__.clear()


def _release(slot: list) -> None:
    slot[1] = True


def _lease(ctx, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized ``shape`` tensor (``like``'s dtype) for a buffer that only the autograd node ``ctx`` holds:
    saved for its backward and never returned. It is handed out again once ``ctx`` is gone (graph freed), so that
    the forward's multi-MB buffers are not fresh pages every training step (see :func:`_scratch`). On other
    devices: a plain allocation."""
    if like.device.type != "cpu":
        return like.new_empty(shape)
    n = math.prod(shape)
    pool = _WORKSPACE.__dict__.setdefault("leases", [])
    slot = next((s for s in pool if s[1] and s[0].dtype == like.dtype and s[0].numel() >= n), None)
    if slot is None:
        slot = next((s for s in pool if s[1]), None)  # a free buffer too small (or of another dtype): replace it
        if slot is not None:
            slot[0] = like.new_empty(n)
        elif len(pool) < _MAX_LEASES and sum(s[0].nbytes for s in pool) + n * like.element_size() <= _MAX_LEASE_BYTES:
            slot = [like.new_empty(n), True]
            pool.append(slot)
        else:
            return like.new_empty(shape)
    slot[1] = False
    weakref.finalize(ctx, _release, slot)
    return slot[0][:n].view(shape)


def _scalar(p: torch.Tensor) -> tuple[torch.Tensor, float]:
    """sigmoid of a (1,)-shaped raw parameter, as a tensor (for its gradient) and as a Python float."""
    s = torch.sigmoid(p.detach())
    return s, float(s.reshape(-1)[0])


def _weight_grads(dpre, h_prev, u_left, u_right):
    """Gradients of U (or of its factors) from all steps at once: one matmul per tensor.

    dpre, h_prev: (T*B, H). Returns (d u_left, d u_right or None).
    """
    if u_right is None:
        return dpre.t() @ h_prev, None
    p = h_prev @ u_right.t()  # (T*B, r): the projected state each step saw
    d_left = dpre.t() @ p
    d_right = (dpre @ u_left).t() @ h_prev
    return d_left, d_right


def _colsum(x: torch.Tensor) -> torch.Tensor:
    """Sum of a (T, B, H) tensor over T and B, as a matrix-vector product with ones: 0.6x the time of
    ``sum(0)`` on the (T*B, H) rows at batch 100 x 99 steps (one thread)."""
    rows = _rows(x)
    return torch.mv(rows.t(), rows.new_ones(rows.shape[0]))


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # sum(a * b) without materializing the product (a and b are contiguous (T, B, H) buffers)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _update_step_fn(update: str, like: torch.Tensor, c_scale: float):
    """``(pre_gate z, delta, out c) -> c = c_scale * f_u(z + delta)`` with as few small ops as possible.

    On the CPU tanh is done as ``2*sigmoid(2x) - 1`` (see :func:`_tanh_`), with the affine parts (and the scale)
    folded into ``add(..., alpha=...)`` calls (a Scalar ``alpha`` needs no wrapped-tensor conversion).
    """
    if update == "tanh" and like.is_cpu:
        minus = torch.full((like.shape[-1],), -c_scale, dtype=like.dtype, device=like.device)

        def step(z, delta2, c):
            torch.add(delta2, z, alpha=2.0, out=c).sigmoid_()
            torch.add(minus, c, alpha=2.0 * c_scale, out=c)

        return step, 2.0
    u_fwd = _NONLIN[update][0]

    def step(z, delta, c):
        u_fwd(torch.add(z, delta, out=c))
        if c_scale != 1.0:
            c.mul_(c_scale)

    return step, 1.0


class _FastGRNNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wx, h0, u_left, u_right, b_g, b_u, zeta, nu, gate, update):
        T, B, H = wx.shape
        g_fwd = _NONLIN[gate][0]
        _, sz = _scalar(zeta)
        _, sn = _scalar(nu)
        k = sz + sn
        # c is kept as k*c: then h' = z*(h - sz*c) + k*c is one addcmul (k == 0 only if both sigmoids underflow)
        c_scale = k if k > 0 else 1.0
        update_step, scale = _update_step_fn(update, wx, c_scale)
        delta = (b_u - b_g) * scale
        hs = wx.new_empty(T + 1, B, H)
        hs[0] = h0
        # The gate pre-activations start as the projection plus b_g (one big op); each step then
        # accumulates U h into its own slice in place (addmm_: no copy of the projection per step).
        zs = torch.add(wx, b_g, out=_lease(ctx, wx, (T, B, H)))
        cs = _lease(ctx, wx, (T, B, H))
        av = _lease(ctx, wx, (T, B, H))  # h_{t-1} - sz*c_t, needed again by the backward
        # unbind once: per-step tensor indexing (select) costs more than the small ops themselves
        hl, zl, cl, al = hs.unbind(0), zs.unbind(0), cs.unbind(0), av.unbind(0)
        ut, rt, tmp = _recurrent_operands(u_left, u_right, wx, B)
        for t in range(T):
            h, z, c, a = hl[t], zl[t], cl[t], al[t]
            _recurrent_(z, h, ut, rt, tmp)
            update_step(z, delta, c)
            g_fwd(z)
            # h' = z*h + (sz*(1-z) + sn)*c  ==  z*(h - sz*c) + (sz + sn)*c
            torch.add(h, c, alpha=-sz / c_scale, out=a)  # h - sz*c
            if k > 0:
                torch.addcmul(c, a, z, out=hl[t + 1])
            else:
                torch.mul(a, z, out=hl[t + 1])
        ctx.save_for_backward(hs, zs, cs, av, u_left, u_right, zeta, nu)
        ctx.nl = (gate, update)
        ctx.c_scale = c_scale  # the saved cs hold c_scale * c
        # An unused output's gradient arrives as None, not as a materialized zero tensor: a classifier on the
        # final state then costs the backward no (T, B, H) zeros and no per-step add.
        ctx.set_materialize_grads(False)
        return hs[1:], hs[T].clone()  # the final state as its own (B, H) tensor (not a view of the sequence)

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dh_last):
        hs, Z, C, A, u_left, u_right, zeta, nu = ctx.saved_tensors
        gate, update = ctx.nl
        T, B, H = Z.shape
        if T == 0:  # h_last is h0 itself
            dh0 = dh_last if dh_last is not None else torch.zeros_like(hs[0])
            return torch.zeros_like(Z), dh0, None, None, None, None, None, None, None, None
        sz_t, sz = _scalar(zeta)
        sn_t, sn = _scalar(nu)
        h_prev = hs[:-1]
        # Everything independent of the carried gradient, for all steps at once, in scratch buffers (kept
        # between calls), five passes; the saved tensors are never written: retain_graph may reuse them.
        kg = _DERIV[gate](Z, _scratch("kg", Z)).mul_(A)  # d h_t / d pre_gate = (h_{t-1} - sz*c) * f_g'
        # k = kg + ku with ku = d h_t / d pre_update = f_u'(c) * (sz + sn - sz*z)
        GZ = torch.add(_full(Z, sz + sn), Z, alpha=-sz, out=_scratch("gz", Z))  # (free until the loop)
        k = _DERIV[update](C, _scratch("k", Z), ctx.c_scale)
        torch.addcmul(kg, k, GZ, out=k)
        G = _scratch("g", Z)  # dL/dh_t
        # GZ: dL/dh_t * z_t (the direct path to h_{t-1}; reused for d zeta)
        DP = torch.empty_like(Z)  # dL/d(Wx_t + U h_{t-1}) (shared by both gates) = grad of wx: returned
        gl, gzl, dpl, kl, zl = G.unbind(0), GZ.unbind(0), DP.unbind(0), k.unbind(0), Z.unbind(0)
        dl = None if dhs is None else dhs.unbind(0)
        # G[t] = dL/dh_t: the gradient carried back from step t+1 is written straight into G[t-1] by the
        # step's matrix product (no per-step allocation), plus the direct gradient dhs[t-1] where there is one.
        if dl is None:
            gl[T - 1].zero_()
        else:
            gl[T - 1].copy_(dl[T - 1])
        if dh_last is not None:
            gl[T - 1].add_(dh_last)
        dense = u_right is None
        carry = None
        for t in range(T - 1, -1, -1):
            g = gl[t]
            dp = torch.mul(g, kl[t], out=dpl[t])
            gz = torch.mul(g, zl[t], out=gzl[t])
            # dL/dh_{t-1} = dL/dh_t * z_t + dp @ U  (into G[t-1], or the gradient of h0 after step 0)
            carry = torch.addmm(gz, dp if dense else dp @ u_left, u_left if dense else u_right,
                                out=gl[t - 1] if t else None)
            if t and dl is not None:
                carry.add_(dl[t - 1])
        need = ctx.needs_input_grad
        d_left = d_right = db_g = db_u = dzeta = dnu = None
        if need[2] or need[3]:
            d_left, d_right = _weight_grads(_rows(DP), _rows(h_prev), u_left, u_right)
        if need[4] or need[5]:
            db_g = _colsum(kg.mul_(G))
            db_u = _colsum(DP) - db_g
        if need[6] or need[7]:
            gc = _dot(G, C) / ctx.c_scale  # sum g*c           -> d/d sigmoid(nu)
            gcz = _dot(GZ, C) / ctx.c_scale  # sum g*c*z       -> d/d sigmoid(zeta) = sum g*c*(1-z)
            dzeta = ((gc - gcz) * sz_t * (1 - sz_t)).reshape(zeta.shape)
            dnu = (gc * sn_t * (1 - sn_t)).reshape(nu.shape)
        return DP, carry, d_left, d_right, db_g, db_u, dzeta, dnu, None, None


class _FastRNNScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, wxb, h0, u_left, u_right, alpha, beta, update):
        T, B, H = wxb.shape
        u_fwd = _NONLIN[update][0]
        _, sa = _scalar(alpha)
        _, sb = _scalar(beta)
        hs = wxb.new_empty(T + 1, B, H)
        hs[0] = h0
        cs = wxb.new_empty(T, B, H)
        ut, rt, tmp = _recurrent_operands(u_left, u_right, wxb, B)
        for t in range(T):
            h = hs[t]
            c = cs[t]
            _recurrent_(c.copy_(wxb[t]), h, ut, rt, tmp)
            u_fwd(c)
            torch.mul(h, sb, out=hs[t + 1]).add_(c, alpha=sa)  # h' = sa*c + sb*h
        ctx.save_for_backward(hs, cs, u_left, u_right, alpha, beta)
        ctx.nl = update
        return hs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs):
        hs, C, u_left, u_right, alpha, beta = ctx.saved_tensors
        T, B, H = C.shape
        sa_t, sa = _scalar(alpha)
        sb_t, sb = _scalar(beta)
        h_prev = hs[:-1]
        k = _NONLIN[ctx.nl][1](C).mul_(sa)
        G = torch.empty_like(C)
        DP = torch.empty_like(C)
        carry = torch.zeros_like(hs[0])
        dense = u_right is None
        for t in range(T - 1, -1, -1):
            g = torch.add(dhs[t], carry, out=G[t])
            dp = torch.mul(g, k[t], out=DP[t])
            # carry = sb*g + dp @ U  (addmm's beta does the scalar multiply for free)
            carry = torch.addmm(g, dp if dense else dp @ u_left, u_left if dense else u_right, beta=sb)
        need = ctx.needs_input_grad
        d_left = d_right = dalpha = dbeta = None
        if need[2] or need[3]:
            d_left, d_right = _weight_grads(_rows(DP), _rows(h_prev), u_left, u_right)
        if need[4]:
            dalpha = (_dot(G, C) * sa_t * (1 - sa_t)).reshape(alpha.shape)
        if need[5]:
            dbeta = (torch.dot(G.reshape(-1), h_prev.reshape(-1)) * sb_t * (1 - sb_t)).reshape(beta.shape)
        return DP, carry, d_left, d_right, dalpha, dbeta, None


def fastgrnn_scan(wx, h0, u_left, u_right, bias_gate, bias_update, zeta, nu, gate="sigmoid", update="tanh"):
    """Run FastGRNN over a whole sequence with a hand-written backward (see :func:`fastgrnn_scan_final`).

    Returns:
        (T, B, H) hidden state after every step.
    """
    return fastgrnn_scan_final(wx, h0, u_left, u_right, bias_gate, bias_update, zeta, nu, gate, update)[0]


def fastgrnn_scan_final(wx, h0, u_left, u_right, bias_gate, bias_update, zeta, nu, gate="sigmoid",
                        update="tanh"):
    """Run FastGRNN over a whole sequence with a hand-written backward; also return the final state.

    Args:
        wx: (T, B, H) input projection ``x_t @ W^T`` for every step (time-major).
        h0: (B, H) initial state.
        u_left, u_right: the recurrent matrix, dense ``U = u_left`` (H, H) with ``u_right=None``, or
            factored ``U = u_left @ u_right`` with u_left (H, r), u_right (r, H).
        bias_gate, bias_update: (H,). zeta, nu: (1,) raw (pre-sigmoid) scalars.
        gate, update: names in ``KERNEL_NONLINEARITIES``.

    Returns:
        ``(hs, h_last)``: (T, B, H) hidden state after every step, and (B, H) the one after the last step as its
        own tensor. Use ``h_last`` where only the final state matters (a classifier on it): the backward then
        skips the sequence's (all zero) gradient.
    """
    return _FastGRNNScan.apply(
        wx, h0, u_left, u_right, bias_gate, bias_update, zeta, nu, gate, update
    )


def fastrnn_scan(wxb, h0, u_left, u_right, alpha, beta, update="tanh"):
    """Run FastRNN (``h' = sigmoid(alpha)*f(Wx + Uh + b) + sigmoid(beta)*h``) over a sequence.

    Args:
        wxb: (T, B, H) input projection with the bias already added. h0: (B, H).
        u_left, u_right: dense ``U`` (u_right None) or factors, as in :func:`fastgrnn_scan`.
        alpha, beta: (1,) raw scalars. update: name in ``KERNEL_NONLINEARITIES``.

    Returns:
        (T, B, H) hidden state after every step.
    """
    return _FastRNNScan.apply(wxb, h0, u_left, u_right, alpha, beta, update)


# ---------------------------------------------------------------------------------------------------
# Inference: no autograd, no saved buffers, the projection overwritten by the outputs
# ---------------------------------------------------------------------------------------------------
def _recurrent_operands(u_left: torch.Tensor, u_right: torch.Tensor | None, like: torch.Tensor, batch: int):
    """``(u_t, r_t, tmp)`` for :func:`_recurrent_`: ``U^T`` and ``None`` for a dense ``U = u_left``, or the factors
    ``left^T``, ``right^T`` of ``U = left @ right`` and a reused (batch, r) buffer for ``h @ right^T``."""
    if u_right is None:
        return u_left.t(), None, None
    return u_left.t(), u_right.t(), like.new_empty(batch, u_right.shape[0])


def _recurrent_(z: torch.Tensor, h: torch.Tensor, u_t: torch.Tensor, r_t: torch.Tensor | None, tmp) -> None:
    """``z += h @ U^T`` in place: dense (``u_t`` = U^T (H, H)) or factored (``r_t`` = right^T (H, r),
    ``u_t`` = left^T (r, H)); ``addmm_`` accumulates into ``z`` itself (no copy of the projection)."""
    if r_t is None:
        z.addmm_(h, u_t)
    else:
        z.addmm_(torch.mm(h, r_t, out=tmp), u_t)


class GRNNGates(NamedTuple):
    """What FastGRNN's pointwise part needs besides the pre-activation, computed once (see
    :func:`fastgrnn_gates`): the update pre-activation is ``pre_scale*z + d``, its nonlinearity ``u_fwd``
    gives ``s`` with ``k*c = k_offset + k_scale*s``; ``ratio`` = sz/k."""

    d: torch.Tensor  # (H,)
    pre_scale: float
    u_fwd: Callable
    g_fwd: Callable
    k_offset: torch.Tensor  # (H,)
    k_scale: float
    ratio: float


@torch.no_grad()
def fastgrnn_gates(delta: torch.Tensor, zeta: torch.Tensor, nu: torch.Tensor, gate: str, update: str) -> GRNNGates:
    """The constants of FastGRNN's pointwise step for inference. delta: (H,) ``b_u - b_g``; zeta, nu: (1,) raw."""
    sz, sn = float(torch.sigmoid(zeta).reshape(-1)[0]), float(torch.sigmoid(nu).reshape(-1)[0])
    k = sz + sn
    ratio = sz / k if k > 0 else 0.0  # k == 0 only if both sigmoids underflow: then h' = z*h
    if update == "tanh" and delta.is_cpu:
        # c = tanh(p) = 2*sigmoid(2p) - 1 (see _tanh_): s = sigmoid(2z + 2*delta), k*c = 2k*s - k
        d, pre_scale, u_fwd, scale, offset = delta * 2.0, 2.0, torch.Tensor.sigmoid_, 2.0, -1.0
    else:
        d, pre_scale, u_fwd, scale, offset = delta.clone(), 1.0, _NONLIN[update][0], 1.0, 0.0
    return GRNNGates(d, pre_scale, u_fwd, _NONLIN[gate][0], torch.full_like(delta, k * offset), k * scale, ratio)


def fastgrnn_pointwise_(z: torch.Tensor, h: torch.Tensor, g: GRNNGates, s=None, kc=None, a=None) -> torch.Tensor:
    """FastGRNN's pointwise step in place: ``z`` (B, H) holds the gate pre-activation ``Wx + Uh + b_g`` on
    entry and ``h'`` on exit (returned). ``s``, ``kc``, ``a``: (B, H) scratch buffers, reused over a sequence
    (None: allocated by the ops themselves, as cheap as a separate allocation for a single step).

    ``h' = z*h + (sz*(1-z) + sn)*c`` is computed as ``z*(h - sz*c) + k*c`` (k = sz + sn) in the form
    ``addcmul(k*c, z, h - ratio*(k*c))``: four elementwise passes plus the two nonlinearities.
    """
    s = g.u_fwd(torch.add(g.d, z, alpha=g.pre_scale, out=s))
    g.g_fwd(z)
    kc = torch.add(g.k_offset, s, alpha=g.k_scale, out=kc)  # k*c
    a = torch.add(h, kc, alpha=-g.ratio, out=a)  # h - sz*c
    return torch.addcmul(kc, z, a, out=z)  # over the consumed gate buffer


@torch.no_grad()
def fastgrnn_infer_(steps, h0, u_t, r_t, gates: GRNNGates) -> None:
    """FastGRNN over a sequence for inference, in place: ``steps[t]`` holds the gate pre-activation
    ``x_t W^T + b_g`` (B, H) on entry and the hidden state ``h_t`` on exit.

    Args:
        steps: sequence of T (B, H) views, in time order (e.g. ``wx.unbind(1)`` of a batch-first (B, T, H)
            projection: the result is then the batch-first output, no transpose or copy).
        h0: (B, H) initial state (not modified).
        u_t, r_t: ``U^T`` (H, H) with ``r_t=None``, or the factors ``left^T`` (r, H) and ``right^T`` (H, r)
            of ``U = left @ right``.
        gates: :func:`fastgrnn_gates` of the cell.
    """
    if not steps:
        return
    B, H = steps[0].shape
    s, kc, a = (steps[0].new_empty(B, H) for _ in range(3))
    tmp = None if r_t is None else steps[0].new_empty(B, r_t.shape[1])
    h = h0
    for z in steps:
        _recurrent_(z, h, u_t, r_t, tmp)
        h = fastgrnn_pointwise_(z, h, gates, s, kc, a)


@torch.no_grad()
def fastrnn_infer_(steps, h0, u_t, r_t, alpha, beta, update="tanh") -> None:
    """FastRNN over a sequence for inference, in place: ``steps[t]`` (B, H) holds ``x_t W^T + b`` on
    entry and ``h_t = sa*f(x_t W^T + b + U h_{t-1}) + sb*h_{t-1}`` on exit. ``u_t``/``r_t`` as in
    :func:`fastgrnn_infer_`; alpha, beta: (1,) raw scalars."""
    if not steps:
        return
    u_fwd = _NONLIN[update][0]
    sa, sb = float(torch.sigmoid(alpha.detach()).reshape(-1)[0]), float(torch.sigmoid(beta.detach()).reshape(-1)[0])
    tmp = None if r_t is None else steps[0].new_empty(steps[0].shape[0], r_t.shape[1])
    h = h0
    for z in steps:
        _recurrent_(z, h, u_t, r_t, tmp)
        u_fwd(z).mul_(sa).add_(h, alpha=sb)
        h = z
