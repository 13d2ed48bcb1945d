"""The Triton depthwise causal conv1d, run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are decorated, so the kernels run in a fresh
subprocess (this file run as a script) that prints its measurements as JSON; the tests here assert
on them. The ground truth is ``causal_conv1d_reference`` in float64.
"""

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _case(b, d, l, w, seed, dtype, *, with_state=True, with_bias=True, silu=True, use_window=True, wide=0):
    """Kernel vs the float64 reference: y, the new window and every gradient. x is a channel-last
    view of a (b, l, d + wide) tensor, as Mamba's in_proj hands it over."""
    from lengthgen.ops.conv import causal_conv1d_reference
    from lengthgen.ops.triton.causal_conv1d import causal_conv1d_triton

    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    proj, weight, bias, state = r(b, l, d + wide), r(d, w) / 2, r(d), r(b, d, w - 1)
    act = "silu" if silu else None

    def run(fn, xdtype):
        p = proj.to(xdtype).requires_grad_()
        x = p[:, :, :d].transpose(1, 2)
        wt, bs = weight.clone().float().to(torch.float64 if xdtype == torch.float64 else torch.float32).requires_grad_(), None
        leaves = {"x": p, "weight": wt}
        if with_bias:
            bs = bias.to(wt.dtype).requires_grad_()
            leaves["bias"] = bs
        st = None
        if with_state:
            st = state.to(wt.dtype).requires_grad_()
            leaves["state"] = st
        y, win = fn(x, wt, bs, st, act)
        g2 = torch.Generator().manual_seed(seed + 1)
        gy = torch.randn(y.shape, generator=g2, dtype=torch.float64)
        gw = torch.randn(win.shape, generator=g2, dtype=torch.float64)
        loss = (y.double() * gy).sum() + ((win.double() * gw).sum() if use_window else 0)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return y, win, dict(zip(leaves, grads))

    ref = run(causal_conv1d_reference, torch.float64)
    ker = run(causal_conv1d_triton, dtype)
    out = {"y": rel(ker[0], ref[0]), "window": rel(ker[1], ref[1]), "y_dtype": str(ker[0].dtype),
           "window_dtype": str(ker[1].dtype), "y_channel_last": ker[0].stride(1) == 1}
    out.update({"d" + k: rel(ker[2][k], ref[2][k]) for k in ker[2]})
    return out


GROUPS = {
    "a": {
        # two time blocks (l > 64) and two channel blocks (d > 64, not a multiple), state and bias
        "fp32_full": lambda: _case(2, 70, 90, 4, 0, torch.float32, wide=6),
        # no state, no bias, no activation, width 3
        "fp32_plain": lambda: _case(1, 16, 33, 3, 1, torch.float32, with_state=False, with_bias=False, silu=False),
        # width 2 (the backward's one-load path with unused shifts) and 5 (its general loop)
        "fp32_w2": lambda: _case(2, 20, 40, 2, 5, torch.float32, wide=4),
        "fp32_w5": lambda: _case(2, 20, 40, 5, 6, torch.float32),
    },
    "b": {
        # shorter than the window: the new window mixes the old state and x
        "fp32_short": lambda: _case(2, 8, 2, 4, 2, torch.float32),
        "fp32_y_only_no_state": lambda: _case(3, 24, 64, 4, 3, torch.float32, with_state=False, use_window=False),
        "fp16_full": lambda: _case(2, 40, 70, 4, 4, torch.float16, wide=8),
        # more rows than the backward's first pass takes per program (16), the last group partial
        "fp32_rows": lambda: _case(37, 24, 20, 4, 7, torch.float32, wide=8),
        "fp32_rows_w5": lambda: _case(18, 12, 20, 5, 8, torch.float32),
    },
}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def test_the_interpreter_ran_the_kernels(interp):
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("case", ["fp32_full", "fp32_plain", "fp32_w2", "fp32_w5", "fp32_rows", "fp32_rows_w5", "fp32_short", "fp32_y_only_no_state"])
def test_float32_kernels_match_the_float64_reference(interp, case):
    r = interp[case]
    errors = {k: v for k, v in r.items() if k in ("y", "window") or k.startswith("d")}
    assert not {k: v for k, v in errors.items() if not v < 1e-6}, (case, errors)
    assert r["y_dtype"] == "torch.float32" and r["window_dtype"] == "torch.float32" and r["y_channel_last"]


def test_every_gradient_is_checked(interp):
    assert {"dx", "dweight", "dbias", "dstate"} <= set(interp["fp32_full"])
    assert set(interp["fp32_plain"]) >= {"dx", "dweight"} and "dbias" not in interp["fp32_plain"]


def test_float16_kernels_stay_close_to_the_reference(interp):
    r = interp["fp16_full"]
    assert r["y_dtype"] == "torch.float16" and r["window_dtype"] == "torch.float32"
    for key in ("y", "window", "dx", "dweight", "dbias", "dstate"):
        assert r[key] < 3e-3, (key, r[key])



@pytest.mark.parametrize("width", [2, 4, 5])
def test_the_kernels_compile_for_sm90(width):
    """The forward and both backward passes built for sm_90 (``_sm90.compile_for_sm90``'s checks) at
    the module's tiles, for a width of each path (W <= 4 loads its window once, W > 4 per shift),
    with and without a carried window, with bias and SiLU (the models') and without."""
    from _sm90 import compile_for_sm90, need_ptxas

    from lengthgen.ops.triton import causal_conv1d as cc

    need_ptxas()
    low = {"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}
    for state, bias_silu in ((False, True), (True, True), (False, False)):
        flags = dict(W=width, HAS_STATE=state, HAS_BIAS=bias_silu, SILU=bias_silu)
        bt, bd = cc.FWD_TILE
        compile_for_sm90(cc._fwd_kernel, dict(flags, BT=bt, BD=bd), 4, low)
        bt, bd = cc.DPRE_TILE
        compile_for_sm90(cc._bwd_dpre_kernel, dict(flags, BT=bt, BD=bd, RB=cc.DPRE_ROWS), cc.DPRE_WARPS, low)
    bt, bd = cc.DX_TILE
    compile_for_sm90(cc._bwd_dx_kernel, dict(W=width, BT=bt, BD=bd), 4, low)

if __name__ == "__main__":
    print(json.dumps(run_group("lengthgen.ops.triton.causal_conv1d", GROUPS, sys.argv[1])))
