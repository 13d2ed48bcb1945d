"""The Triton token-shift interpolations (RWKV-6's lerps), run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are decorated, so the kernels run in fresh
subprocesses (this file run as a script) that print their measurements as JSON; the tests here
assert on them. The ground truth is ``token_shift_lerp_reference`` in float64 on the same rounded
inputs. The interpreter does not compile, so the models' cases are also compiled for sm_90
(Triton's ptxas, no GPU).
"""

import hashlib
import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402

NAMES = ("x", "previous", "mu", "bias")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(b, t, d, n, seed, x_dtype=torch.float32, mu_dtype=torch.float32, dynamic=False, prev=True, bias=False,
            i_major=False):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    ins = {"x": r(b, t, d).to(x_dtype), "mu": (0.5 * r(*((b, t, n, d) if dynamic else (n, d)))).to(mu_dtype)}
    if i_major:  # (B, T, n, D) viewed from (n, B, T, D) memory, as the time mix's einsum returns it
        ins["mu"] = ins["mu"].permute(2, 0, 1, 3).contiguous().permute(1, 2, 0, 3)
    if prev:
        ins["previous"] = r(b, d).to(x_dtype)
    if bias:
        ins["bias"] = (0.5 * r(n, d)).float()
    return ins


def _run(ins, fn, cast, seed):
    """fn on leaves made by ``cast``; the gradients of a random linear functional of the outputs
    (the last output left out when there are several: its gradient is None, taken as zeros)."""
    leaves = {k: cast(v).requires_grad_() for k, v in ins.items()}
    outs = fn(*(leaves.get(k) for k in NAMES))
    gen = torch.Generator().manual_seed(seed + 1)
    used = outs[:-1] if len(outs) > 1 else outs
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum() for o in used)
    return outs, dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def _case(shape, seed, out_dtype=None, **kw):
    """Kernel vs float64 on the same values: the error and dtype of every output and gradient."""
    from lengthgen.ops.token_mix import token_shift_lerp_reference
    from lengthgen.ops.triton.token_mix import token_shift_lerp_triton

    ins = _inputs(*shape, seed, **kw)
    outs, grads = _run(ins, lambda *a: token_shift_lerp_triton(*a, out_dtype=out_dtype), lambda v: v.clone(), seed)
    ref_outs, ref_grads = _run(ins, token_shift_lerp_reference, lambda v: v.double(), seed)
    res = {f"out{i}": [rel(o, r), str(o.dtype)] for i, (o, r) in enumerate(zip(outs, ref_outs))}
    res.update({"d" + k: [rel(grads[k], ref_grads[k]), str(grads[k].dtype)] for k in grads})
    res["grad_dtypes_match"] = all(grads[k].dtype == ins[k].dtype for k in ins)
    res["shapes"] = [list(o.shape) for o in outs]
    return res


def _digest(shape, seed, **kw):
    """A hash of the kernel's outputs and gradients, and whether a second call gives the same bits."""
    from lengthgen.ops.triton.token_mix import token_shift_lerp_triton

    ins = _inputs(*shape, seed, **kw)
    runs = [_run(ins, token_shift_lerp_triton, lambda v: v.clone(), seed) for _ in range(2)]
    flat = [list(outs) + list(grads.values()) for outs, grads in runs]
    same = all(torch.equal(a, b) for a, b in zip(*flat))
    h = hashlib.sha256(b"".join(t.detach().contiguous().view(torch.uint8).numpy().tobytes() for t in flat[0]))
    return {"same": same, "hash": h.hexdigest()}


BF16 = torch.bfloat16
BITS = {
    "time_mix_five": ((2, 100, 200, 5), 30, dict(dynamic=True, bias=True)),
    "channel_mix": ((2, 100, 200, 2), 31, {}),
}
# (B, T, D, n), seed, output dtype (None: promoted), inputs; T = 37 is no multiple of the tile's 32
# steps, D = 80 and D = 200 no multiple of its channels (128 forward, 64 backward)
CASES = {
    "a": {
        "static_n1": ((2, 37, 80, 1), 0, None, {}),
        "static_n2_no_previous": ((2, 37, 200, 2), 1, None, dict(prev=False)),
        "dynamic_n5_bias": ((2, 37, 80, 5), 2, None, dict(dynamic=True, bias=True)),
        "dynamic_n5_bias_no_previous": ((2, 37, 80, 5), 3, None, dict(dynamic=True, bias=True, prev=False)),
        "dynamic_n5_T1": ((3, 1, 80, 5), 4, None, dict(dynamic=True, bias=True)),
        "static_n2_T1_no_previous": ((3, 1, 80, 2), 5, None, dict(prev=False)),
    },
    "b": {
        "dynamic_n5_mu_bf16": ((2, 37, 80, 5), 6, None, dict(dynamic=True, bias=True, mu_dtype=BF16)),
        "dynamic_n5_autocast": ((2, 37, 80, 5), 7, BF16, dict(dynamic=True, bias=True, mu_dtype=BF16)),
        "dynamic_n5_no_bias": ((2, 37, 200, 5), 8, None, dict(dynamic=True)),
        "dynamic_n5_i_major_autocast": ((2, 37, 80, 5), 12, BF16, dict(dynamic=True, bias=True, mu_dtype=BF16,
                                                                         i_major=True)),
        "static_n2_x_bf16": ((2, 37, 80, 2), 9, None, dict(x_dtype=BF16)),
        "static_n2_all_bf16": ((2, 37, 80, 2), 10, None, dict(x_dtype=BF16, mu_dtype=BF16)),
        "static_n1_bias_autocast": ((2, 37, 80, 1), 11, BF16, dict(bias=True)),
    },
}
GROUPS = {
    g: {**{k: (lambda v=v: _case(v[0], v[1], v[2], **v[3])) for k, v in cases.items()},
        **{f"bits_{k}": (lambda v=v: _digest(v[0], v[1], **v[2])) for k, v in BITS.items()}}
    for g, cases in CASES.items()
}
ALL = {k: v for cases in CASES.values() for k, v in cases.items()}


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def test_the_interpreter_ran_the_kernels(interp):
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("case", sorted(ALL))
def test_kernels_match_the_float64_reference(interp, case):
    """With float32 outputs, float32 outputs and gradients within 1e-6 of float64; bfloat16
    tensors (and everything when the outputs are bfloat16, whose rounding the gradients carry)
    within 1e-2. Gradients come in the inputs' dtypes, outputs in the promoted or asked-for one."""
    r = interp[case]
    shape, _, out_dtype, kw = ALL[case]
    errors = {k: v for k, v in r.items() if k.startswith(("out", "d")) and isinstance(v, list)}
    bf16_out = out_dtype is BF16 or (kw.get("x_dtype") is BF16 and kw.get("mu_dtype") is BF16)
    bad = {k: v for k, (v, dtype) in errors.items()
           if not v < (1e-2 if bf16_out or dtype == "torch.bfloat16" else 1e-6)}
    assert not bad, (case, errors)
    want = "torch.bfloat16" if bf16_out else "torch.float32"
    assert all(errors[f"out{i}"][1] == want for i in range(shape[3])), errors
    assert r["grad_dtypes_match"] and r["shapes"] == [list(shape[:3])] * shape[3]
    wanted = {"dx", "dmu"} | ({"dprevious"} if kw.get("prev", True) else set()) | ({"dbias"} if kw.get("bias") else set())
    assert set(k for k in errors if k.startswith("d")) == wanted


