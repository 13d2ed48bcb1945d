"""Depthwise causal conv1d with a carried window (Mamba's short conv): Triton forward and backward.

Channel c, output t:  pre_t = bias_c + sum_k w[c, k] z[t + k],  y_t = silu(pre_t) (or pre_t), over
``z = [state, x]`` where the state holds the ``W - 1`` inputs before x (zeros when absent). The
reference is ``lengthgen.ops.conv.causal_conv1d_reference``.

x is read through its strides, so the channel-last view Mamba's ``in_proj`` produces needs no copy;
y and dx are written channel-last ((b, l, d) memory seen as (b, d, l)). One program per (block of
BD channels, block of BT steps, row; the backward's first pass: DPRE_ROWS rows):

* forward: W shifted loads of x (the first block also reads the state), y in registers;
* backward, two passes: the first recomputes the pre-activation in registers (nothing is saved but
  the inputs), writes dpre = dy * silu'(pre) in float32, sums the weight and bias gradients over its
  block of steps and DPRE_ROWS batch rows and writes them per program (torch adds the programs up
  afterwards: deterministic), and the first block also writes the state's gradient; the second
  reads dpre at W shifts for dx_j = sum_k w[k] dpre_{j + W - 1 - k}. (One pass that recomputed
  dpre at each of the W shifts loaded W (W + 1) + W tiles per block, 24 at W = 4, and was the
  slowest kernel of the study's training step.) Widths up to 4 keep the W shifted tiles and
  their weight-gradient sums in registers; wider ones add each row's sums into the program's
  partial row in memory (run on the CPU interpreter only so far).

The new window (the last W - 1 entries of z) is sliced by the caller in torch, so its gradient
reaches x through autograd. Widths 2-4 (any width works; 4 is Mamba's).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

# tiles (steps x channels); the backward's first pass holds W shifted tiles of z, the pre-activation,
# dpre and W + 1 accumulators, and runs over DPRE_ROWS batch rows per program, so that its weight and
# bias sums leave the registers once per DPRE_ROWS rows (a cross-warp reduction per row and shift cost
# more than the pass's loads). Tile and rows fix the order of those sums: constants, never autotuned.
FWD_TILE, DPRE_TILE, DX_TILE = (64, 64), (32, 64), (64, 64)
DPRE_WARPS, DPRE_ROWS = 4, 16


@triton.jit
def _z(x_ptr, s_ptr, b, c, mc, j, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W: tl.constexpr, HAS_STATE: tl.constexpr):
    """z at x index j (a (BT,) vector of indices, j < 0 reading the state) for channels c: (BT, BD) float32."""
    m_x = (j >= 0) & (j < L)
    v = tl.load(x_ptr + b * sx_b + c[None, :] * sx_d + j[:, None] * sx_l, mask=m_x[:, None] & mc[None, :],
                other=0.0).to(tl.float32)
    if HAS_STATE:
        m_s = (j < 0) & (j >= 1 - W)
        v += tl.load(s_ptr + b * ss_b + c[None, :] * ss_d + (j[:, None] + W - 1) * ss_w,
                     mask=m_s[:, None] & mc[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _pre(x_ptr, s_ptr, w_ptr, bias_ptr, b, c, mc, u, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w,
         W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The pre-activation at output steps u: (BT, BD) float32."""
    acc = tl.zeros((u.shape[0], c.shape[0]), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=mc, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + c * W + k, mask=mc, other=0.0).to(tl.float32)
        acc += wk[None, :] * _z(x_ptr, s_ptr, b, c, mc, u + k - (W - 1), L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w,
                                W, HAS_STATE)
    return acc


@triton.jit
def _z_or_0(x_ptr, s_ptr, b, c, mc, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, k: tl.constexpr, W: tl.constexpr,
            HAS_STATE: tl.constexpr):
    """z at x index t + k - (W - 1) for shift k < W, zeros for k >= W (the W <= 4 path's unused shifts)."""
    if k < W:
        return _z(x_ptr, s_ptr, b, c, mc, t + k - (W - 1), L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W, HAS_STATE)
    else:
        return tl.zeros((t.shape[0], c.shape[0]), dtype=tl.float32)


@triton.jit
def _w_or_0(w_ptr, c, mc, k: tl.constexpr, W: tl.constexpr):
    if k < W:
        return tl.load(w_ptr + c * W + k, mask=mc, other=0.0).to(tl.float32)
    else:
        return tl.zeros((c.shape[0],), dtype=tl.float32)


