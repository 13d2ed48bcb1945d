"""Mamba-2's SSD for a sequence of one chunk that starts from the zero state: Triton kernels.

When the whole sequence fits in one chunk (the reduced study trains at T = 16 and 64 with
``chunk_size`` 64) and there is no initial state, the SSD is its quadratic ("attention") form alone.
Per head, with ``a = dt * A`` and ``cs = cumsum(a)``:

    y = (C B^T  o  E  o  1 dt^T) x + D x,        E[t, s] = exp(cs_t - cs_s) for s <= t, else 0
    S = sum_s exp(cs_T - cs_s) dt_s x_s^T B_s   (the final state, (headdim, d_state))

mamba-ssm's ``mamba_chunk_scan_combined`` computes the same with its chunked kernels, which also
build, pass and read a (headdim, d_state) float32 state per chunk; at one chunk per row that state
is all zeros going in, and at the study's shapes (1,024 rows, 6 heads of 64 x 128) it is 200 MB per
layer, written and read several times forward and backward. Here:

* forward: one program per (row, head) holds that row's x, dt, B and C in registers, forms
  C B^T, the decay mask and y, and writes y and S (S once, as the caller may carry it);
* backward: one program per (row, group) runs the group's heads one after another; dB and dC,
  shared by those heads, are summed in registers and written once, and dA, dD and dt_bias are
  written per (row, head) and summed by torch afterwards. No atomics: the result is deterministic.

Everything inside is float32; in bf16/fp16 the matrix products take their inputs in that dtype as
mamba-ssm's kernels do, in float32 ``input_precision="ieee"`` (no TF32). Tiles are padded to powers
of two (at least 16, tl.dot's minimum) with masked loads. Sizes: length <= ``MAX_T``, headdim <=
``MAX_P``, d_state <= ``MAX_N``; ``fits`` says whether a call qualifies. The reference is
``lengthgen.ops.ssd.ssd_scan_reference``; tests/test_ssd_one_chunk_triton.py runs these kernels on
the CPU through Triton's interpreter against it, tests/gpu/test_ops_gpu.py on the GPU.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

MAX_T, MAX_P, MAX_N = 64, 64, 128
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# the kernels index with int32 (int64 offsets cost registers the backward does not have): every
# (b, l, h, max(p, n)) tensor of a call stays under 2^31 elements, else ssd_scan takes mamba-ssm's path
_MAX_ELEMENTS = 2**31


def fits(x: torch.Tensor, B: torch.Tensor, chunk_size: int, initial_state) -> bool:
    """Whether this kernel computes the call: one chunk, zero initial state, supported sizes."""
    b, l, h, p = x.shape
    n = B.shape[3]
    return (initial_state is None and l <= min(chunk_size, MAX_T) and p <= MAX_P and n <= MAX_N
            and x.dtype in _DTYPES and B.dtype in _DTYPES
            and b * l * h * max(p, n) < _MAX_ELEMENTS)


@triton.jit
def _dt(dt_ptr, bias_ptr, off, s_l, h, t, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(dt + bias before the softplus, dt after it, zero past L) for one (row, head)."""
    mt = t < L
    raw = tl.load(dt_ptr + off + t * s_l, mask=mt, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(bias_ptr + h).to(tl.float32)
    if SOFTPLUS:
        dtv = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0))))
    else:
        dtv = raw
    return raw, tl.where(mt, dtv, 0.0)


@triton.jit
def _mm(a, b, IEEE: tl.constexpr):
    """a @ b accumulated in float32: exact float32 products where IEEE, else in a's dtype."""
    if IEEE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b.to(a.dtype))


