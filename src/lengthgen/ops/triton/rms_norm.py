"""RMSNorm and LayerNorm over blocks of rows: plain, gated (Mamba-2's, GLA's and RWKV-6's output
norms), grouped, with a residual add; Triton forward and backward.

Per row (and per group of G channels, G = D without groups), in float32 whatever the input dtype:

    h = x                       or, with a residual:  h = residual + x  (float32, returned as s)
    u = h * silu(z)             with a gate before the norm (norm_before_gate=False), else u = h
    u = u - mean(u)             LayerNorm only
    rstd = 1 / sqrt(mean(u^2) + eps),   n = u * rstd * weight (+ bias, LayerNorm)
    y = n, or n * silu(z) with the gate after the norm (norm_before_gate=True: GLA's, RWKV-6's)   (y in x's dtype)

backward, with uhat = u * rstd and dy the gradient of y (ds that of s, when given):

    gate after the norm:  dz = dy * n * sig(z) * (1 + z (1 - sig(z))),  then dy <- dy * silu(z)
    dweight = sum over rows of dy * uhat,   dbias = sum over rows of dy
    du = rstd * (w dy - uhat * mean(uhat * w dy) [- mean(w dy), LayerNorm])
    dh = du * silu(z),   dz = du * h * sig(z) * (1 + z (1 - sig(z)))       (gate before; else dh = du)
    dx = dh + ds,   dresidual = dh + ds                                    (dx in x's dtype, dresidual in float32)

The references are ``lengthgen.ops.norm.rms_norm_reference`` / ``layer_norm_reference`` (and
``residual + x`` before them). Saved for the backward: the inputs (x and z; with a residual the
float32 sum s instead of x and the residual, since the backward reads only s) and the per-row,
per-group rstd (and mean) in float32; u, uhat and y are recomputed.

Tiling: a program holds BT rows x BG = next_power_of_2(G) channels (one whole group, G <= 1024),
so a row's reduction is one in-register sum and each load moves BT rows at once (one row per
program is latency-bound at the models' widths, 192-384). The forward runs one row block per
program; the backward runs each program over ``rows_per_program`` consecutive rows in blocks of
BT, adds dy * uhat (and dy, for the bias) into (BT, BG) float32 tiles and writes their column sums
as one row of float32 partial sums (NP, D), which torch adds up.

Determinism: the tile sizes and warp counts follow from G alone (:func:`fwd_config`,
:func:`bwd_config`; no autotuning) and the backward's program count from the row count alone
(:func:`rows_per_program`; not the GPU's SM count), so every reduction runs in the same order
for the same inputs: gradients are bit-identical across calls and processes (resumes stay exact).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

MAX_WIDTH = 1024                    # channels one program holds (the group size, D without groups)
FWD_TILE_ELEMENTS = 8192            # forward tile: BT * BG at most this (BT <= FWD_MAX_ROWS)
BWD_TILE_ELEMENTS = 4096            # backward tile: smaller, it keeps about twice as many tiles live
FWD_MAX_ROWS, BWD_MAX_ROWS = 128, 64
MAX_BWD_PROGRAMS = 1024             # per group: bounds the (NP, D) partial sums of dweight
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _config(g: int, elements: int, max_rows: int) -> tuple[int, int, int]:
    bg = triton.next_power_of_2(g)
    bt = max(1, min(max_rows, elements // bg))
    return bt, bg, max(1, min(8, bt * bg // 1024))       # 8 warps (32 elements a thread) from 8192 up


def fwd_config(g: int) -> tuple[int, int, int]:
    """(BT, BG, num_warps) of the forward for groups of ``g`` channels: tiles of 8192 elements
    (32 rows x 256 at D = 192, 16 x 512 at D = 384), 8 warps."""
    return _config(g, FWD_TILE_ELEMENTS, FWD_MAX_ROWS)


def bwd_config(g: int) -> tuple[int, int, int]:
    """(BT, BG, num_warps) of the backward: tiles of 4096 elements (16 x 256 at D = 192), with
    warps as for the forward (8 at 4096 elements: 16 a thread and tile)."""
    bt, bg, _ = _config(g, BWD_TILE_ELEMENTS, BWD_MAX_ROWS)
    return bt, bg, max(1, min(8, bt * bg // 512))


def rows_per_program(rows: int) -> int:
    """Rows one backward program runs over: a power of two >= 64 (so a multiple of any backward
    BT), the smallest that keeps the programs at most ``MAX_BWD_PROGRAMS`` per group. From the
    row count only, so the dweight sums do not depend on the GPU."""
    return max(BWD_MAX_ROWS, triton.next_power_of_2(triton.cdiv(rows, MAX_BWD_PROGRAMS)))


@triton.jit
def _fwd_kernel(x_ptr, z_ptr, r_ptr, w_ptr, b_ptr, y_ptr, s_ptr, mean_ptr, rstd_ptr, M, G, NG, sx, sz, sr, eps,
                IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, GATE_AFTER: tl.constexpr,
                HAS_RES: tl.constexpr, BT: tl.constexpr, BG: tl.constexpr):
    """One block of BT rows, one group: y (rows, D) in y's dtype, s = residual + x (float32),
    rstd (and for a LayerNorm the mean) (rows, NG)."""
    g = tl.program_id(1)
    rows = tl.program_id(0).to(tl.int64) * BT + tl.arange(0, BT)
    cols = tl.arange(0, BG)
    mr = rows < M
    mc = cols < G
    m = mr[:, None] & mc[None, :]
    c = g * G + cols                                                   # channels in [0, D)
    D = NG * G
    h = tl.load(x_ptr + rows[:, None] * sx + c[None, :], mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        h += tl.load(r_ptr + rows[:, None] * sr + c[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(s_ptr + rows[:, None] * D + c[None, :], h, mask=m)
    u = h
    if HAS_Z:
        zz = tl.load(z_ptr + rows[:, None] * sz + c[None, :], mask=m, other=0.0).to(tl.float32)
        if not GATE_AFTER:
            u = h * zz * tl.sigmoid(zz)
    if not IS_RMS:
        mean = tl.sum(u, axis=1) / G
        tl.store(mean_ptr + rows * NG + g, mean, mask=mr)
        u = tl.where(m, u - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(u * u, axis=1) / G + eps)              # padded channels hold 0
    tl.store(rstd_ptr + rows * NG + g, rstd, mask=mr)
    w = tl.load(w_ptr + c, mask=mc, other=0.0).to(tl.float32)
    y = u * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + c, mask=mc, other=0.0).to(tl.float32)[None, :]
    if HAS_Z:
        if GATE_AFTER:
            y = y * zz * tl.sigmoid(zz)
    tl.store(y_ptr + rows[:, None] * D + c[None, :], y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _bwd_kernel(h_ptr, z_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, dy_ptr, ds_ptr, dx_ptr, dz_ptr, dr_ptr, dw_ptr,
                db_ptr, M, G, NG, sh, sz, sdy, sds,
                IS_RMS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, GATE_AFTER: tl.constexpr,
                HAS_RES: tl.constexpr, HAS_DS: tl.constexpr, BT: tl.constexpr, BG: tl.constexpr,
                RPP: tl.constexpr):
    """RPP consecutive rows (blocks of BT), one group: dx, dz, dresidual per block and this
    program's row of dweight (and dbias) partial sums. h is x, or the saved sum s with a residual."""
    p = tl.program_id(0)
    g = tl.program_id(1)
    cols = tl.arange(0, BG)
    mc = cols < G
    c = g * G + cols
    D = NG * G
    w = tl.load(w_ptr + c, mask=mc, other=0.0).to(tl.float32)
    acc = tl.zeros((BT, BG), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + c, mask=mc, other=0.0).to(tl.float32)
        acc_b = tl.zeros((BT, BG), dtype=tl.float32)
    for i in range(0, RPP, BT):
        rows = p.to(tl.int64) * RPP + i + tl.arange(0, BT)
        mr = rows < M
        m = mr[:, None] & mc[None, :]
        h = tl.load(h_ptr + rows[:, None] * sh + c[None, :], mask=m, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * sdy + c[None, :], mask=m, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows * NG + g, mask=mr, other=0.0)
        u = h
        if HAS_Z:
            zz = tl.load(z_ptr + rows[:, None] * sz + c[None, :], mask=m, other=0.0).to(tl.float32)
            sg = tl.sigmoid(zz)
            if not GATE_AFTER:
                u = h * zz * sg
        if not IS_RMS:
            mean = tl.load(mean_ptr + rows * NG + g, mask=mr, other=0.0)
            u = tl.where(m, u - mean[:, None], 0.0)
        uhat = u * rstd[:, None]
        if HAS_Z:
            if GATE_AFTER:                                             # y = (uhat * w + b) * silu(z)
                n = uhat * w[None, :]
                if HAS_BIAS:
                    n += bias[None, :]
                tl.store(dz_ptr + rows[:, None] * D + c[None, :],
                         (dy * n * sg * (1.0 + zz * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=m)
                dy = dy * zz * sg
        acc += dy * uhat                                               # 0 outside the rows and channels
        if HAS_BIAS:
            acc_b += dy
        wdy = dy * w[None, :]
        c1 = tl.sum(uhat * wdy, axis=1) / G
        if IS_RMS:
            dh = (wdy - uhat * c1[:, None]) * rstd[:, None]
        else:
            c2 = tl.sum(wdy, axis=1) / G
            dh = tl.where(m, (wdy - uhat * c1[:, None] - c2[:, None]) * rstd[:, None], 0.0)
        if HAS_Z:
            if not GATE_AFTER:
                tl.store(dz_ptr + rows[:, None] * D + c[None, :],
                         (dh * h * sg * (1.0 + zz * (1.0 - sg))).to(dz_ptr.dtype.element_ty), mask=m)
                dh = dh * zz * sg
        if HAS_DS:
            dh += tl.load(ds_ptr + rows[:, None] * sds + c[None, :], mask=m, other=0.0).to(tl.float32)
        tl.store(dx_ptr + rows[:, None] * D + c[None, :], dh.to(dx_ptr.dtype.element_ty), mask=m)
        if HAS_RES:
            tl.store(dr_ptr + rows[:, None] * D + c[None, :], dh.to(dr_ptr.dtype.element_ty), mask=m)
    tl.store(dw_ptr + p * D + c, tl.sum(acc, axis=0), mask=mc)
    if HAS_BIAS:
        tl.store(db_ptr + p * D + c, tl.sum(acc_b, axis=0), mask=mc)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    """t as is when its channels are adjacent (rows may be strided: a slice of a projection), else a copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


class _Norm(torch.autograd.Function):
    """x (rows, D), weight (D,), bias (D,) or None (LayerNorm only), z (x's shape) or None, residual
    (x's shape) or None, groups of ``group_size``: y, or (y, s) with a residual. ``gate_after``: the
    gate multiplies the norm's output (norm_before_gate=True) instead of its input; ``rms``: RMSNorm,
    else LayerNorm. Inputs' channels must be adjacent (stride 1)."""

    @staticmethod
    def forward(ctx, x, weight, bias, z, residual, eps, group_size, gate_after, rms):
        rows, d = x.shape
        ng = d // group_size
        y = torch.empty(rows, d, dtype=x.dtype, device=x.device)
        s = torch.empty(rows, d, dtype=torch.float32, device=x.device) if residual is not None else None
        rstd = torch.empty(rows, ng, dtype=torch.float32, device=x.device)
        mean = None if rms else torch.empty(rows, ng, dtype=torch.float32, device=x.device)
        if rows:
            bt, bg, warps = fwd_config(group_size)
            _fwd_kernel[(triton.cdiv(rows, bt), ng)](
                x, x if z is None else z, x if residual is None else residual, weight,
                weight if bias is None else bias, y, y if s is None else s, rstd if mean is None else mean,
                rstd, rows, group_size, ng, x.stride(0), 0 if z is None else z.stride(0),
                0 if residual is None else residual.stride(0), eps,
                IS_RMS=rms, HAS_BIAS=bias is not None, HAS_Z=z is not None, GATE_AFTER=gate_after,
                HAS_RES=residual is not None, BT=bt, BG=bg, num_warps=warps)
        ctx.save_for_backward(x if s is None else s, weight, bias, z, mean, rstd)
        ctx.group_size, ctx.x_dtype, ctx.gate_after, ctx.rms = group_size, x.dtype, gate_after, rms
        ctx.residual_dtype = None if residual is None else residual.dtype
        ctx.set_materialize_grads(False)
        return y if s is None else (y, s)

    @staticmethod
    def backward(ctx, dy, ds=None):
        h, weight, bias, z, mean, rstd = ctx.saved_tensors
        rows, d = h.shape
        g = ctx.group_size
        ng = d // g
        has_res = ctx.residual_dtype is not None
        dy = torch.zeros(rows, d, dtype=ctx.x_dtype, device=h.device) if dy is None else _unit_stride(dy)
        ds = None if ds is None else _unit_stride(ds)
        dx = torch.empty(rows, d, dtype=ctx.x_dtype, device=h.device)
        dz = None if z is None else torch.empty(rows, d, dtype=z.dtype, device=h.device)
        dr = torch.empty(rows, d, dtype=ctx.residual_dtype, device=h.device) if has_res else None
        rpp = rows_per_program(rows)
        npr = triton.cdiv(rows, rpp)
        dw = torch.empty(npr, d, dtype=torch.float32, device=h.device)   # every (program, group) writes its slice
        db = None if bias is None else torch.empty(npr, d, dtype=torch.float32, device=h.device)
        if rows:
            bt, bg, warps = bwd_config(g)
            _bwd_kernel[(npr, ng)](
                h, h if z is None else z, weight, weight if bias is None else bias, rstd if mean is None else mean,
                rstd, dy, dy if ds is None else ds, dx, dx if dz is None else dz, dx if dr is None else dr, dw,
                dw if db is None else db, rows, g, ng, h.stride(0), 0 if z is None else z.stride(0), dy.stride(0),
                0 if ds is None else ds.stride(0),
                IS_RMS=ctx.rms, HAS_BIAS=bias is not None, HAS_Z=z is not None, GATE_AFTER=ctx.gate_after,
                HAS_RES=has_res, HAS_DS=ds is not None, BT=bt, BG=bg, RPP=rpp, num_warps=warps)
        dbias = None if db is None else db.sum(0).to(bias.dtype)
        return dx, dw.sum(0).to(weight.dtype), dbias, dz, dr, None, None, None, None


def _check(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, group_size: int) -> None:
    d = x.shape[-1]
    if group_size < 1 or d % group_size:
        raise ValueError(f"{op}: {d} channels are not a whole number of groups of {group_size}")
    if group_size > MAX_WIDTH:
        raise ValueError(f"{op}: the Triton norm takes groups (the whole dim without groups) of at most "
                         f"{MAX_WIDTH} channels, got {group_size}; use mamba-ssm's kernel or backend='torch'")
    if weight.shape != (d,) or (bias is not None and bias.shape != (d,)):
        raise ValueError(f"{op}: weight{'' if bias is None else ' and bias'} must have shape ({d},), got "
                         f"{tuple(weight.shape)}{'' if bias is None else f' and {tuple(bias.shape)}'}")
    if x.dtype not in DTYPES:
        raise ValueError(f"{op}: x must be float32, float16 or bfloat16, got {x.dtype}")


def _norm(op: str, x, weight, bias, eps, z, group_size, gate_after, rms) -> torch.Tensor:
    d = x.shape[-1]
    g = group_size or d
    _check(op, x, weight, bias, g)
    if z is not None and z.shape != x.shape:
        raise ValueError(f"{op}: the gate z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    z2 = None if z is None else _unit_stride(z.reshape(-1, d))
    y = _Norm.apply(_unit_stride(x.reshape(-1, d)), weight.contiguous(), None if bias is None else bias.contiguous(),
                    z2, None, eps, g, bool(gate_after and z is not None), rms)
    return y.reshape(x.shape)


def _add_norm(op: str, x, residual, weight, bias, eps, rms) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[-1]
    _check(op, x, weight, bias, d)
    if residual.shape != x.shape:
        raise ValueError(f"{op}: the residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    y, s = _Norm.apply(_unit_stride(x.reshape(-1, d)), weight.contiguous(), None if bias is None else bias.contiguous(),
                       None, _unit_stride(residual.reshape(-1, d)), eps, d, False, rms)
    return y.reshape(x.shape), s.reshape(x.shape)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, z: torch.Tensor | None = None,
                    group_size: int | None = None, norm_before_gate: bool = False) -> torch.Tensor:
    """``rmsnorm(x) * weight``, or with a gate ``rmsnorm(x * silu(z)) * weight`` (norm_before_gate=False)
    or ``rmsnorm(x) * weight * silu(z)`` (norm_before_gate=True), over groups of ``group_size``
    channels (None: all d); x (..., d), z x's shape; y in x's dtype."""
    return _norm("rms_norm_triton", x, weight, None, eps, z, group_size, norm_before_gate, True)


def layer_norm_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
                      z: torch.Tensor | None = None, group_size: int | None = None) -> torch.Tensor:
    """``layernorm(x) * weight + bias`` over groups of ``group_size`` channels (None: all d; with
    groups, a GroupNorm with per-channel weight and bias), times ``silu(z)`` if given (the gate after
    the norm: RWKV-6's output norm); x (..., d), z x's shape; y in x's dtype."""
    return _norm("layer_norm_triton", x, weight, bias, eps, z, group_size, True, False)


def add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rmsnorm(s) * weight in x's dtype, s)`` with ``s = residual + x`` in float32; x (..., d) a
    sub-block's output, ``residual`` x's shape (the float32 stream)."""
    return _add_norm("add_rms_norm_triton", x, residual, weight, None, eps, True)


def add_layer_norm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(layernorm(s) * weight + bias in x's dtype, s)`` with ``s = residual + x`` in float32."""
    return _add_norm("add_layer_norm_triton", x, residual, weight, bias, eps, False)
