"""RWKV-6's token-shift interpolations in one pass: Triton forward and backward.

With delta_t = x_{t-1} - x_t (x_{-1} = ``previous``, or 0) and m_i(t) = mu_i(t) + bias_i the
effective mu (mu static (n, D) or data-dependent (B, T, n, D)), in float32 whatever the dtypes:

    out_i(t) = x_t + delta_t * m_i(t)                        written into one (n, B, T, D) buffer

backward, with g_i the gradient of out_i:

    dd_t = sum_i g_i(t) m_i(t)                               (the gradient of delta_t)
    dx_t = sum_i g_i(t) - dd_t + dd_{t+1}       (dd_T = 0: x_t enters delta_t with -, delta_{t+1} with +)
    dprevious = dd_0,   dmu_i(t) = g_i(t) delta_t            (data-dependent mu, in mu's dtype)
    dbias_i = dmu_i (static) = sum over (b, t) of g_i(t) delta_t

The reference is ``lengthgen.ops.token_mix.token_shift_lerp_reference``. Saved for the backward:
the inputs only (delta is recomputed from x).

Tiling: a program holds BT time steps x BD channels of one sequence. The forward loads x at rows
t and t - 1 and writes the n outputs; the backward loads g and mu at rows t and t + 1 (so dd_{t+1}
is at hand without a second pass) and x at t and t - 1, and writes the column sums of its tile's
g_i delta as one row of float32 partial sums (B * cdiv(T, BT), n, D), which torch adds up.

Determinism: fixed tiles (:func:`config`, from D alone) and no atomics, so the sums run in the
same order for the same shapes: gradients are bit-identical across calls.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

ROWS = 32                           # time steps per tile
FWD_MAX_BD, BWD_MAX_BD = 128, 64    # channels per tile (the backward keeps about twice the tiles live)
NUM_WARPS = 4
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def config(d: int) -> tuple[int, int, int]:
    """(BT, BD of the forward, BD of the backward) for ``d`` channels: at D = 512 tiles of 32 x 128
    and 32 x 64 (on an H200, 33 and 78 us at B = 4, T = 2048 with five data-dependent mu)."""
    return ROWS, min(FWD_MAX_BD, triton.next_power_of_2(d)), min(BWD_MAX_BD, triton.next_power_of_2(d))


@triton.jit
def _fwd_kernel(x_ptr, prev_ptr, mu_ptr, bias_ptr, out_ptr, T, D, smb, smt, smn,
                N_MIX: tl.constexpr, DYNAMIC: tl.constexpr, HAS_PREV: tl.constexpr, HAS_BIAS: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr):
    """One tile of sequence b: out_i = x + delta * (mu_i + bias_i) for every i, into out (n, B, T, D)."""
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BT + tl.arange(0, BT)
    c = tl.program_id(2) * BD + tl.arange(0, BD)
    mc = c < D
    m = (t < T)[:, None] & mc[None, :]
    rows = b * T + t
    x = tl.load(x_ptr + rows[:, None] * D + c[None, :], mask=m, other=0.0).to(tl.float32)
    xp = tl.load(x_ptr + (rows - 1)[:, None] * D + c[None, :], mask=m & (t > 0)[:, None], other=0.0).to(tl.float32)
    if HAS_PREV:
        p = tl.load(prev_ptr + b * D + c, mask=mc, other=0.0).to(tl.float32)
        xp = tl.where((t == 0)[:, None], p[None, :], xp)
    delta = xp - x
    plane = tl.num_programs(0).to(tl.int64) * T * D                    # one output's B * T * D
    for i in tl.static_range(N_MIX):
        if DYNAMIC:
            mu = tl.load(mu_ptr + b * smb + t[:, None] * smt + i * smn + c[None, :], mask=m, other=0.0).to(tl.float32)
        else:
            mu = tl.load(mu_ptr + i * D + c, mask=mc, other=0.0).to(tl.float32)[None, :]
        if HAS_BIAS:
            mu += tl.load(bias_ptr + i * D + c, mask=mc, other=0.0).to(tl.float32)[None, :]
        out = x + delta * mu
        tl.store(out_ptr + i * plane + rows[:, None] * D + c[None, :], out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel(x_ptr, prev_ptr, mu_ptr, bias_ptr, g_ptr, dx_ptr, dprev_ptr, dmu_ptr, part_ptr, T, D, smb, smt, smn,
                N_MIX: tl.constexpr, DYNAMIC: tl.constexpr, HAS_PREV: tl.constexpr, HAS_BIAS: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr):
    """One tile of sequence b: dx, dprevious (the first tile), dmu (data-dependent mu) and this
    tile's row of partial sums of g_i delta (static mu or a bias), from g (n, B, T, D)."""
    b = tl.program_id(0).to(tl.int64)
    pt = tl.program_id(1)
    t = pt * BT + tl.arange(0, BT)
    c = tl.program_id(2) * BD + tl.arange(0, BD)
    mc = c < D
    m = (t < T)[:, None] & mc[None, :]
    mn = (t + 1 < T)[:, None] & mc[None, :]
    rows = b * T + t
    at = rows[:, None] * D + c[None, :]
    x = tl.load(x_ptr + at, mask=m, other=0.0).to(tl.float32)
    xp = tl.load(x_ptr + at - D, mask=m & (t > 0)[:, None], other=0.0).to(tl.float32)
    if HAS_PREV:
        p = tl.load(prev_ptr + b * D + c, mask=mc, other=0.0).to(tl.float32)
        xp = tl.where((t == 0)[:, None], p[None, :], xp)
    delta = xp - x
    plane = tl.num_programs(0).to(tl.int64) * T * D
    g_sum = tl.zeros((BT, BD), dtype=tl.float32)
    dd = tl.zeros((BT, BD), dtype=tl.float32)
    dd_next = tl.zeros((BT, BD), dtype=tl.float32)
    part = (b * tl.num_programs(1) + pt) * N_MIX * D
    for i in tl.static_range(N_MIX):
        g = tl.load(g_ptr + i * plane + at, mask=m, other=0.0).to(tl.float32)
        g_next = tl.load(g_ptr + i * plane + at + D, mask=mn, other=0.0).to(tl.float32)
        if DYNAMIC:
            at_mu = b * smb + t[:, None] * smt + i * smn + c[None, :]
            mu = tl.load(mu_ptr + at_mu, mask=m, other=0.0).to(tl.float32)
            mu_next = tl.load(mu_ptr + at_mu + smt, mask=mn, other=0.0).to(tl.float32)
        else:
            mu = tl.load(mu_ptr + i * D + c, mask=mc, other=0.0).to(tl.float32)[None, :]
            mu_next = mu
        if HAS_BIAS:
            bias = tl.load(bias_ptr + i * D + c, mask=mc, other=0.0).to(tl.float32)[None, :]
            mu = mu + bias
            mu_next = mu_next + bias
        g_sum += g
        dd += g * mu
        dd_next += g_next * mu_next
        dmu = g * delta                                                # 0 outside the tile's rows and channels
        if DYNAMIC:
            tl.store(dmu_ptr + at_mu, dmu.to(dmu_ptr.dtype.element_ty), mask=m)
        if not DYNAMIC or HAS_BIAS:
            tl.store(part_ptr + part + i * D + c, tl.sum(dmu, axis=0), mask=mc)
    tl.store(dx_ptr + at, (g_sum - dd + dd_next).to(dx_ptr.dtype.element_ty), mask=m)
    if HAS_PREV:
        if pt == 0:
            first = tl.sum(tl.where((t == 0)[:, None], dd, 0.0), axis=0)
            tl.store(dprev_ptr + b * D + c, first.to(dprev_ptr.dtype.element_ty), mask=mc)


