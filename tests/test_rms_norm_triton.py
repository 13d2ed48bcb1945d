"""The Triton RMSNorm and LayerNorm (plain, gated, grouped, with a residual add), run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernels are decorated, so the kernels run in fresh
subprocesses (this file run as a script) that print their measurements as JSON; the tests here
assert on them. The ground truth is ``rms_norm_reference`` / ``layer_norm_reference`` in float64
(after a float64 ``residual + x`` for the pre-norm add), on the same rounded inputs. The interpreter
does not compile, so each of the models' cases is also compiled for sm_90 (Triton's ptxas, no GPU).
"""

import hashlib
import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _interpreter import interpret, run_group  # noqa: E402

EPS = 1e-5


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _inputs(shape, seed, dtype, gated, residual, wide, ln=False, bias=True):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    d = shape[-1]
    ins = {"x": (r(*shape) + (1.5 if ln else 0.0)).to(dtype), "weight": (1 + 0.5 * r(d)).float()}  # LN: a mean to remove
    if ln and bias:
        ins["bias"] = (0.3 * r(d)).float()
    if gated:  # z as a slice of a wider projection (rows strided, channels adjacent), as Mamba-2 hands it over
        ins["z"] = (2 * r(*shape[:-1], d + wide)).to(dtype)
    if residual:
        ins["residual"] = (3 * r(*shape)).float()
    return ins


