"""The Triton Mamba-1 selective scan, run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are decorated, so the kernel runs in a fresh
subprocess (this file run as a script) that prints its measurements as JSON; the tests here assert
on them. The ground truth is a plain float64 loop over time written below.
"""

import json
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402


def reference_scan(u, delta, A, B, C, h0=None):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = sum_n C_t h_t, one step at a time."""
    b, d, l = u.shape
    h = h0 if h0 is not None else u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, -1), h


def make_inputs(b, d, n, l, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    u, B, C, h0 = r(b, d, l), r(b, n, l), r(b, n, l), r(b, d, n)
    delta = torch.nn.functional.softplus(r(b, d, l) - 1.0)
    A = -torch.exp(0.5 * r(d, n))
    return u, delta, A, B, C, h0


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


NAMES = ("u", "delta", "A", "B", "C", "initial_state")


def _grad_case(shape, seed, dtype, config, with_h0, use_final):
    """Kernel (inputs cast to `dtype`) vs the float64 loop: relative errors of y, final state, grads."""
    from lengthgen.ops.triton import ScanConfig, selective_scan_triton

    ins = list(make_inputs(*shape, seed))
    if not with_h0:
        ins[5] = None
    ref_in = [x.requires_grad_() if x is not None else None for x in ins]
    y, hT = reference_scan(*ref_in)
    gy, gh = torch.randn_like(y), torch.randn_like(hT)
    loss = (y * gy).sum() + ((hT * gh).sum() if use_final else 0)
    live = [x for x in ref_in if x is not None]
    ref_grads = torch.autograd.grad(loss, live)

    k_in = [x.detach().to(dtype).requires_grad_() if x is not None else None for x in ins]
    if k_in[2] is not None:
        k_in[2] = ins[2].detach().float().requires_grad_()  # A stays float32, as in a model
    y2, hT2 = selective_scan_triton(*k_in, config=ScanConfig(**config))
    loss2 = (y2.float() * gy.float()).sum() + ((hT2 * gh.float()).sum() if use_final else 0)
    k_grads = torch.autograd.grad(loss2, [x for x in k_in if x is not None])
    out = {"y": rel(y2, y), "final_state": rel(hT2, hT), "y_dtype": str(y2.dtype), "final_dtype": str(hT2.dtype)}
    names = [nm for nm, x in zip(NAMES, ins) if x is not None]
    for nm, a, b in zip(names, k_grads, ref_grads):
        out["d" + nm] = rel(a, b)
        out["d" + nm + "_dtype"] = str(a.dtype)
    return out


def _split_case():
    """One call over l steps vs two calls with the final state carried (float32 kernel both ways)."""
    from lengthgen.ops.triton import ScanConfig, selective_scan_triton

    cfg = ScanConfig(**SMALL)
    u, delta, A, B, C, h0 = [x.float() for x in make_inputs(1, 8, 4, 70, seed=5)]
    y, hT = selective_scan_triton(u, delta, A, B, C, h0, config=cfg)
    k = 29
    y1, h1 = selective_scan_triton(u[..., :k], delta[..., :k], A, B[..., :k], C[..., :k], h0, config=cfg)
    y2, h2 = selective_scan_triton(u[..., k:], delta[..., k:], A, B[..., k:], C[..., k:], h1, config=cfg)
    return {"y": (torch.cat([y1, y2], -1) - y).abs().max().item(), "final_state": (h2 - hT).abs().max().item(),
            "y_scale": y.abs().max().item()}


def _strided_case():
    """B, C as transposed views of (b, l, n) tensors (how a model slices them) give the same result."""
    from lengthgen.ops.triton import ScanConfig, selective_scan_triton

    cfg = ScanConfig(**SMALL)
    u, delta, A, B, C, h0 = [x.float() for x in make_inputs(1, 8, 4, 20, seed=6)]
    Bv, Cv = B.transpose(1, 2).contiguous().transpose(1, 2), C.transpose(1, 2).contiguous().transpose(1, 2)
    assert not Bv.is_contiguous()
    ya, ha = selective_scan_triton(u, delta, A, B, C, h0, config=cfg)
    yb, hb = selective_scan_triton(u, delta, A, Bv, Cv, h0, config=cfg)
    return {"y": (ya - yb).abs().max().item(), "final_state": (ha - hb).abs().max().item()}


SMALL = dict(chunk=8, block_d_fwd=4, block_d_bwd=4, warps_fwd=1, warps_bwd=1)
# the interpreter runs a scan's combine function element by element: keep tiles tiny, and split
# the cases over two processes that run side by side
GROUPS = {
    "a": {
        "fp32_h0": lambda: _grad_case((2, 8, 4, 70), 0, torch.float32, SMALL, with_h0=True, use_final=True),
        # l = 37 is not a multiple of the chunk, d = 6 not of the channel block, n = 5 is padded to 8
        "fp32_padded": lambda: _grad_case((1, 6, 5, 37), 1, torch.float32, SMALL, with_h0=True, use_final=True),
        "fp32_zero_init_y_only": lambda: _grad_case((1, 4, 4, 21), 2, torch.float32, SMALL, with_h0=False,
                                                    use_final=False),
    },
    "b": {
        "fp32_default_config": lambda: _grad_case((1, 16, 8, 20), 3, torch.float32, {}, with_h0=True, use_final=True),
        "bf16_h0": lambda: _grad_case((1, 8, 4, 70), 4, torch.bfloat16, SMALL, with_h0=True, use_final=True),
        "split": lambda: _split_case(),
        "strided": lambda: _strided_case(),
    },
}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def test_runs_the_triton_kernel_in_the_interpreter(interp):
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("case", ["fp32_h0", "fp32_padded", "fp32_default_config"])
def test_fp32_matches_float64_loop_incl_initial_state_grad(interp, case):
    r = interp[case]
    keys = ["y", "final_state"] + ["d" + nm for nm in NAMES]
    for k in keys:
        assert r[k] < 1e-5, (case, k, r[k])
    assert r["final_dtype"] == "torch.float32" and r["y_dtype"] == "torch.float32"


def test_zero_initial_state_and_unused_final_state(interp):
    r = interp["fp32_zero_init_y_only"]
    assert "dinitial_state" not in r
    for k in ("y", "final_state", "du", "ddelta", "dA", "dB", "dC"):
        assert r[k] < 1e-5, (k, r[k])


def test_bf16_inputs_compute_in_fp32(interp):
    r = interp["bf16_h0"]
    assert r["y_dtype"] == "torch.bfloat16" and r["final_dtype"] == "torch.float32"
    assert r["du_dtype"] == "torch.bfloat16" and r["dinitial_state_dtype"] == "torch.bfloat16"
    for k in ("y", "final_state", "du", "ddelta", "dA", "dB", "dC", "dinitial_state"):
        assert r[k] < 2e-2, (k, r[k])


def test_split_and_carry_is_exact_to_fp32_rounding(interp):
    r = interp["split"]
    assert r["y"] <= 1e-5 * r["y_scale"] and r["final_state"] < 1e-5


def test_strided_B_C(interp):
    assert interp["strided"] == {"y": 0.0, "final_state": 0.0}


def test_reference_loop_is_the_recurrence():
    """The ground truth itself, against a closed form for one channel and one state dimension."""
    u, delta, A, B, C, h0 = make_inputs(1, 1, 1, 6, seed=7)
    y, hT = reference_scan(u, delta, A, B, C, h0)
    h, expected = h0[0, 0, 0], []
    for t in range(6):
        h = torch.exp(delta[0, 0, t] * A[0, 0]) * h + delta[0, 0, t] * B[0, 0, t] * u[0, 0, t]
        expected.append(C[0, 0, t] * h)
    assert torch.allclose(y[0, 0], torch.stack(expected), rtol=0, atol=1e-14)
    assert torch.allclose(hT[0, 0, 0], h, rtol=0, atol=1e-14)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="checks the non-interpreted error path")
def test_bad_inputs_give_clear_errors():
    from lengthgen.ops.triton import selective_scan_triton

    u, delta, A, B, C, h0 = [x.float() for x in make_inputs(1, 4, 4, 5, seed=0)]
    with pytest.raises(ValueError, match="backend='torch'"):
        selective_scan_triton(u, delta, A, B, C, h0)  # CPU tensors without the interpreter
    with pytest.raises(ValueError, match="initial_state must have shape"):
        selective_scan_triton(u, delta, A, B, C, h0[:, :2])
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan_triton(u, delta, A, B[:, :3], C, h0)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan_triton(u, delta, A[:2], B, C, h0)
    with pytest.raises(ValueError, match="float64"):
        selective_scan_triton(u.double(), delta, A, B, C, h0)
    with pytest.raises(ValueError, match="length >= 1"):
        selective_scan_triton(u[..., :0], delta[..., :0], A, B[..., :0], C[..., :0], h0)
    with pytest.raises(ValueError, match="d_state <= 64"):
        n = 65
        selective_scan_triton(u, delta, -torch.ones(4, n), torch.zeros(1, n, 5), torch.zeros(1, n, 5))


if __name__ == "__main__":
    print(json.dumps(run_group("lengthgen.ops.triton.selective_scan", GROUPS, sys.argv[1])))
