"""Mamba-2's state space dual (SSD) scan with an initial state and a final state.

Per head ``h`` (with group ``g = h // (H / G)`` sharing B and C), scalar decay ``a_t = dt_t * A_h``:

    state_t = exp(a_t) * state_{t-1} + dt_t * x_t B_t^T        (state: (p, n))
    y_t     = state_t C_t + D_h * x_t

The reference computes this the way the SSD paper does: the sequence is cut into chunks; inside a
chunk the outputs come from a masked quadratic form (the "attention" view), and the chunk-end
states are passed from chunk to chunk by the recurrence.  It is exact in float64 and
differentiable with respect to every input, the initial state included.  The GPU path is
mamba-ssm's Triton ``mamba_chunk_scan_combined``, except for a sequence of one chunk from the zero
state (the reduced study's training steps), which ``lengthgen.ops.triton.ssd_one_chunk`` computes as
the chunk's quadratic form alone, without the chunk states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import kernel_unavailable_reason, state_dtype, use_kernel

# A single mamba-ssm kernel call indexes its tensors with int32; past ~2^31 elements in one tensor
# it overflows (state-spaces/mamba issue #1015, seen beyond ~61k tokens at 1B-model sizes).  Longer
# inputs are run as consecutive segments with the state carried, which is exact.  The bound keeps
# every (b, l, h, max(p, n)) tensor of a segment under 2^30 elements, a 2x margin.
_KERNEL_MAX_ELEMENTS = 2**30


def _check_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D, dt_bias, initial_state) -> None:
    if x.dim() != 4:
        raise ValueError(f"ssd_scan: x must be (batch, length, heads, headdim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if tuple(dt.shape) != (b, l, h):
        raise ValueError(f"ssd_scan: dt must be (batch, length, heads) = {(b, l, h)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (h,):
        raise ValueError(f"ssd_scan: A must be (heads,) = ({h},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l) or B.shape != C.shape:
        raise ValueError(
            f"ssd_scan: B and C must both be (batch, length, groups, dstate) with batch, length = {(b, l)}, "
            f"got B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"ssd_scan: the number of groups ({g}) must divide the number of heads ({h})")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and tuple(t.shape) != (h,):
            raise ValueError(f"ssd_scan: {name} must be (heads,) = ({h},), got {tuple(t.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (b, h, p, n):
        raise ValueError(
            f"ssd_scan: initial_state must be (batch, heads, headdim, dstate) = {(b, h, p, n)}, "
            f"got {tuple(initial_state.shape)}"
        )


def _segsum_exp(a: Tensor) -> Tensor:
    """exp(sum_{j=s+1..t} a_j) for s <= t and 0 above the diagonal, over the last dim (stable form)."""
    L = a.shape[-1]
    a = a.unsqueeze(-1).expand(*a.shape, L)  # [..., j, s] = a_j
    strictly_lower = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device), diagonal=-1)
    a = a.masked_fill(~strictly_lower, 0.0)
    seg = torch.cumsum(a, dim=-2)  # [..., t, s] = sum_{s < j <= t} a_j
    lower = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device))
    return torch.exp(seg.masked_fill(~lower, float("-inf")))


def ssd_scan_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    chunk_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Plain-torch chunked SSD; arithmetic in float64 for float64 inputs, else float32."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    cdt = state_dtype(x, dt, A, B, C, D, dt_bias, initial_state)
    out_dtype = x.dtype
    x, dt, A, B, C = (t.to(cdt) for t in (x, dt, A, B, C))
    if dt_bias is not None:
        dt = dt + dt_bias.to(cdt)
    if dt_softplus:
        dt = F.softplus(dt)
    B = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    C = C.repeat_interleave(h // g, dim=2)

    # Pad to whole chunks: a padded step has dt = 0 (no decay) and x = 0 (no input), so the final
    # state is unchanged and the padded outputs are cut off below.
    L = max(1, min(chunk_size, l))
    pad = (-l) % L
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (l + pad) // L
    xdt = (x * dt.unsqueeze(-1)).view(b, c, L, h, p)
    Bc, Cc = B.view(b, c, L, h, n), C.view(b, c, L, h, n)
    a = (dt * A).view(b, c, L, h).permute(0, 3, 1, 2)  # (b, h, c, L)
    a_cs = torch.cumsum(a, dim=-1)

    # 1. inside each chunk: y_t = sum_{s <= t} (C_t . B_s) exp(a_{s+1..t}) dt_s x_s
    decay = _segsum_exp(a)  # (b, h, c, L, L)
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, decay, xdt)

    # 2. each chunk's own contribution to its end state
    to_end = torch.exp(a_cs[..., -1:] - a_cs)  # (b, h, c, L)
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, to_end, xdt)

    # 3. pass states across chunks: S_c = exp(sum a over chunk c) S_{c-1} + chunk_states_c
    state = (
        torch.zeros(b, h, p, n, dtype=cdt, device=x.device) if initial_state is None else initial_state.to(cdt)
    )
    chunk_decay = torch.exp(a_cs[..., -1])  # (b, h, c)
    starts = []
    for i in range(c):
        starts.append(state)
        state = chunk_decay[:, :, i, None, None] * state + chunk_states[:, i]
    starts = torch.stack(starts, dim=1)  # (b, c, h, p, n): the state entering each chunk

    # 4. the entering state's contribution to each output: C_t exp(a_{chunk start..t}) S_in
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, starts, torch.exp(a_cs))
    y = y.reshape(b, c * L, h, p)[:, :l]
    if D is not None:
        y = y + x[:, :l] * D.to(cdt)[:, None]
    return y.to(out_dtype), state


def _kernel_segment_length(b: int, h: int, p: int, n: int, chunk_size: int) -> int:
    """The longest multiple of ``chunk_size`` tokens one kernel call can index safely."""
    per_token = b * h * max(p, n)
    return max(chunk_size, (_KERNEL_MAX_ELEMENTS // per_token) // chunk_size * chunk_size)


def _ssd_kernel(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state, chunk_size) -> tuple[Tensor, Tensor]:
    from lengthgen.ops._mamba_import import mamba_chunk_scan_combined

    scan = mamba_chunk_scan_combined()
    b, l, h, p = x.shape
    n = B.shape[-1]
    seg = _kernel_segment_length(b, h, p, n, chunk_size)
    state = None if initial_state is None else initial_state.float()
    ys = []
    for start in range(0, l, seg):
        s = slice(start, min(l, start + seg))
        y, state = scan(
            x[:, s], dt[:, s], A, B[:, s], C[:, s], chunk_size,
            D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
            initial_states=state, return_final_states=True,
        )  # fmt: skip
        ys.append(y)
    return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)), state.float()


def _one_chunk(x: Tensor, B: Tensor, chunk_size: int, initial_state) -> bool:
    """Whether the call is one chunk from the zero state that lengthgen's one-chunk kernel takes."""
    if initial_state is not None or kernel_unavailable_reason("triton_ssd_one_chunk"):
        return False
    from lengthgen.ops.triton.ssd_one_chunk import fits

    return fits(x, B, chunk_size, initial_state)


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    chunk_size: int = 256,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Mamba-2 SSD scan.

    x (b, l, h, p), dt (b, l, h), A (h,), B/C (b, l, g, n) with g dividing h, D and dt_bias (h,),
    initial_state (b, h, p, n) or None for zeros.  ``dt`` becomes ``softplus(dt + dt_bias)`` when
    ``dt_softplus`` (else ``dt + dt_bias``).  Returns y (b, l, h, p) in x's dtype and the final
    state (b, h, p, n) in float32 (float64 for float64 inputs).
    """
    _check_shapes(x, dt, A, B, C, D, dt_bias, initial_state)
    if chunk_size < 1:
        raise ValueError(f"ssd_scan: chunk_size must be a positive integer, got {chunk_size}")
    if x.shape[1] == 0:
        raise ValueError("ssd_scan: the sequence is empty (length 0)")
    if use_kernel(backend, "mamba_ssd", x, dt, A, B, C, D, dt_bias, initial_state):
        if _one_chunk(x, B, chunk_size, initial_state):
            from lengthgen.ops.triton.ssd_one_chunk import ssd_one_chunk

            return ssd_one_chunk(x, dt, A, B, C, D, dt_bias, dt_softplus)
        return _ssd_kernel(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state, chunk_size)
    return ssd_scan_reference(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state, chunk_size)