def _run(ins, fn, cast, d, use_s=True, seed=0):
    """fn on leaves made by ``cast``; the gradients of a random linear functional of the outputs."""
    leaves = {k: cast(v).requires_grad_() for k, v in ins.items()}
    z = leaves["z"][..., :d] if "z" in leaves else None
    y, s = fn(leaves["x"], leaves["weight"], z, leaves.get("residual"), leaves.get("bias"))
    gen = torch.Generator().manual_seed(seed + 1)
    loss = (y.double() * torch.randn(y.shape, generator=gen, dtype=torch.float64)).sum()
    if s is not None and use_s:
        loss = loss + (s.double() * torch.randn(s.shape, generator=gen, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y, s, dict(zip(leaves, grads))


def _fns(group_size, after=False, ln=False):
    from lengthgen.ops.norm import layer_norm_reference, rms_norm_reference
    from lengthgen.ops.triton import rms_norm as rn

    def ker(x, w, z, res, b):
        if ln:
            if res is not None:
                return rn.add_layer_norm_triton(x, res, w, b, EPS)
            return rn.layer_norm_triton(x, w, b, EPS, z=z, group_size=group_size), None
        if res is not None:
            return rn.add_rms_norm_triton(x, res, w, EPS)
        return rn.rms_norm_triton(x, w, EPS, z=z, group_size=group_size, norm_before_gate=after), None

    def ref(x, w, z, res, b):
        if ln:
            if res is not None:
                s = res + x
                return layer_norm_reference(s, w, b, EPS), s
            return layer_norm_reference(x, w, b, EPS, z=z, group_size=group_size), None
        if res is not None:
            s = res + x
            return rms_norm_reference(s, w, EPS), s
        return rms_norm_reference(x, w, EPS, z=z, group_size=group_size, norm_before_gate=after), None

    return ker, ref


def _case(shape, seed, dtype, *, gated=False, residual=False, group_size=None, wide=0, use_s=True, after=False,
          ln=False, bias=True):
    """Kernel (inputs in ``dtype``, weight, bias and residual float32) vs float64 on the same values;
    ``after``: the gate after the norm (norm_before_gate=True); ``ln``: the LayerNorm (with a bias,
    the gate after it)."""
    ins = _inputs(shape, seed, dtype, gated, residual, wide, ln, bias)
    ker_fn, ref_fn = _fns(group_size, after, ln)
    d = shape[-1]
    ker = _run(ins, ker_fn, lambda v: v.clone(), d, use_s, seed)
    ref = _run(ins, ref_fn, lambda v: v.double(), d, use_s, seed)
    out = {"y": rel(ker[0], ref[0]), "y_dtype": str(ker[0].dtype), "y_shape": list(ker[0].shape)}
    if residual:
        out.update(s=rel(ker[1], ref[1]), s_exact=torch.equal(ker[1], ins["residual"] + ins["x"]),
                   s_dtype=str(ker[1].dtype))
    out.update({"d" + k: rel(ker[2][k], ref[2][k]) for k in ker[2]})
    out["grad_dtypes_match"] = all(ker[2][k].dtype == ins[k].dtype for k in ins)
    return out


def _digest(shape, seed, dtype, **kw):
    """A hash of the kernel's outputs and gradients, and whether a second call gives the same bits."""
    ins = _inputs(shape, seed, dtype, kw.get("gated", False), kw.get("residual", False), 0, kw.get("ln", False))
    ker_fn, _ = _fns(kw.get("group_size"), kw.get("after", False), kw.get("ln", False))
    runs = [_run(ins, ker_fn, lambda v: v.clone(), shape[-1], seed=seed) for _ in range(2)]
    flat = [[t for t in (y, s) if t is not None] + list(g.values()) for y, s, g in runs]
    same = all(torch.equal(a, b) for a, b in zip(*flat))
    h = hashlib.sha256(b"".join(t.detach().contiguous().view(torch.uint8).numpy().tobytes() for t in flat[0]))
    return {"same": same, "hash": h.hexdigest()}


BITS = {
    "plain": ((300, 192), 20, torch.float32, {}),
    "gated": ((2, 150, 96), 21, torch.float16, {"gated": True}),
    "add": ((300, 96), 22, torch.float32, {"residual": True}),
    "gated_after": ((300, 128), 23, torch.float16, {"gated": True, "after": True, "group_size": 64}),
    "ln_gated": ((300, 128), 24, torch.float16, {"gated": True, "ln": True, "group_size": 32}),
    "ln_add": ((300, 96), 25, torch.float32, {"residual": True, "ln": True}),
}

GROUPS = {
    "a": {
        # rows not a multiple of any tile, D not a power of two, 2-D
        "fp32_plain": lambda: _case((37, 96), 0, torch.float32),
        # Mamba-2's output norm, 3-D, z a strided slice; 300 rows: several backward programs, a partial last one
        "fp32_gated": lambda: _case((3, 100, 384), 1, torch.float32, gated=True, wide=8),
        "fp32_gated_groups": lambda: _case((2, 37, 192), 2, torch.float32, gated=True, group_size=48),
        # GLA's per-head output norm: the gate after the norm, per head, z a strided slice
        "fp32_gated_after": lambda: _case((3, 100, 256), 9, torch.float32, gated=True, group_size=128, wide=8,
                                          after=True),
        # RWKV-6's norms: the block LayerNorm, the per-head GroupNorm times silu(g), the pre-norm add
        "fp32_ln": lambda: _case((37, 96), 12, torch.float32, ln=True),
        "fp32_ln_add_no_bias": lambda: _case((300, 64), 17, torch.float32, residual=True, ln=True, bias=False),
        "fp32_ln_gated_groups": lambda: _case((3, 100, 256), 13, torch.float32, gated=True, group_size=64, ln=True),
        "fp16_ln_add": lambda: _case((300, 192), 14, torch.float16, residual=True, ln=True),
        "fp16_plain": lambda: _case((3, 100, 192), 3, torch.float16),
        **{f"bits_{k}": (lambda v=v: _digest(v[0], v[1], v[2], **v[3])) for k, v in BITS.items()},
    },
    "b": {
        "fp32_add": lambda: _case((2, 150, 192), 4, torch.float32, residual=True),
        "fp32_add_y_only": lambda: _case((37, 384), 5, torch.float32, residual=True, use_s=False),
        "fp16_add": lambda: _case((300, 192), 6, torch.float16, residual=True),
        "fp16_gated": lambda: _case((2, 150, 192), 7, torch.float16, gated=True, wide=4),
        "fp32_plain_groups": lambda: _case((300, 96), 8, torch.float32, group_size=32),
        "fp32_gated_after_whole": lambda: _case((37, 96), 10, torch.float32, gated=True, after=True),
        "fp16_gated_after": lambda: _case((2, 150, 256), 11, torch.float16, gated=True, group_size=128, after=True),
        "fp32_ln_add": lambda: _case((2, 150, 192), 15, torch.float32, residual=True, ln=True),
        "fp16_ln_gated": lambda: _case((2, 150, 256), 16, torch.float16, gated=True, group_size=128, wide=4, ln=True),
        **{f"bits_{k}": (lambda v=v: _digest(v[0], v[1], v[2], **v[3])) for k, v in BITS.items()},
    },
}

FP32 = ["fp32_plain", "fp32_gated", "fp32_gated_groups", "fp32_gated_after", "fp32_add", "fp32_add_y_only",
        "fp32_plain_groups", "fp32_gated_after_whole", "fp32_ln", "fp32_ln_gated_groups", "fp32_ln_add",
        "fp32_ln_add_no_bias"]
FP16 = ["fp16_plain", "fp16_add", "fp16_gated", "fp16_gated_after", "fp16_ln_add", "fp16_ln_gated"]


@pytest.fixture(scope="module")
def interp():
    return interpret(__file__, GROUPS)


def errors_of(r):
    return {k: v for k, v in r.items() if k in ("y", "s") or (k.startswith("d") and isinstance(v, float))}


def test_the_interpreter_ran_the_kernels(interp):
    assert interp["kernel_type_a"] == interp["kernel_type_b"] == "InterpretedFunction"


@pytest.mark.parametrize("case,dtype,tol", [(c, "float32", 1e-6) for c in FP32] + [(c, "float16", 3e-3) for c in FP16])
def test_kernels_match_the_float64_reference(interp, case, dtype, tol):
    """float32 inputs within 1e-6 of float64, float16 inputs within 3e-3; outputs in x's dtype."""
    r = interp[case]
    bad = {k: v for k, v in errors_of(r).items() if not v < tol}
    assert not bad, (case, errors_of(r))
    assert r["y_dtype"] == f"torch.{dtype}" and r["grad_dtypes_match"]


def test_every_gradient_is_checked(interp):
    assert {"dx", "dweight"} <= set(interp["fp32_plain"]) and "dz" not in interp["fp32_plain"]
    assert {"dx", "dweight", "dz"} <= set(interp["fp32_gated"]) <= set(interp["fp32_gated_after"])
    assert {"dx", "dweight", "dresidual"} <= set(interp["fp32_add"])
    assert {"dx", "dweight", "dbias"} <= set(interp["fp32_ln"])
    assert {"dx", "dweight", "dbias", "dz"} <= set(interp["fp32_ln_gated_groups"])
    assert {"dx", "dweight", "dbias", "dresidual"} <= set(interp["fp32_ln_add"])
    assert interp["fp32_gated"]["y_shape"] == [3, 100, 384]


def test_the_residual_sum_is_float32_and_exact(interp):
    """s = residual + x in float32 is what torch's ``residual + x`` gives, bit for bit."""
    for case in ("fp32_add", "fp16_add", "fp32_ln_add", "fp16_ln_add"):
        assert interp[case]["s_dtype"] == "torch.float32" and interp[case]["s_exact"], case


@pytest.mark.parametrize("case", sorted(BITS))
def test_gradients_are_bit_identical_across_calls_and_processes(interp, case):
    a, b = interp[f"a:bits_{case}"], interp[f"b:bits_{case}"]
    assert a["same"] and b["same"]
    assert a["hash"] == b["hash"]


def test_tiles_follow_the_width_and_programs_the_row_count():
    from lengthgen.ops.triton import rms_norm as rn

    assert rn.fwd_config(192) == (32, 256, 8) and rn.fwd_config(384) == (16, 512, 8)
    assert rn.bwd_config(192) == (16, 256, 8) and rn.bwd_config(384) == (8, 512, 8)
    assert rn.fwd_config(1024) == (8, 1024, 8) and rn.bwd_config(1024) == (4, 1024, 8)
    assert rn.rows_per_program(37) == rn.rows_per_program(65536) == 64
    assert rn.rows_per_program(65537) == 128 and rn.rows_per_program(10**6) == 1024
    for d in (8, 96, 192, 384, 1000, 1024):
        bt = rn.bwd_config(d)[0]
        assert all(rn.rows_per_program(n) % bt == 0 for n in (1, 300, 65536, 10**6))


def test_unsupported_shapes_raise():
    from lengthgen.ops.triton.rms_norm import add_rms_norm_triton, rms_norm_triton

    x, w = torch.randn(3, 2048), torch.ones(2048)
    with pytest.raises(ValueError, match="at most 1024 channels"):
        rms_norm_triton(x, w, EPS)
    with pytest.raises(ValueError, match="at most 1024 channels"):
        add_rms_norm_triton(x, x, w, EPS)
    with pytest.raises(ValueError, match="not a whole number of groups of 5"):
        rms_norm_triton(x[:, :8], w[:8], EPS, z=x[:, :8], group_size=5)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        rms_norm_triton(x[:, :8].double(), w[:8], EPS)
    with pytest.raises(ValueError, match="residual must have"):
        add_rms_norm_triton(x[:, :8], x[:2, :8], w[:8], EPS)


def test_no_rows_launch_nothing():
    from lengthgen.ops.triton.rms_norm import add_rms_norm_triton

    x, r, w = torch.randn(0, 5, 8, requires_grad=True), torch.randn(0, 5, 8), torch.ones(8, requires_grad=True)
    y, s = add_rms_norm_triton(x, r, w, EPS)
    assert y.shape == s.shape == (0, 5, 8)
    gx, gw = torch.autograd.grad(y.sum() + s.sum(), [x, w])
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros(8))


# (IS_RMS, HAS_BIAS, HAS_Z, GATE_AFTER, HAS_RES) of each use in the models
MODEL_CASES = {
    "rms": (True, False, False, False, False),             # block norms, final norm
    "rms_gate_before": (True, False, True, False, False),  # Mamba-2's output norm
    "rms_gate_after": (True, False, True, True, False),    # GLA's per-head output norm
    "rms_add": (True, False, False, False, True),          # pre-norm add (GLA's mlp_norm, Mamba's blocks)
    "ln": (False, True, False, False, False),              # RWKV-6's attn_norm, pre_norm, final norm
    "ln_gate_after": (False, True, True, True, False),     # RWKV-6's per-head GroupNorm times silu(g)
    "ln_add": (False, True, False, False, True),           # RWKV-6's ffn_norm
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_the_kernels_compile_for_sm90(case):
    """Each case's forward and backward (with and without a gradient of the residual sum) built for
    sm_90 at the smallest and the widest group (``_sm90.compile_for_sm90``'s checks)."""
    from _sm90 import compile_for_sm90, need_ptxas

    from lengthgen.ops.triton import rms_norm as rn

    need_ptxas()
    low = {"x_ptr", "z_ptr", "y_ptr", "dy_ptr", "dx_ptr", "dz_ptr"}
    rms, bias, z, after, res = MODEL_CASES[case]
    flags = dict(IS_RMS=rms, HAS_BIAS=bias, HAS_Z=z, GATE_AFTER=after, HAS_RES=res)
    for g in (8, rn.MAX_WIDTH):
        bt, bg, warps = rn.fwd_config(g)
        compile_for_sm90(rn._fwd_kernel, dict(flags, BT=bt, BG=bg), warps, low)
        bt, bg, warps = rn.bwd_config(g)
        for ds in (False, True) if res else (False,):
            compile_for_sm90(rn._bwd_kernel, dict(flags, HAS_DS=ds, BT=bt, BG=bg, RPP=rn.rows_per_program(65536)),
                             warps, low)


def test_the_ops_route_the_cases_it_covers_to_it(monkeypatch):
    """``ops.norm`` on CUDA (faked): the RMSNorms (plain, gated on either side of the norm, any
    groups), the LayerNorms (plain, grouped and gated) and both pre-norm adds go to the Triton norm;
    a non-float32 residual stays on the reference, a group wider than the kernel takes on
    mamba-ssm's kernels. CPU inputs never ask for it."""
    from lengthgen.ops import _mamba_import
    from lengthgen.ops import norm as norm_mod
    from lengthgen.ops.triton import rms_norm as rn

    x, z, w, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(8), torch.randn(8)
    assert not norm_mod._triton_norm_takes(x, 8, "auto")  # CPU
    seen, asked = [], []

    def triton_norm(x, w, eps, z=None, group_size=None, norm_before_gate=False):
        seen.append("triton_after" if norm_before_gate else "triton")
        return norm_mod.rms_norm_reference(x, w, eps, z, group_size, norm_before_gate)

    def triton_ln(x, w, b, eps, z=None, group_size=None):
        seen.append("triton_ln" + ("_gated" if z is not None else "") + (f"_g{group_size}" if group_size else ""))
        return norm_mod.layer_norm_reference(x, w, b, eps, z, group_size)

    def triton_add(x, r, w, eps):
        seen.append("triton_add")
        return norm_mod.rms_norm_reference(r + x, w, eps), r + x

    def triton_add_ln(x, r, w, b, eps):
        seen.append("triton_add_ln")
        return norm_mod.layer_norm_reference(r + x, w, b, eps), r + x

    def mamba_norm(x, w, b, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        seen.append("mamba")
        return norm_mod.rms_norm_reference(x, w, eps, z, group_size, norm_before_gate)

    monkeypatch.setattr(norm_mod, "use_kernel", lambda backend, kernel, *t: asked.append(kernel) or True)
    monkeypatch.setattr(norm_mod, "_triton_norm_takes", lambda x, width, backend: width <= rn.MAX_WIDTH)
    monkeypatch.setattr(rn, "rms_norm_triton", triton_norm)
    monkeypatch.setattr(rn, "layer_norm_triton", triton_ln)
    monkeypatch.setattr(rn, "add_rms_norm_triton", triton_add)
    monkeypatch.setattr(rn, "add_layer_norm_triton", triton_add_ln)
    monkeypatch.setattr(_mamba_import, "mamba_rmsnorm_fn", lambda: mamba_norm)
    norm_mod.rms_norm(x, w, 1e-5)
    norm_mod.rms_norm(x, w, 1e-5, z=z)
    norm_mod.rms_norm(x, w, 1e-5, z=z, group_size=4)
    norm_mod.rms_norm(x, w, 1e-5, z=z, norm_before_gate=True)
    norm_mod.layer_norm(x, w, b, 1e-5)
    norm_mod.layer_norm(x, w, b, 1e-5, z=z, group_size=4)
    norm_mod.add_rms_norm(x, z, w, 1e-5)
    norm_mod.add_layer_norm(x, z, w, b, 1e-5)
    norm_mod.add_rms_norm(x, z.double(), w, 1e-5)  # a float64 residual: the reference
    assert seen == ["triton", "triton", "triton", "triton_after", "triton_ln", "triton_ln_gated_g4", "triton_add",
                    "triton_add_ln"]
    assert asked == ["triton_norm"] * 8
    wide = torch.randn(2, 2048)
    norm_mod.rms_norm(wide, torch.ones(2048), 1e-5)  # wider than the Triton kernel takes
    assert seen[-1] == "mamba" and asked[-1] == "mamba_norm"


if __name__ == "__main__":
    result = run_group("lengthgen.ops.triton.rms_norm", GROUPS, sys.argv[1])
    # the two groups run the same determinism cases: keep both, under the group's name
    print(json.dumps({(f"{sys.argv[1]}:{k}" if k.startswith("bits_") else k): v for k, v in result.items()}))