@triton.jit
def _fwd_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, s_ptr,
                L, P, N, HPG,
                sx_b, sx_l, sx_h, sx_p, sdt_b, sdt_l, sdt_h, sb_b, sb_l, sb_g, sb_n,
                sc_b, sc_l, sc_g, sc_n, sy_b, sy_l, sy_h, sy_p, ss_b, ss_h, ss_p, ss_n,
                HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, IEEE: tl.constexpr,
                BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    g = h // HPG
    t = tl.arange(0, BT)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    mt, mp, mn = t < L, pp < P, nn < N
    _, dtv = _dt(dt_ptr, bias_ptr, b * sdt_b + h * sdt_h, sdt_l, h, t, L, HAS_BIAS, SOFTPLUS)
    a = dtv * tl.load(A_ptr + h).to(tl.float32)
    cs = tl.cumsum(a, axis=0)
    mtn = mt[:, None] & mn[None, :]
    Bt = tl.load(B_ptr + b * sb_b + g * sb_g + t[:, None] * sb_l + nn[None, :] * sb_n, mask=mtn, other=0.0)
    Ct = tl.load(C_ptr + b * sc_b + g * sc_g + t[:, None] * sc_l + nn[None, :] * sc_n, mask=mtn, other=0.0)
    mtp = mt[:, None] & mp[None, :]
    x = tl.load(x_ptr + b * sx_b + h * sx_h + t[:, None] * sx_l + pp[None, :] * sx_p, mask=mtp, other=0.0)

    cb = _mm(Ct, tl.trans(Bt), IEEE)                                   # (t, s): C_t . B_s
    causal = t[:, None] >= t[None, :]
    E = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))
    M = cb * E * dtv[None, :]
    if IEEE:
        y = _mm(M, x, IEEE)
    else:
        y = _mm(M.to(x.dtype), x, IEEE)
    if HAS_D:
        y += tl.load(D_ptr + h).to(tl.float32) * x.to(tl.float32)
    tl.store(y_ptr + b * sy_b + h * sy_h + t[:, None] * sy_l + pp[None, :] * sy_p,
             y.to(y_ptr.dtype.element_ty), mask=mtp)

    w = tl.where(mt, tl.exp(tl.sum(a, axis=0) - cs) * dtv, 0.0)        # s's weight in the final state
    xw = x.to(tl.float32) * w[:, None]
    if IEEE:
        S = _mm(tl.trans(xw), Bt, IEEE)
    else:
        S = _mm(tl.trans(xw.to(x.dtype)), Bt, IEEE)
    tl.store(s_ptr + b * ss_b + h * ss_h + pp[:, None] * ss_p + nn[None, :] * ss_n, S,
             mask=mp[:, None] & mn[None, :])


