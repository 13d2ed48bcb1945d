"""The Triton squared ReLU, run on CPU through Triton's interpreter (subprocesses, as in
test_rms_norm_triton.py), and compiled for sm_90 without a GPU.

In float32 the kernel is bit-identical to torch's ``relu(x).square()`` both ways (relu is exact,
the square and ``2 r dy`` round once in either); float16 is within its rounding of float64.
"""

import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402

SHAPES = {"rows": (3, 37, 448), "ragged": (5001,), "empty": (0, 8)}  # 5001: not a multiple of BLOCK


def _case(shape, dtype):
    from lengthgen.ops.activations import squared_relu_reference
    from lengthgen.ops.triton.squared_relu import squared_relu_triton

    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(shape, generator=gen, dtype=torch.float64)
    dy64 = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x64.to(dtype).requires_grad_()
    y = squared_relu_triton(x)
    (dx,) = torch.autograd.grad(y, x, dy64.to(dtype))
    xt = x.detach().clone().requires_grad_()
    yt = squared_relu_reference(xt)
    (dxt,) = torch.autograd.grad(yt, xt, dy64.to(dtype))
    xr = x.detach().double().requires_grad_()
    yr = squared_relu_reference(xr)
    (dxr,) = torch.autograd.grad(yr, xr, dy64.to(dtype).double())

    def err(a, b):
        return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if b.numel() else 0.0

    return {"y_err": err(y, yr), "dx_err": err(dx, dxr), "y_dtype": str(y.dtype), "dx_dtype": str(dx.dtype),
            "y_same_as_torch": torch.equal(y, yt), "dx_same_as_torch": torch.equal(dx, dxt)}


GROUPS = {
    "a": {f"fp32_{n}": (lambda s=s: _case(s, torch.float32)) for n, s in SHAPES.items()},
    "b": {f"fp16_{n}": (lambda s=s: _case(s, torch.float16)) for n, s in SHAPES.items() if n != "empty"},
}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def test_the_interpreter_ran_the_kernels(interp):
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_float32_is_bit_identical_to_torch(interp, name):
    r = interp[f"fp32_{name}"]
    assert r["y_same_as_torch"] and r["dx_same_as_torch"], r
    assert r["y_dtype"] == r["dx_dtype"] == "torch.float32"


@pytest.mark.parametrize("name", ["rows", "ragged"])
def test_float16_is_within_its_rounding_of_float64(interp, name):
    r = interp[f"fp16_{name}"]
    assert r["y_err"] < 1e-3 and r["dx_err"] < 1e-3, r
    assert r["y_dtype"] == r["dx_dtype"] == "torch.float16"


def test_the_op_keeps_the_reference_off_cuda():
    from lengthgen.ops.activations import squared_relu

    x = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float64)
    assert torch.equal(squared_relu(x), torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="CUDA"):
        squared_relu(x.float(), backend="kernel")


def test_the_kernels_compile_for_sm90():
    from _sm90 import compile_for_sm90, need_ptxas

    need_ptxas()
    from lengthgen.ops.triton import squared_relu as sq

    for low in (frozenset(), frozenset({"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"})):
        compile_for_sm90(sq._fwd_kernel, dict(BLOCK=sq.BLOCK), 8, low)
        compile_for_sm90(sq._bwd_kernel, dict(BLOCK=sq.BLOCK), 8, low)


if __name__ == "__main__":
    result = run_group("lengthgen.ops.triton.squared_relu", GROUPS, sys.argv[1])
    import json

    print(json.dumps(result))