def _mu_strides(mu: torch.Tensor) -> tuple[int, int, int]:
    """(b, t, i) strides of a data-dependent mu, channels adjacent: the einsum that makes the time
    mix's hands it over i-major, (n, B, T, D) in memory, and is read as it is."""
    return tuple(mu.stride()[:3]) if mu.dim() == 4 else (0, 0, mu.stride(0))


class _TokenShiftLerp(torch.autograd.Function):
    """x (B, T, D), previous (B, D) or None, mu (n, D) or (B, T, n, D), bias (n, D) or None, all
    contiguous but a data-dependent mu (any strides, channels adjacent): the n outputs stacked,
    (n, B, T, D) in ``out_dtype``."""

    @staticmethod
    def forward(ctx, x, previous, mu, bias, out_dtype):
        b, t, d = x.shape
        n = mu.shape[-2]
        out = torch.empty(n, b, t, d, dtype=out_dtype, device=x.device)
        bt, bd, _ = config(d)
        if x.numel():
            _fwd_kernel[(b, triton.cdiv(t, bt), triton.cdiv(d, bd))](
                x, x if previous is None else previous, mu, mu if bias is None else bias, out, t, d, *_mu_strides(mu),
                N_MIX=n, DYNAMIC=mu.dim() == 4, HAS_PREV=previous is not None, HAS_BIAS=bias is not None,
                BT=bt, BD=bd, num_warps=NUM_WARPS)
        ctx.save_for_backward(x, previous, mu, bias)
        return out

    @staticmethod
    def backward(ctx, g):
        x, previous, mu, bias = ctx.saved_tensors
        b, t, d = x.shape
        n = mu.shape[-2]
        dynamic = mu.dim() == 4
        bt, _, bd = config(d)
        nt = triton.cdiv(t, bt)
        g = g.contiguous()
        dx = torch.empty_like(x)
        dprev = None if previous is None else torch.empty_like(previous)
        dmu = torch.empty_strided(mu.shape, mu.stride(), dtype=mu.dtype, device=mu.device) if dynamic else None
        sums = not dynamic or bias is not None
        part = torch.empty(b * nt, n, d, dtype=torch.float32, device=x.device) if sums else None
        if x.numel():
            _bwd_kernel[(b, nt, triton.cdiv(d, bd))](
                x, x if previous is None else previous, mu, mu if bias is None else bias, g, dx,
                dx if dprev is None else dprev, dx if dmu is None else dmu, dx if part is None else part, t, d,
                *_mu_strides(mu),
                N_MIX=n, DYNAMIC=dynamic, HAS_PREV=previous is not None, HAS_BIAS=bias is not None,
                BT=bt, BD=bd, num_warps=NUM_WARPS)
        summed = None if part is None else part.sum(0)
        if not dynamic:
            dmu = summed.to(mu.dtype)
        dbias = None if bias is None else summed.to(bias.dtype)
        return dx, dprev, dmu, dbias, None


def token_shift_lerp_triton(x: torch.Tensor, previous: torch.Tensor | None, mu: torch.Tensor,
                            bias: torch.Tensor | None = None,
                            out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """The n tensors x + delta * (mu_i + bias_i) (shapes as for ``ops.token_shift_lerp``, which
    checks them), in ``out_dtype`` (None: x's dtype promoted with mu's and bias's)."""
    for name, v in (("x", x), ("previous", previous), ("mu", mu), ("bias", bias)):
        if v is not None and v.dtype not in DTYPES:
            raise ValueError(f"token_shift_lerp_triton: {name} must be float32, float16 or bfloat16, got {v.dtype}")
    if out_dtype is None:
        out_dtype = x.dtype
        for v in (previous, mu, bias):
            out_dtype = out_dtype if v is None else torch.promote_types(out_dtype, v.dtype)
    if mu.dim() == 2 or mu.stride(-1) != 1:
        mu = mu.contiguous()
    out = _TokenShiftLerp.apply(x.contiguous(), None if previous is None else previous.contiguous(), mu,
                                None if bias is None else bias.contiguous(), out_dtype)
    return out.unbind(0)