@triton.jit
def _bwd_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, ds_ptr,
                dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                L, P, N, HPG, H,
                sx_b, sx_l, sx_h, sx_p, sdt_b, sdt_l, sdt_h, sb_b, sb_l, sb_g, sb_n,
                sc_b, sc_l, sc_g, sc_n, sdy_b, sdy_l, sdy_h, sdy_p, sds_b, sds_h, sds_p, sds_n,
                HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_DS: tl.constexpr,
                IEEE: tl.constexpr, BT: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr):
    b = tl.program_id(0)
    g = tl.program_id(1)
    G = H // HPG
    t = tl.arange(0, BT)
    pp = tl.arange(0, BP)
    nn = tl.arange(0, BN)
    mt, mp, mn = t < L, pp < P, nn < N
    mtn = mt[:, None] & mn[None, :]
    mtp = mt[:, None] & mp[None, :]
    # B and C are loaded again where they are used (from cache), not kept live through the loop:
    # register pressure, not memory, bounds this kernel
    p_B = B_ptr + b * sb_b + g * sb_g + t[:, None] * sb_l + nn[None, :] * sb_n
    p_C = C_ptr + b * sc_b + g * sc_g + t[:, None] * sc_l + nn[None, :] * sc_n
    cb = _mm(tl.load(p_C, mask=mtn, other=0.0), tl.trans(tl.load(p_B, mask=mtn, other=0.0)), IEEE)
    causal = t[:, None] >= t[None, :]
    dcb = tl.zeros((BT, BT), dtype=tl.float32)                         # summed over the group's heads
    if HAS_DS:
        dB_state = tl.zeros((BT, BN), dtype=tl.float32)
    for i in range(HPG):
        h = g * HPG + i
        raw, dtv = _dt(dt_ptr, bias_ptr, b * sdt_b + h * sdt_h, sdt_l, h, t, L, HAS_BIAS, SOFTPLUS)
        A = tl.load(A_ptr + h).to(tl.float32)
        a = dtv * A
        cs = tl.cumsum(a, axis=0)
        E = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))
        x = tl.load(x_ptr + b * sx_b + h * sx_h + t[:, None] * sx_l + pp[None, :] * sx_p, mask=mtp, other=0.0)
        dy = tl.load(dy_ptr + b * sdy_b + h * sdy_h + t[:, None] * sdy_l + pp[None, :] * sdy_p,
                     mask=mtp, other=0.0)
        # dx first, stored as soon as it is complete, so its tiles are dead before dM's are built
        M = cb * E * dtv[None, :]
        if IEEE:
            dx = _mm(tl.trans(M), dy, IEEE)
        else:
            dx = _mm(tl.trans(M.to(dy.dtype)), dy, IEEE)
        if HAS_D:
            dx += tl.load(D_ptr + h).to(tl.float32) * dy.to(tl.float32)
            tl.store(dD_ptr + b * H + h, tl.sum(tl.sum(dy.to(tl.float32) * x.to(tl.float32), axis=1), axis=0))
        ddt = tl.zeros((BT,), dtype=tl.float32)
        dcs = tl.zeros((BT,), dtype=tl.float32)
        dtotal = 0.0
        if HAS_DS:  # the final state S = sum_s w_s x_s^T B_s, w_s = exp(cs_T - cs_s) dt_s
            dS = tl.load(ds_ptr + b * sds_b + h * sds_h + pp[:, None] * sds_p + nn[None, :] * sds_n,
                         mask=mp[:, None] & mn[None, :], other=0.0)
            Bt = tl.load(p_B, mask=mtn, other=0.0)
            decay_end = tl.where(mt, tl.exp(tl.sum(a, axis=0) - cs), 0.0)
            w = decay_end * dtv
            if IEEE:
                xdS = _mm(x, dS, IEEE)                                   # (s, n)
                dx += w[:, None] * _mm(Bt, tl.trans(dS), IEEE)
            else:
                xdS = _mm(x, dS.to(x.dtype), IEEE)
                dx += w[:, None] * _mm(Bt, tl.trans(dS.to(Bt.dtype)), IEEE)
            dB_state += w[:, None] * xdS
            dw = tl.sum(xdS * Bt.to(tl.float32), axis=1)
            ddt += dw * decay_end
            dcs -= dw * w
            dtotal = tl.sum(dw * w, axis=0)                            # through cs_T = sum(a)
        tl.store(dx_ptr + ((b * L + t[:, None]) * H + h) * P + pp[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=mtp)
        dME = _mm(dy, tl.trans(x), IEEE) * E                           # dM o E, (t, s)
        dcb += dME * dtv[None, :]
        dMcbE = dME * cb
        colsum = tl.sum(dMcbE, axis=0)
        ddt += colsum                                                  # through the 1 dt^T factor
        dcs += tl.sum(dMcbE * dtv[None, :], axis=1) - colsum * dtv     # through E: rows of dM o M minus columns
        da = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs + dtotal  # da_j = sum_{t >= j} dcs_t
        da = tl.where(mt, da, 0.0)
        ddt += da * A
        tl.store(dA_ptr + b * H + h, tl.sum(da * dtv, axis=0))
        if SOFTPLUS:
            ddt = tl.where(raw > 20.0, ddt, ddt * tl.sigmoid(raw))
        ddt = tl.where(mt, ddt, 0.0)
        tl.store(ddt_ptr + (b * L + t) * H + h, ddt.to(ddt_ptr.dtype.element_ty), mask=mt)
        if HAS_BIAS:
            tl.store(dbias_ptr + b * H + h, tl.sum(ddt, axis=0))
    Bt = tl.load(p_B, mask=mtn, other=0.0)
    Ct = tl.load(p_C, mask=mtn, other=0.0)
    if IEEE:
        dC = _mm(dcb, Bt, IEEE)
        dB = _mm(tl.trans(dcb), Ct, IEEE)
    else:
        dC = _mm(dcb.to(Bt.dtype), Bt, IEEE)
        dB = _mm(tl.trans(dcb).to(Ct.dtype), Ct, IEEE)
    if HAS_DS:
        dB += dB_state
    out = ((b * L + t[:, None]) * G + g) * N + nn[None, :]
    tl.store(dB_ptr + out, dB.to(dB_ptr.dtype.element_ty), mask=mtn)
    tl.store(dC_ptr + out, dC.to(dC_ptr.dtype.element_ty), mask=mtn)


def _tiles(l: int, p: int, n: int) -> dict:
    return dict(BT=max(16, triton.next_power_of_2(l)), BP=max(16, triton.next_power_of_2(p)),
                BN=max(16, triton.next_power_of_2(n)))


class _OneChunkSSD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, dt_bias, dt_softplus):
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        y = torch.empty(b, l, h, p, dtype=x.dtype, device=x.device)
        S = torch.empty(b, h, p, n, dtype=torch.float32, device=x.device)
        ieee = x.dtype == torch.float32 and B.dtype == torch.float32
        _fwd_kernel[(b, h)](
            x, dt, A, B, C, D if D is not None else A, dt_bias if dt_bias is not None else A, y, S,
            l, p, n, h // g, *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(), *S.stride(),
            HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), IEEE=ieee,
            **_tiles(l, p, n), num_warps=4,
        )  # fmt: skip
        ctx.save_for_backward(x, dt, A, B, C, D, dt_bias)
        ctx.dt_softplus, ctx.ieee = bool(dt_softplus), ieee
        ctx.set_materialize_grads(False)  # an unused final state gets no gradient, not zeros
        return y, S

    @staticmethod
    def backward(ctx, dy, dS):
        x, dt, A, B, C, D, dt_bias = ctx.saved_tensors
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        dy = dy if dy is not None else torch.zeros_like(x)
        dx = torch.empty(b, l, h, p, dtype=x.dtype, device=x.device)
        # each of dx, ddt, dB, dC is complete in one program, so it is written in its input's dtype
        ddt = torch.empty(b, l, h, dtype=dt.dtype, device=x.device)
        dB = torch.empty(b, l, g, n, dtype=B.dtype, device=x.device)
        dC = torch.empty(b, l, g, n, dtype=C.dtype, device=x.device)
        dA = torch.empty(b, h, dtype=torch.float32, device=x.device)
        dD = torch.empty_like(dA) if D is not None else dA
        dbias = torch.empty_like(dA) if dt_bias is not None else dA
        ds_arg = dS if dS is not None else dA
        ds_strides = dS.stride() if dS is not None else (0, 0, 0, 0)
        _bwd_kernel[(b, g)](
            x, dt, A, B, C, D if D is not None else A, dt_bias if dt_bias is not None else A, dy, ds_arg,
            dx, ddt, dB, dC, dA, dD, dbias, l, p, n, h // g, h,
            *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *dy.stride(), *ds_strides,
            HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=ctx.dt_softplus, HAS_DS=dS is not None,
            IEEE=ctx.ieee, **_tiles(l, p, n), num_warps=8,
        )  # fmt: skip
        return (dx, ddt, dA.sum(0).to(A.dtype), dB, dC,
                None if D is None else dD.sum(0).to(D.dtype),
                None if dt_bias is None else dbias.sum(0).to(dt_bias.dtype), None)


def ssd_one_chunk(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus: bool = False):
    """y (b, l, h, p) in x's dtype and the final state (b, h, p, n) in float32 of the SSD from a zero
    state over one chunk (``fits`` must hold). Arguments as ``lengthgen.ops.ssd_scan``'s."""
    if x.shape[1] > MAX_T or x.shape[3] > MAX_P or B.shape[3] > MAX_N:
        raise ValueError(f"ssd_one_chunk takes length <= {MAX_T}, headdim <= {MAX_P}, d_state <= {MAX_N}; got "
                         f"{x.shape[1]}, {x.shape[3]}, {B.shape[3]}: use ssd_scan")
    A, D, dt_bias = (None if v is None else v.contiguous() for v in (A, D, dt_bias))
    return _OneChunkSSD.apply(x, dt, A, B, C, D, dt_bias, dt_softplus)
