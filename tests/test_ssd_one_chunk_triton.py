"""The one-chunk Mamba-2 SSD Triton kernels, run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are decorated, so the kernels run in a fresh
subprocess (this file run as a script) that prints its measurements as JSON; the tests here assert
on them. The ground truth is ``ssd_scan_reference`` in float64 (itself checked against a step-by-step
recurrence in tests/test_ops.py).
"""

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402

GRADS = ("x", "dt", "A", "B", "C", "D", "dt_bias")


def make_inputs(b, l, h, p, g, n, seed, softplus=True):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    dt = r(b, l, h) - 1.0 if softplus else torch.nn.functional.softplus(r(b, l, h) - 1.0)
    return {"x": r(b, l, h, p), "dt": dt, "A": -torch.exp(0.5 * r(h)), "B": r(b, l, g, n), "C": r(b, l, g, n),
            "D": r(h), "dt_bias": 0.3 * r(h)}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _case(shape, seed, dtype, *, with_d=True, with_bias=True, softplus=True, use_final=True):
    """Kernel (inputs cast to ``dtype``) vs the float64 reference: relative errors of y, S, grads."""
    from lengthgen.ops.ssd import ssd_scan_reference
    from lengthgen.ops.triton.ssd_one_chunk import ssd_one_chunk

    ins = make_inputs(*shape, seed, softplus=softplus)
    if not with_d:
        ins["D"] = None
    if not with_bias:
        ins["dt_bias"] = None
    names = [k for k in GRADS if ins[k] is not None]

    def run(fn, cast):
        t = {k: (None if v is None else cast(v).requires_grad_()) for k, v in ins.items()}
        y, S = fn(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], t["dt_bias"], softplus)
        gen = torch.Generator().manual_seed(seed + 100)
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        gs = torch.randn(S.shape, generator=gen, dtype=torch.float64)
        loss = (y.double() * gy).sum() + ((S.double() * gs).sum() if use_final else 0)
        grads = torch.autograd.grad(loss, [t[k] for k in names])
        return y, S, dict(zip(names, grads))

    ref = run(lambda *a: ssd_scan_reference(*a[:7], dt_softplus=a[7], chunk_size=64), lambda v: v.clone())
    # the parameters stay float32 under autocast: only activations take the low dtype
    cast = lambda v: v.to(dtype) if v.dim() > 1 else v.float()  # noqa: E731
    ker = run(lambda *a: ssd_one_chunk(*a[:7], dt_softplus=a[7]), cast)
    out = {"y": rel(ker[0], ref[0]), "final_state": rel(ker[1], ref[1]),
           "y_dtype": str(ker[0].dtype), "state_dtype": str(ker[1].dtype)}
    out.update({"d" + k: rel(ker[2][k], ref[2][k]) for k in names})
    out["grad_dtypes_match"] = all(ker[2][k].dtype == cast(ins[k]).dtype for k in names)
    return out


def _strided_case():
    """x, dt, B and C as slices of one projection (how the Mamba-2 mixer hands them over) give
    bit-identical results to contiguous copies."""
    from lengthgen.ops.triton.ssd_one_chunk import ssd_one_chunk

    b, l, h, p, g, n = 2, 20, 2, 8, 1, 8
    ins = make_inputs(b, l, h, p, g, n, seed=7)
    proj = torch.randn(b, l, h * p + 2 * g * n + h, dtype=torch.float64).float()
    x = proj[..., : h * p].unflatten(-1, (h, p))
    B = proj[..., h * p: h * p + g * n].unflatten(-1, (g, n))
    C = proj[..., h * p + g * n: h * p + 2 * g * n].unflatten(-1, (g, n))
    dt = proj[..., -h:]
    assert not x.is_contiguous() and not dt.is_contiguous()
    A, D, bias = ins["A"].float(), ins["D"].float(), ins["dt_bias"].float()
    ya, sa = ssd_one_chunk(x, dt, A, B, C, D, bias, dt_softplus=True)
    yb, sb = ssd_one_chunk(x.contiguous(), dt.contiguous(), A, B.contiguous(), C.contiguous(), D, bias,
                           dt_softplus=True)
    return {"y": (ya - yb).abs().max().item(), "final_state": (sa - sb).abs().max().item()}


