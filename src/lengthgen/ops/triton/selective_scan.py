"""Mamba-1 selective scan with an initial state: Triton kernels for the forward and backward pass.

mamba-ssm's compiled selective scan takes no initial state (and is often not compiled at all), so
this is the GPU path for the recurrence, elementwise over (d, n):

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,      y_t[d] = sum_n C_t[n] * h_t[d, n]

with h_{-1} = initial_state. Like mamba's CUDA kernel it reads u, delta (b, d, l) and B, C (b, n, l)
directly, never materialising a (b, l, d, n) tensor in memory.

Work split: one program per (batch row, block of BLOCK_D channels). The sequence is cut into chunks
of CHUNK steps; each chunk is one (BLOCK_D, N, CHUNK) register tile, solved with a parallel
associative scan along time and joined to the previous chunk through the carried (BLOCK_D, N)
state. The forward saves the state at every chunk start; the backward walks the chunks in reverse,
recomputes a chunk's states from its saved start, then runs the adjoint recurrence
g_t = dL/dh_t = exp(delta_{t+1} A) g_{t+1} + dy_t C_t as a reverse scan. Everything inside is fp32.
dB and dC are summed over channels per program and written as per-block partials, which torch adds
up afterwards (deterministic: no atomics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

MAX_N = 64          # largest (padded) state size the register tiles are sized for
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class ScanConfig:
    """Launch parameters. ``chunk`` is shared by forward and backward (the saved states sit at
    chunk starts); the channel block and warp count of each pass can differ."""

    chunk: int = 16
    block_d_fwd: int = 16
    block_d_bwd: int = 16
    warps_fwd: int = 4
    warps_bwd: int = 8

    def __post_init__(self):
        for name in ("chunk", "block_d_fwd", "block_d_bwd", "warps_fwd", "warps_bwd"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1 and v & (v - 1) == 0):
                raise ValueError(f"ScanConfig.{name} must be a power of two >= 1, got {v!r}")


DEFAULT_CONFIG = ScanConfig()


@triton.jit
def _first_order(a1, b1, a2, b2):
    """Compose two affine steps h -> a*h + b (the first one applied first)."""
    return a1 * a2, a2 * b1 + b2


# sizes only bound masks and offsets: not specialising on them saves recompiles across shapes
@triton.jit(do_not_specialize=["L", "D", "NS"])
def _fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, h0_ptr, y_ptr, hT_ptr, st_ptr,
    L, D, NS,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_Ad, s_An, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl,
    s_yb, s_yd, s_yl,
    HAS_H0: tl.constexpr, STORE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, N: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N)
    offs_t = tl.arange(0, CHUNK)
    mask_d = offs_d < D
    mask_dn = mask_d[:, None] & (offs_n < NS)[None, :]
    mask_n = offs_n < NS

    A = tl.load(A_ptr + offs_d[:, None] * s_Ad + offs_n[None, :] * s_An, mask=mask_dn, other=0.0).to(tl.float32)
    # (b, d, n) contiguous fp32 for the initial and final states, (b, chunks, d, n) for saved ones
    state_off = offs_d[:, None] * NS + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D * NS + state_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, N), dtype=tl.float32)

    u_base = u_ptr + pid_b * s_ub + offs_d[:, None] * s_ud
    dt_base = dt_ptr + pid_b * s_tb + offs_d[:, None] * s_td
    B_base = B_ptr + pid_b * s_Bb + offs_n[:, None] * s_Bn
    C_base = C_ptr + pid_b * s_Cb + offs_n[:, None] * s_Cn
    y_base = y_ptr + pid_b * s_yb + offs_d[:, None] * s_yd
    n_chunks = tl.cdiv(L, CHUNK)
    for c in range(n_chunks):
        if STORE_STATES:
            tl.store(st_ptr + (pid_b * n_chunks + c) * D * NS + state_off, h, mask=mask_dn)
        t = c * CHUNK + offs_t
        mask_t = t < L
        m_dt = mask_d[:, None] & mask_t[None, :]
        m_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_base + t[None, :] * s_ul, mask=m_dt, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t[None, :] * s_tl, mask=m_dt, other=0.0).to(tl.float32)
        Bt = tl.load(B_base + t[None, :] * s_Bl, mask=m_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[None, :] * s_Cl, mask=m_nt, other=0.0).to(tl.float32)
        # padded steps have delta = 0: decay 1, input 0, so they leave the state unchanged
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        x = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, x_cum = tl.associative_scan((a, x), axis=2, combine_fn=_first_order)
        hs = a_cum * h[:, :, None] + x_cum
        y = tl.sum(hs * Ct[None, :, :], axis=1)
        tl.store(y_base + t[None, :] * s_yl, y, mask=m_dt)
        h = tl.sum(tl.where(offs_t[None, None, :] == CHUNK - 1, hs, 0.0), axis=2)
    tl.store(hT_ptr + pid_b * D * NS + state_off, h, mask=mask_dn)


@triton.jit(do_not_specialize=["L", "D", "NS", "NBLK"])
def _bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, dy_ptr, dhT_ptr, st_ptr,
    du_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr, dh0_ptr,
    L, D, NS, NBLK,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_Ad, s_An, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl,
    s_yb, s_yd, s_yl,
    HAS_DHT: tl.constexpr,
    BLOCK_D: tl.constexpr, N: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, N)
    offs_t = tl.arange(0, CHUNK)
    mask_d = offs_d < D
    mask_n = offs_n < NS
    mask_dn = mask_d[:, None] & mask_n[None, :]

    A = tl.load(A_ptr + offs_d[:, None] * s_Ad + offs_n[None, :] * s_An, mask=mask_dn, other=0.0).to(tl.float32)
    state_off = offs_d[:, None] * NS + offs_n[None, :]
    if HAS_DHT:
        g = tl.load(dhT_ptr + pid_b * D * NS + state_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        g = tl.zeros((BLOCK_D, N), dtype=tl.float32)
    dA = tl.zeros((BLOCK_D, N), dtype=tl.float32)

    u_base = u_ptr + pid_b * s_ub + offs_d[:, None] * s_ud
    dt_base = dt_ptr + pid_b * s_tb + offs_d[:, None] * s_td
    B_base = B_ptr + pid_b * s_Bb + offs_n[:, None] * s_Bn
    C_base = C_ptr + pid_b * s_Cb + offs_n[:, None] * s_Cn
    dy_base = dy_ptr + pid_b * s_yb + offs_d[:, None] * s_yd
    # du, ddelta: (b, d, l) contiguous; dB, dC partials: (b, NBLK, n, l) contiguous
    dx_base = pid_b * D * L + offs_d[:, None] * L
    dBC_base = (pid_b * NBLK + pid_d) * NS * L + offs_n[:, None] * L
    n_chunks = tl.cdiv(L, CHUNK)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t = c * CHUNK + offs_t
        mask_t = t < L
        m_dt = mask_d[:, None] & mask_t[None, :]
        m_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_base + t[None, :] * s_ul, mask=m_dt, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t[None, :] * s_tl, mask=m_dt, other=0.0).to(tl.float32)
        dt_next = tl.load(dt_base + (t[None, :] + 1) * s_tl, mask=mask_d[:, None] & (t[None, :] + 1 < L),
                          other=0.0).to(tl.float32)
        Bt = tl.load(B_base + t[None, :] * s_Bl, mask=m_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[None, :] * s_Cl, mask=m_nt, other=0.0).to(tl.float32)
        dy = tl.load(dy_base + t[None, :] * s_yl, mask=m_dt, other=0.0).to(tl.float32)

        # recompute this chunk's states from the one saved at its start
        h_start = tl.load(st_ptr + (pid_b * n_chunks + c) * D * NS + state_off, mask=mask_dn, other=0.0)
        dtu = dt * u
        x = dtu[:, None, :] * Bt[None, :, :]
        a_cum, x_cum = tl.associative_scan((tl.exp(dt[:, None, :] * A[:, :, None]), x), axis=2,
                                           combine_fn=_first_order)
        hs = a_cum * h_start[:, :, None] + x_cum
        # adjoint: g_t = exp(delta_{t+1} A) g_{t+1} + dy_t C_t, g after the chunk carried in
        a_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        gw = dy[:, None, :] * Ct[None, :, :]
        g_cum, w_cum = tl.associative_scan((a_next, gw), axis=2, combine_fn=_first_order, reverse=True)
        gs = w_cum + g_cum * g[:, :, None]

        # a_t * h_{t-1} = h_t - delta_t B_t u_t
        q = gs * (hs - x)
        s_gB = tl.sum(gs * Bt[None, :, :], axis=1)
        tl.store(du_ptr + dx_base + t[None, :], dt * s_gB, mask=m_dt)
        tl.store(ddt_ptr + dx_base + t[None, :], u * s_gB + tl.sum(q * A[:, :, None], axis=1), mask=m_dt)
        dA += tl.sum(q * dt[:, None, :], axis=2)
        tl.store(dB_ptr + dBC_base + t[None, :], tl.sum(gs * dtu[:, None, :], axis=0), mask=m_nt)
        tl.store(dC_ptr + dBC_base + t[None, :], tl.sum(hs * dy[:, None, :], axis=0), mask=m_nt)
        g = tl.sum(tl.where(offs_t[None, None, :] == 0, gs, 0.0), axis=2)

    dt0 = tl.load(dt_base, mask=mask_d[:, None], other=0.0).to(tl.float32)  # delta at t = 0, (BLOCK_D, 1)
    tl.store(dh0_ptr + pid_b * D * NS + state_off, tl.exp(dt0 * A) * g, mask=mask_dn)
    tl.store(dA_ptr + pid_b * D * NS + state_off, dA, mask=mask_dn)


def _check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"selective_scan_triton needs CUDA tensors, got a tensor on {t.device}; "
                         "use backend='torch' (lengthgen.ops.selective_scan) on CPU")


def _check_inputs(u, delta, A, B, C, initial_state) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, d, length), got shape {tuple(u.shape)}")
    b, d, l = u.shape
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d, d_state) with d = {d} (from u), got shape {tuple(A.shape)}")
    n = A.shape[1]
    expected = {"delta": (delta, (b, d, l)), "B": (B, (b, n, l)), "C": (C, (b, n, l)),
                "initial_state": (initial_state, (b, d, n))}
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (batch, d, d_state, length from u and A), "
                             f"got {tuple(t.shape)}")
    if l == 0:
        raise ValueError("selective_scan_triton needs a sequence of length >= 1")
    if n > MAX_N:
        raise ValueError(f"selective_scan_triton supports d_state <= {MAX_N}, got {n}; use backend='torch'")
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("initial_state", initial_state)):
        if t is None:
            continue
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; the Triton scan takes float32/float16/bfloat16 "
                             "(use backend='torch' for float64)")
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}; move all inputs to one device")
        _check_device(t)


def _block_d(block_d: int, n_pad: int) -> int:
    """Channel block, shrunk for large d_state so a (BLOCK_D, N) tile stays <= 256 elements."""
    return max(1, min(block_d, 256 // n_pad))


def _forward(u, delta, A, B, C, h0, cfg: ScanConfig, store_states: bool):
    b, d, l = u.shape
    n = A.shape[1]
    n_pad = triton.next_power_of_2(n)
    block_d = _block_d(cfg.block_d_fwd, n_pad)
    n_chunks = triton.cdiv(l, cfg.chunk)
    y = torch.empty_like(u)
    hT = torch.empty(b, d, n, device=u.device, dtype=torch.float32)
    states = torch.empty(b, n_chunks, d, n, device=u.device, dtype=torch.float32) if store_states else hT
    h0c = h0.contiguous() if h0 is not None else hT
    _fwd_kernel[(b, triton.cdiv(d, block_d))](
        u, delta, A, B, C, h0c, y, hT, states,
        l, d, n,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *y.stride(),
        HAS_H0=h0 is not None, STORE_STATES=store_states,
        BLOCK_D=block_d, N=n_pad, CHUNK=cfg.chunk, num_warps=cfg.warps_fwd,
    )
    return y, hT, (states if store_states else None)


def _backward(u, delta, A, B, C, states, dy, dhT, cfg: ScanConfig):
    b, d, l = u.shape
    n = A.shape[1]
    n_pad = triton.next_power_of_2(n)
    block_d = _block_d(cfg.block_d_bwd, n_pad)
    n_blk = triton.cdiv(d, block_d)
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dA_part = torch.empty(b, d, n, **f32)
    dB_part = torch.empty(b, n_blk, n, l, **f32)
    dC_part = torch.empty(b, n_blk, n, l, **f32)
    dh0 = torch.empty(b, d, n, **f32)
    dhTc = dhT.contiguous() if dhT is not None else dh0
    _bwd_kernel[(b, n_blk)](
        u, delta, A, B, C, dy, dhTc, states,
        du, ddelta, dA_part, dB_part, dC_part, dh0,
        l, d, n, n_blk,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *dy.stride(),
        HAS_DHT=dhT is not None,
        BLOCK_D=block_d, N=n_pad, CHUNK=cfg.chunk, num_warps=cfg.warps_bwd,
    )
    dA = dA_part.sum(0)
    dB = dB_part.sum(1)
    dC = dC_part.sum(1)
    return du, ddelta, dA, dB, dC, dh0


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, initial_state, cfg):
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None: skip its work
        need_grad = any(ctx.needs_input_grad[:6])
        y, hT, states = _forward(u, delta, A, B, C, initial_state, cfg, store_states=need_grad)
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, states)
            ctx.cfg = cfg
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        u, delta, A, B, C, states = ctx.saved_tensors
        if dy is None:  # only the final state was used: a stride-0 zero costs no memory
            dy = u.new_zeros(()).expand_as(u)
        du, ddelta, dA, dB, dC, dh0 = _backward(u, delta, A, B, C, states, dy, dhT, ctx.cfg)
        dh0 = dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None
        return du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype), dh0, None


def selective_scan_triton(u, delta, A, B, C, initial_state=None, config: ScanConfig | None = None):
    """Mamba-1 selective scan with an initial state on the GPU; differentiable in every input.

    u, delta: (b, d, l) (delta already softplus'ed, > 0); A: (d, n) (negative); B, C: (b, n, l);
    initial_state: (b, d, n) or None (zeros). Returns y (b, d, l) in u's dtype and the final
    state (b, d, n) in float32. Inputs may be float32/float16/bfloat16; the arithmetic is float32.
    Gradients flow to u, delta, A, B, C, initial_state, and from both y and the final state.
    """
    _check_inputs(u, delta, A, B, C, initial_state)
    return _SelectiveScanFn.apply(u, delta, A, B, C, initial_state, config or DEFAULT_CONFIG)