@pytest.mark.parametrize("case", sorted(BITS))
def test_gradients_are_bit_identical_across_calls_and_processes(interp, case):
    a, b = interp[f"a:bits_{case}"], interp[f"b:bits_{case}"]
    assert a["same"] and b["same"]
    assert a["hash"] == b["hash"]


def test_unsupported_dtypes_raise():
    from lengthgen.ops.triton.token_mix import token_shift_lerp_triton

    x = torch.randn(1, 3, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16"):
        token_shift_lerp_triton(x, None, torch.zeros(1, 8))


def test_the_op_routes_to_the_kernel_with_the_output_dtype(monkeypatch):
    """``ops.token_shift_lerp`` on CUDA (faked): the kernel family ``triton_token_mix``, outputs in
    the promoted dtype, or in the autocast dtype under CUDA autocast."""
    from lengthgen.ops import _backend, token_mix
    from lengthgen.ops.triton import token_mix as tm

    assert "triton_token_mix" in _backend.KERNELS
    asked, seen = [], []

    def fake(x, previous, mu, bias, out_dtype):
        seen.append(out_dtype)
        return tuple(o.to(out_dtype) for o in token_mix.token_shift_lerp_reference(x, previous, mu, bias))

    monkeypatch.setattr(token_mix, "use_kernel", lambda backend, kernel, *t: asked.append(kernel) or True)
    monkeypatch.setattr(tm, "token_shift_lerp_triton", fake)
    x, mu, bias = torch.randn(2, 3, 8), torch.randn(2, 3, 5, 8, dtype=torch.bfloat16), torch.randn(5, 8)
    assert token_mix.token_shift_lerp(x, None, mu, bias)[0].dtype == torch.float32
    token_mix.token_shift_lerp(x.bfloat16(), None, mu)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device: device == "cuda")
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.bfloat16)
    outs = token_mix.token_shift_lerp(x, x[:, -1], mu, bias)
    assert seen == [torch.float32, torch.bfloat16, torch.bfloat16] and asked == ["triton_token_mix"] * 3
    assert len(outs) == 5 and outs[0].dtype == torch.bfloat16


# (n, dynamic, bias, previous, pointers in bf16 under autocast) of each use in RWKV-6
MODEL_CASES = {
    "time_mix_first": (1, False, False, True, {"out_ptr", "g_ptr"}),
    "time_mix_five": (5, True, True, True, {"mu_ptr", "dmu_ptr", "out_ptr", "g_ptr"}),
    "time_mix_five_no_previous": (5, True, True, False, {"mu_ptr", "dmu_ptr", "out_ptr", "g_ptr"}),
    "channel_mix": (2, False, False, True, {"x_ptr", "prev_ptr", "out_ptr", "g_ptr", "dx_ptr", "dprev_ptr"}),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_the_kernels_compile_for_sm90(case):
    """Forward and backward built for sm_90 at RWKV-6-70m's width (D = 512), with the dtypes they
    get under autocast (``_sm90.compile_for_sm90``'s checks)."""
    from _sm90 import compile_for_sm90, need_ptxas

    from lengthgen.ops.triton import token_mix as tm

    need_ptxas()
    n, dynamic, bias, prev, low = MODEL_CASES[case]
    bt, bd_fwd, bd_bwd = tm.config(512)
    flags = dict(N_MIX=n, DYNAMIC=dynamic, HAS_PREV=prev, HAS_BIAS=bias, BT=bt)
    compile_for_sm90(tm._fwd_kernel, dict(flags, BD=bd_fwd), tm.NUM_WARPS, low)
    compile_for_sm90(tm._bwd_kernel, dict(flags, BD=bd_bwd), tm.NUM_WARPS, low)


if __name__ == "__main__":
    result = run_group("lengthgen.ops.triton.token_mix", GROUPS, sys.argv[1])
    # the two groups run the same determinism cases: keep both, under the group's name
    print(json.dumps({(f"{sys.argv[1]}:{k}" if k.startswith("bits_") else k): v for k, v in result.items()}))
