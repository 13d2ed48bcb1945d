"""Mamba-1's selective scan with an initial state and a final state.

Per channel ``d`` and state index ``n`` (diagonal A):

    delta   = softplus(delta + delta_bias)   (each part only if requested)
    h_t     = exp(delta_t A) * h_{t-1} + delta_t B_t u_t
    y_t     = C_t . h_t + D * u_t

The reference vectorizes over (batch, channel, state) and loops over time; it is exact in float64
and differentiable with respect to every input, the initial state included.  The GPU path is the
project's Triton kernel (``lengthgen.ops.triton.selective_scan``), which computes the core
recurrence from an already-transformed delta; the bias, softplus and D skip are applied here so
both paths share them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import state_dtype, use_kernel


def _check_shapes(u, delta, A, B, C, D, delta_bias, initial_state) -> None:
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, channels, length), got shape {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must have u's shape {(b, d, l)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be (channels, dstate) with channels = {d}, got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (b, n, l):
            raise ValueError(f"selective_scan: {name} must be (batch, dstate, length) = {(b, n, l)}, got {tuple(t.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise ValueError(f"selective_scan: {name} must be (channels,) = ({d},), got {tuple(t.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (b, d, n):
        raise ValueError(
            f"selective_scan: initial_state must be (batch, channels, dstate) = {(b, d, n)}, "
            f"got {tuple(initial_state.shape)}"
        )
    if l == 0:
        raise ValueError("selective_scan: the sequence is empty (length 0)")


def selective_scan_core_reference(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The core recurrence (delta already transformed, no D) in plain torch.

    Returns y (b, d, l) and the final state (b, d, n), both in the arithmetic dtype
    (float64 for float64 inputs, else float32).
    """
    b, d, l = u.shape
    n = A.shape[1]
    cdt = state_dtype(u, delta, A, B, C, initial_state)
    u, delta, A, B, C = (t.to(cdt) for t in (u, delta, A, B, C))
    decay = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (b, d, l, n)
    inputs = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, l, n)
    h = torch.zeros(b, d, n, dtype=cdt, device=u.device) if initial_state is None else initial_state.to(cdt)
    states = []
    for t in range(l):
        h = decay[:, :, t] * h + inputs[:, :, t]
        states.append(h)
    y = torch.einsum("bdln,bnl->bdl", torch.stack(states, dim=2), C)
    return y, h


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Mamba-1 selective scan.

    u/delta (b, d, l), A (d, n), B/C (b, n, l), D and delta_bias (d,), initial_state (b, d, n) or
    None for zeros.  Returns y (b, d, l) in u's dtype and the final state (b, d, n) in float32
    (float64 for float64 inputs).
    """
    _check_shapes(u, delta, A, B, C, D, delta_bias, initial_state)
    kernel = use_kernel(backend, "triton_selective_scan", u, delta, A, B, C, D, delta_bias, initial_state)
    cdt = state_dtype(u, delta, A, B, C, D, delta_bias, initial_state)
    delta = delta.to(cdt)  # the bias and softplus in float32 (float64) for any input dtype
    if delta_bias is not None:
        delta = delta + delta_bias[:, None].to(cdt)
    if delta_softplus:
        delta = F.softplus(delta)
    if kernel:
        from lengthgen.ops.triton.selective_scan import selective_scan_triton

        y, state = selective_scan_triton(u, delta, A, B, C, initial_state)
    else:
        y, state = selective_scan_core_reference(u, delta, A, B, C, initial_state)
    y = y.to(cdt)
    if D is not None:
        y = y + u.to(cdt) * D[:, None].to(cdt)
    return y.to(u.dtype), state.to(cdt)
