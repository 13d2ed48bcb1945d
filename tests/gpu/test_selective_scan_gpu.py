"""The Triton Mamba-1 selective scan on CUDA vs a float64 torch loop (and mamba-ssm's own reference).

Errors are relative, ||kernel - reference|| / ||reference||, printed for the log (pytest -s).
"""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
triton_scan = pytest.importorskip("lengthgen.ops.triton")
selective_scan_triton = triton_scan.selective_scan_triton

DEV = "cuda"
NAMES = ("u", "delta", "A", "B", "C", "initial_state")


def reference_scan(u, delta, A, B, C, h0=None):
    """float64 loop over time; decay and input terms are formed per step so memory stays (b, d, n)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    b, d, l = u.shape
    h = h0.double() if h0 is not None else u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    return torch.stack(ys, -1), h


def mamba_like_inputs(b, d, n, l, seed, dtype=torch.float32):
    """Inputs at Mamba-1's scales: delta in about [1e-3, 1e-1], S4D-real A = -(1..n)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=DEV)
    dt_bias = torch.log(torch.expm1(torch.exp(torch.empty(d, device=DEV).uniform_(-6.9, -2.3, generator=g))))
    delta = torch.nn.functional.softplus(0.5 * r(b, d, l) + dt_bias[:, None])
    A = -torch.arange(1, n + 1, device=DEV, dtype=torch.float32).repeat(d, 1)
    u, B, C, h0 = r(b, d, l), r(b, n, l), r(b, n, l), r(b, d, n)
    return [t.to(dtype) for t in (u, delta)] + [A] + [t.to(dtype) for t in (B, C, h0)]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def compare(shape, seed, dtype, with_h0=True):
    ins = mamba_like_inputs(*shape, seed, dtype)
    if not with_h0:
        ins[5] = None
    live = [x.requires_grad_() for x in ins if x is not None]
    y, hT = selective_scan_triton(*ins)
    gy, gh = torch.randn_like(y, dtype=torch.float32), torch.randn_like(hT)
    grads = torch.autograd.grad((y.float() * gy).sum() + (hT * gh).sum(), live)

    ref_in = [x.detach().double().requires_grad_() if x is not None else None for x in ins]
    ry, rh = reference_scan(*ref_in)
    ref_grads = torch.autograd.grad((ry * gy.double()).sum() + (rh * gh.double()).sum(),
                                    [x for x in ref_in if x is not None])
    errs = {"y": rel(y, ry), "final_state": rel(hT, rh)}
    names = [nm for nm, x in zip(NAMES, ins) if x is not None]
    errs.update({"d" + nm: rel(a, b) for nm, a, b in zip(names, grads, ref_grads)})
    print(f"\nselective_scan_triton {dtype} {shape}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
    assert y.dtype == dtype and hT.dtype == torch.float32
    assert all(g.dtype == x.dtype for g, x in zip(grads, live))
    return errs


@pytest.mark.parametrize("shape", [(2, 100, 16, 300), (1, 24, 12, 129), (2, 40, 64, 70), (1, 8, 1, 33)])
def test_fp32_matches_float64_loop(shape):
    """Odd d, padded n (12 -> 16), the largest n, n = 1, lengths off the chunk grid."""
    errs = compare(shape, seed=0, dtype=torch.float32)
    assert max(errs.values()) < 1e-3, errs


def test_fp32_zero_initial_state():
    errs = compare((2, 64, 16, 200), seed=1, dtype=torch.float32, with_h0=False)
    assert "dinitial_state" not in errs and max(errs.values()) < 1e-3, errs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs(dtype):
    errs = compare((2, 64, 16, 257), seed=2, dtype=dtype)
    assert max(errs.values()) < 2e-2, errs


def test_realistic_shape_fp32():
    """Mamba-1 130m: d_inner 1536, d_state 16, at the paper's training context 2048."""
    errs = compare((2, 1536, 16, 2048), seed=3, dtype=torch.float32)
    assert max(errs.values()) < 1e-3, errs


def test_split_and_carry():
    u, delta, A, B, C, h0 = mamba_like_inputs(2, 128, 16, 1000, seed=4)
    y, hT = selective_scan_triton(u, delta, A, B, C, h0)
    parts, h = [], h0
    for lo, hi in ((0, 1), (1, 333), (333, 1000)):
        yp, h = selective_scan_triton(u[..., lo:hi], delta[..., lo:hi], A, B[..., lo:hi], C[..., lo:hi], h)
        parts.append(yp)
    ey, eh = rel(torch.cat(parts, -1), y), rel(h, hT)
    print(f"\nsplit and carry: y {ey:.2e}, final_state {eh:.2e}")
    assert ey < 1e-5 and eh < 1e-5


def test_no_grad_path_matches_grad_path():
    """Without autograd the forward skips saving chunk states; the outputs are unchanged."""
    ins = mamba_like_inputs(1, 64, 16, 100, seed=5)
    with torch.no_grad():
        y0, h0 = selective_scan_triton(*ins)
    y1, h1 = selective_scan_triton(*[x.requires_grad_() for x in ins])
    assert torch.equal(y0, y1.detach()) and torch.equal(h0, h1.detach())


def test_matches_mamba_ssm_reference_zero_init():
    """Same parameterization as mamba-ssm: its pure-torch selective_scan_ref, zero initial state."""
    from lengthgen.ops import _mamba_import

    try:
        _mamba_import.mamba_chunk_scan_combined()  # registers stand-ins for missing compiled modules
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    except ImportError as e:
        pytest.skip(f"mamba-ssm not importable: {e}")
    u, delta, A, B, C, _ = mamba_like_inputs(2, 96, 16, 300, seed=6)
    # selective_scan_ref computes in float32 internally (it casts), so feed it float32
    ry, rh = selective_scan_ref(u, delta, A, B, C, return_last_state=True)
    y, hT = selective_scan_triton(u, delta, A, B, C)
    ey, eh = rel(y, ry), rel(hT, rh)
    print(f"\nvs mamba_ssm selective_scan_ref: y {ey:.2e}, final_state {eh:.2e}")
    assert ey < 1e-4 and eh < 1e-4