def _fits_case():
    from lengthgen.ops.triton.ssd_one_chunk import fits

    x = torch.zeros(1, 64, 2, 64)
    B = torch.zeros(1, 64, 1, 128)
    return {"fits_64": fits(x, B, 64, None), "fits_with_state": fits(x, B, 64, torch.zeros(1)),
            "fits_longer_than_chunk": fits(x, B, 32, None),
            "fits_long": fits(torch.zeros(1, 65, 2, 64), torch.zeros(1, 65, 1, 128), 256, None),
            "fits_big_state": fits(x, torch.zeros(1, 64, 1, 256), 64, None),
            "fits_float64": fits(x.double(), B.double(), 64, None),
            "fits_int32_bound": fits(torch.empty(2**17, 64, 2, 64, device="meta"),
                                     torch.empty(2**17, 64, 1, 128, device="meta"), 64, None)}


GROUPS = {
    "a": {
        # l, p, n not powers of two (padded tiles); one group of 2 heads; everything on
        "fp32_full": lambda: _case((2, 23, 2, 12, 1, 20), 0, torch.float32),
        # 2 groups of 2 heads (dB, dC summed over a group's heads); no D, no bias, no softplus
        "fp32_groups_plain": lambda: _case((1, 16, 4, 16, 2, 16), 1, torch.float32, with_d=False, with_bias=False,
                                           softplus=False),
        "fp32_y_only": lambda: _case((1, 40, 2, 16, 1, 16), 2, torch.float32, use_final=False),
        # the reduced study's m2-m at T = 64: full 64 x 64 x 128 tiles, 6 heads in one group
        "fp32_study_shape": lambda: _case((2, 64, 6, 64, 1, 128), 9, torch.float32),
    },
    "b": {
        # the low-precision path in float16: the interpreter's tl.dot mishandles bfloat16 operands
        # (numpy has no bfloat16), so bf16 is checked on the GPU (tests/gpu/test_ops_gpu.py)
        "fp16_full": lambda: _case((2, 32, 2, 16, 1, 32), 3, torch.float16),
        "fp32_length_1": lambda: _case((1, 1, 2, 16, 1, 16), 4, torch.float32),
        "strided": lambda: _strided_case(),
        "fits": lambda: _fits_case(),
    },
}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def test_the_interpreter_ran_the_kernels(interp):
    # under TRITON_INTERPRET the decorated kernel is an InterpretedFunction, not a compiled JITFunction
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("case", ["fp32_full", "fp32_groups_plain", "fp32_y_only", "fp32_length_1",
                                  "fp32_study_shape"])
def test_float32_kernels_match_the_float64_reference(interp, case):
    r = interp[case]
    for key in ("y", "final_state", *("d" + k for k in GRADS)):
        if key in r:
            assert r[key] < 1e-5, (case, key, r[key])
    assert r["y_dtype"] == "torch.float32" and r["state_dtype"] == "torch.float32"
    assert r["grad_dtypes_match"]


def test_every_gradient_is_checked(interp):
    assert {"d" + k for k in GRADS} <= set(interp["fp32_full"])
    assert "dD" not in interp["fp32_groups_plain"] and "ddt_bias" not in interp["fp32_groups_plain"]


def test_float16_kernels_stay_close_to_the_reference(interp):
    r = interp["fp16_full"]
    assert r["y_dtype"] == "torch.float16" and r["state_dtype"] == "torch.float32"
    for key in ("y", "final_state", *("d" + k for k in GRADS)):
        assert r[key] < 3e-3, (key, r[key])
    assert r["grad_dtypes_match"]


def test_strided_views_give_identical_results(interp):
    assert interp["strided"] == {"y": 0.0, "final_state": 0.0}


def test_fits_only_one_chunk_from_zero_state(interp):
    assert interp["fits"] == {"fits_64": True, "fits_with_state": False, "fits_longer_than_chunk": False,
                              "fits_long": False, "fits_big_state": False, "fits_float64": False,
                              "fits_int32_bound": False}


if __name__ == "__main__":
    print(json.dumps(run_group("lengthgen.ops.triton.ssd_one_chunk", GROUPS, sys.argv[1])))