@triton.jit
def _fwd_kernel(x_ptr, s_ptr, w_ptr, bias_ptr, y_ptr, D, L,
                sx_b, sx_d, sx_l, ss_b, ss_d, ss_w,
                W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr):
    c = tl.program_id(0) * BD + tl.arange(0, BD)
    t = tl.program_id(1) * BT + tl.arange(0, BT)
    b = tl.program_id(2).to(tl.int64)
    mc = c < D
    pre = _pre(x_ptr, s_ptr, w_ptr, bias_ptr, b, c, mc, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W, HAS_STATE,
               HAS_BIAS)
    y = pre * tl.sigmoid(pre) if SILU else pre
    tl.store(y_ptr + (b * L + t[:, None]) * D + c[None, :], y.to(y_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & mc[None, :])


@triton.jit
def _bwd_dpre_kernel(x_ptr, s_ptr, w_ptr, bias_ptr, dy_ptr, dpre_ptr, dw_ptr, db_ptr, dstate_ptr, NB, D, L, NT,
                     sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, sdy_b, sdy_d, sdy_l,
                     W: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                     BT: tl.constexpr, BD: tl.constexpr, RB: tl.constexpr):
    """Backward, first pass, over RB batch rows one after another: dpre at the block's steps (float32,
    (b, l, d) memory), the state's gradient (first block), and the block's weight and bias gradients
    summed over the RB rows, written as one row of partial sums per program."""
    i_t = tl.program_id(1)
    c = tl.program_id(0) * BD + tl.arange(0, BD)
    t = i_t * BT + tl.arange(0, BT)
    mc = c < D
    part = (tl.program_id(2) * NT + i_t) * W                           # this program's rows of partial sums
    acc0 = tl.zeros((BT, BD), dtype=tl.float32)                        # sum over rows of dpre * z at shift k
    acc1 = tl.zeros((BT, BD), dtype=tl.float32)
    acc2 = tl.zeros((BT, BD), dtype=tl.float32)
    acc3 = tl.zeros((BT, BD), dtype=tl.float32)
    accb = tl.zeros((BT, BD), dtype=tl.float32)
    for r in range(RB):
        b = tl.program_id(2).to(tl.int64) * RB + r
        mcb = mc & ((c * 0 + b) < NB)                               # channels of a row that exists
        mt = (t < L)[:, None] & mcb[None, :]
        dp = tl.load(dy_ptr + b * sdy_b + c[None, :] * sdy_d + t[:, None] * sdy_l, mask=mt, other=0.0).to(tl.float32)
        if W <= 4:  # each shifted z tile loaded once, for the pre-activation and the weight gradient
            z0 = _z(x_ptr, s_ptr, b, c, mcb, t - (W - 1), L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W, HAS_STATE)
            z1 = _z_or_0(x_ptr, s_ptr, b, c, mcb, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, 1, W, HAS_STATE)
            z2 = _z_or_0(x_ptr, s_ptr, b, c, mcb, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, 2, W, HAS_STATE)
            z3 = _z_or_0(x_ptr, s_ptr, b, c, mcb, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, 3, W, HAS_STATE)
            if SILU:
                pre = (_w_or_0(w_ptr, c, mc, 0, W)[None, :] * z0 + _w_or_0(w_ptr, c, mc, 1, W)[None, :] * z1
                       + _w_or_0(w_ptr, c, mc, 2, W)[None, :] * z2 + _w_or_0(w_ptr, c, mc, 3, W)[None, :] * z3)
                if HAS_BIAS:
                    pre += tl.load(bias_ptr + c, mask=mc, other=0.0).to(tl.float32)[None, :]
                sg = tl.sigmoid(pre)
                dp = dp * sg * (1.0 + pre * (1.0 - sg))
            acc0 += dp * z0
            acc1 += dp * z1
            acc2 += dp * z2
            acc3 += dp * z3
        else:  # any width: this program's partial sums are read back and added to, row after row
            if SILU:
                pre = _pre(x_ptr, s_ptr, w_ptr, bias_ptr, b, c, mcb, t, L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W,
                           HAS_STATE, HAS_BIAS)
                sg = tl.sigmoid(pre)
                dp = dp * sg * (1.0 + pre * (1.0 - sg))
            for k in tl.static_range(W):                               # output t reads z at x index t + k - (W - 1)
                zk = _z(x_ptr, s_ptr, b, c, mcb, t + k - (W - 1), L, sx_b, sx_d, sx_l, ss_b, ss_d, ss_w, W, HAS_STATE)
                prev = tl.load(dw_ptr + (part + k) * D + c, mask=mc & (r > 0), other=0.0)
                tl.store(dw_ptr + (part + k) * D + c, prev + tl.sum(dp * zk, axis=0), mask=mc)
        accb += dp
        tl.store(dpre_ptr + (b * L + t[:, None]) * D + c[None, :], dp, mask=mt)
        if HAS_STATE:
            if i_t == 0:  # state column i is z index i: used by outputs u = i - k, k <= i
                for i in tl.static_range(W - 1):
                    g = tl.zeros((BD,), dtype=tl.float32)
                    for k in tl.static_range(i + 1):
                        wk = tl.load(w_ptr + c * W + k, mask=mc, other=0.0).to(tl.float32)
                        g += wk * tl.sum(tl.where((t == i - k)[:, None], dp, 0.0), axis=0)
                    tl.store(dstate_ptr + (b * D + c) * (W - 1) + i, g, mask=mcb)
    if W <= 4:
        tl.store(dw_ptr + part * D + c, tl.sum(acc0, axis=0), mask=mc)
        tl.store(dw_ptr + (part + 1) * D + c, tl.sum(acc1, axis=0), mask=mc & (W > 1))
        tl.store(dw_ptr + (part + 2) * D + c, tl.sum(acc2, axis=0), mask=mc & (W > 2))
        tl.store(dw_ptr + (part + 3) * D + c, tl.sum(acc3, axis=0), mask=mc & (W > 3))
    if HAS_BIAS:
        tl.store(db_ptr + (tl.program_id(2) * NT + i_t) * D + c, tl.sum(accb, axis=0), mask=mc)


@triton.jit
def _bwd_dx_kernel(dpre_ptr, w_ptr, dx_ptr, D, L, W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """Backward, second pass: dx_j = sum_k w[k] dpre_{j + W - 1 - k} (steps past L contribute 0)."""
    c = tl.program_id(0) * BD + tl.arange(0, BD)
    t = tl.program_id(1) * BT + tl.arange(0, BT)
    b = tl.program_id(2).to(tl.int64)
    mc = c < D
    dx = tl.zeros((BT, BD), dtype=tl.float32)
    for s in tl.static_range(W):                                       # x index t feeds output t + s through w[W - 1 - s]
        u = t + s
        dp = tl.load(dpre_ptr + (b * L + u[:, None]) * D + c[None, :], mask=(u < L)[:, None] & mc[None, :], other=0.0)
        dx += tl.load(w_ptr + c * W + (W - 1 - s), mask=mc, other=0.0).to(tl.float32)[None, :] * dp
    tl.store(dx_ptr + (b * L + t[:, None]) * D + c[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & mc[None, :])


def _channel_last(b: int, d: int, l: int, dtype, device) -> torch.Tensor:
    return torch.empty(b, l, d, dtype=dtype, device=device).transpose(1, 2)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state, silu):
        b, d, l = x.shape
        w = weight.shape[1]
        y = _channel_last(b, d, l, x.dtype, x.device)
        st = state if state is not None else x
        ss = state.stride() if state is not None else (0, 0, 0)
        bt, bd = FWD_TILE
        grid = (triton.cdiv(d, bd), triton.cdiv(l, bt), b)
        _fwd_kernel[grid](x, st, weight, bias if bias is not None else weight, y, d, l, *x.stride(), *ss,
                          W=w, HAS_STATE=state is not None, HAS_BIAS=bias is not None, SILU=silu, BT=bt, BD=bd)
        ctx.save_for_backward(x, weight, bias, state)
        ctx.silu = silu
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, state = ctx.saved_tensors
        b, d, l = x.shape
        w = weight.shape[1]
        bt, bd = DPRE_TILE
        nt, nrb = triton.cdiv(l, bt), triton.cdiv(b, DPRE_ROWS)
        dpre = torch.empty(b, l, d, dtype=torch.float32, device=x.device)
        dw = torch.empty(nrb * nt, w, d, dtype=torch.float32, device=x.device)
        db = torch.empty(nrb * nt, d, dtype=torch.float32, device=x.device) if bias is not None else dw
        dstate = torch.empty(b, d, w - 1, dtype=torch.float32, device=x.device) if state is not None else dw
        st = state if state is not None else x
        ss = state.stride() if state is not None else (0, 0, 0)
        _bwd_dpre_kernel[(triton.cdiv(d, bd), nt, nrb)](
            x, st, weight, bias if bias is not None else weight, dy, dpre, dw, db, dstate, b, d, l, nt,
            *x.stride(), *ss, *dy.stride(),
            W=w, HAS_STATE=state is not None, HAS_BIAS=bias is not None, SILU=ctx.silu, BT=bt, BD=bd,
            RB=DPRE_ROWS, num_warps=DPRE_WARPS)
        dx = _channel_last(b, d, l, x.dtype, x.device)
        bt, bd = DX_TILE
        _bwd_dx_kernel[(triton.cdiv(d, bd), triton.cdiv(l, bt), b)](dpre, weight, dx, d, l, W=w, BT=bt, BD=bd)
        return (dx, dw.sum(0).t().to(weight.dtype), None if bias is None else db.sum(0).to(bias.dtype),
                None if state is None else dstate.to(state.dtype), None)


def causal_conv1d_triton(x, weight, bias=None, conv_state=None, activation="silu"):
    """y (b, d, l) in x's dtype (channel-last memory) and the new window (b, d, w - 1) in float32
    (float64 for float64 x) of the depthwise causal conv; arguments as ``lengthgen.ops.causal_conv1d``'s
    (already checked there)."""
    w = weight.shape[1]
    state = None if conv_state is None else conv_state.to(torch.float32)
    y = _CausalConv1d.apply(x, weight.contiguous(), None if bias is None else bias.contiguous(), state,
                            activation == "silu")
    l = x.shape[-1]
    if l >= w - 1:
        window = x[:, :, l - (w - 1):]
    else:
        head = state if state is not None else x.new_zeros(x.shape[0], x.shape[1], w - 1)
        window = torch.cat([head.to(x.dtype), x], dim=-1)[:, :, -(w - 1):]
    return y, window.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
