"""GPU kernels of lengthgen.ops against the float64 torch references (run with ``pytest -s`` to see errors).

For float32 and bfloat16 inputs, each kernel's outputs, final states and the gradients of a random
linear functional of both (with respect to every input, the initial state included) are compared
with the reference evaluated in float64 on the same (rounded) values.  The error of a tensor is
||kernel - reference|| / ||reference||; float32 must stay under 1e-3, bfloat16 under 2e-2.
Splitting a sequence and carrying the state through the kernels must match one kernel call.

float32 here means IEEE float32 dots: TRITON_F32_DEFAULT=ieee is set (unless already set) before
any kernel compiles, because Triton's default TF32 dots alone carry ~1e-3 relative error.
Shapes are moderate (b=2, l=512, h=4) so Triton compilation and autotuning stay short.
"""

import os

os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lengthgen.ops import _backend, causal_conv1d, gla_scan, rwkv6_scan, selective_scan, ssd_scan  # noqa: E402

DEV = "cuda"
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 2e-2}
DTYPES = [torch.float32, torch.bfloat16]


def need(kernel):
    why = _backend.kernel_unavailable_reason(kernel)
    if why is not None:
        pytest.skip(f"{kernel} unavailable: {why}")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def leaf(t, dtype):
    return t.to(DEV, dtype).detach().requires_grad_()


def compare(name, fn, inputs, dtype, seed=0):
    """fn(*inputs, backend=...) with the kernel vs the float64 reference; returns the errors."""
    gen = torch.Generator(device=DEV).manual_seed(seed)
    out, state = fn(*inputs, backend="kernel")
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_out, ref_state = fn(*ref_inputs, backend="torch")
    w_out = torch.randn(ref_out.shape, dtype=torch.float64, device=DEV, generator=gen)
    w_state = torch.randn(ref_state.shape, dtype=torch.float64, device=DEV, generator=gen)
    grads = torch.autograd.grad((out.double() * w_out).sum() + (state.double() * w_state).sum(), inputs)
    ref_grads = torch.autograd.grad((ref_out * w_out).sum() + (ref_state * w_state).sum(), ref_inputs)
    errors = {"out": rel(out, ref_out), "final_state": rel(state, ref_state)}
    errors.update({f"grad[{i}]": rel(g, rg) for i, (g, rg) in enumerate(zip(grads, ref_grads))})
    print(f"\n{name} {str(dtype).replace('torch.', '')}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
    assert state.dtype == torch.float32
    bad = {k: v for k, v in errors.items() if not v < TOLERANCE[dtype]}
    assert not bad, f"{name} {dtype}: errors above {TOLERANCE[dtype]}: {bad}"
    return errors


def compare_output(name, fn, inputs, dtype, gen):
    """fn(*inputs, backend=...) -> one tensor: the kernel's output and input gradients vs float64."""
    out = fn(*inputs, backend="kernel")
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref = fn(*ref_inputs, backend="torch")
    probe = torch.randn(ref.shape, dtype=torch.float64, device=DEV, generator=gen)
    grads = torch.autograd.grad((out.double() * probe).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * probe).sum(), ref_inputs)
    errors = {"out": rel(out, ref), **{f"grad[{i}]": rel(g, r) for i, (g, r) in enumerate(zip(grads, ref_grads))}}
    print(f"\n{name} {dtype}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
    assert out.dtype == dtype
    bad = {k: v for k, v in errors.items() if not v < TOLERANCE[dtype]}
    assert not bad, f"{name} {dtype}: errors above {TOLERANCE[dtype]}: {bad}"


def split_matches(name, fn, time_inputs, split, time_dim):
    """One kernel call == two calls with the state carried (no grad)."""
    with torch.no_grad():
        whole, final = fn(*time_inputs, None)
        first = [t.narrow(time_dim, 0, split) for t in time_inputs]
        second = [t.narrow(time_dim, split, t.shape[time_dim] - split) for t in time_inputs]
        y1, s1 = fn(*first, None)
        y2, s2 = fn(*second, s1)
    e_out, e_state = rel(torch.cat([y1, y2], time_dim), whole), rel(s2, final)
    print(f"\n{name} split at {split}: out={e_out:.2e}, final_state={e_state:.2e}")
    assert e_out < 1e-4 and e_state < 1e-4


# ----------------------------------------------------------------------------- Mamba-2 SSD
def ssd_inputs(dtype, b=2, l=512, h=4, p=64, g=1, n=64):
    torch.manual_seed(0)
    return [
        leaf(torch.randn(b, l, h, p), dtype),
        leaf(torch.randn(b, l, h) - 2.0, dtype),  # softplus(dt + bias) around 0.1
        leaf(-torch.rand(h) * 2 - 0.1, torch.float32),
        leaf(torch.randn(b, l, g, n) / n**0.5, dtype),
        leaf(torch.randn(b, l, g, n) / n**0.5, dtype),
        leaf(torch.randn(h), torch.float32),
        leaf(torch.randn(h) * 0.1, torch.float32),
        leaf(torch.randn(b, h, p, n), torch.float32),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ssd_kernel(dtype):
    need("mamba_ssd")

    def fn(x, dt, A, B, C, D, bias, h0, backend):
        return ssd_scan(x, dt, A, B, C, D=D, dt_bias=bias, dt_softplus=True, initial_state=h0, chunk_size=256,
                        backend=backend)  # fmt: skip

    compare("ssd_scan", fn, ssd_inputs(dtype), dtype)


def test_ssd_kernel_split_and_carry():
    need("mamba_ssd")
    x, dt, A, B, C, D, bias, _ = ssd_inputs(torch.float32)

    def fn(x, dt, B, C, h0):
        return ssd_scan(x, dt, A, B, C, D=D, dt_bias=bias, dt_softplus=True, initial_state=h0, backend="kernel")

    for split in (1, 256, 300):
        split_matches("ssd_scan", fn, [x, dt, B, C], split, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [dict(l=64, h=6, p=64, g=1, n=128),   # the reduced study's m2-m at T = 64
                                   dict(l=23, h=4, p=32, g=2, n=48)])   # padded tiles, two groups
def test_ssd_one_chunk_kernel(dtype, shape):
    """One chunk from the zero state goes to lengthgen's one-chunk kernel: against the float64
    reference (outputs, final state, every gradient) and against mamba-ssm's chunked kernels."""
    need("mamba_ssd")
    need("triton_ssd_one_chunk")
    from lengthgen.ops.ssd import _one_chunk, _ssd_kernel

    inputs = ssd_inputs(dtype, b=4, **shape)[:7]
    assert _one_chunk(inputs[0], inputs[3], 64, None)

    def fn(x, dt, A, B, C, D, bias, backend):
        return ssd_scan(x, dt, A, B, C, D=D, dt_bias=bias, dt_softplus=True, chunk_size=64, backend=backend)

    compare("ssd_scan one chunk", fn, inputs, dtype)
    with torch.no_grad():
        y, S = fn(*inputs, backend="kernel")
        y_m, S_m = _ssd_kernel(*inputs, True, None, 64)
    e_y, e_s = rel(y, y_m), rel(S, S_m)
    print(f"one chunk vs mamba-ssm {str(dtype).replace('torch.', '')}: out={e_y:.2e}, final_state={e_s:.2e}")
    assert e_y < TOLERANCE[dtype] and e_s < TOLERANCE[dtype]


# ----------------------------------------------------------------------------- Mamba-1 selective scan
def selective_scan_inputs(dtype, b=2, d=128, n=16, l=512):
    torch.manual_seed(1)
    return [
        leaf(torch.randn(b, d, l), dtype),
        leaf(torch.randn(b, d, l) - 2.0, dtype),
        leaf(-torch.rand(d, n) * 2 - 0.1, torch.float32),
        leaf(torch.randn(b, n, l), dtype),
        leaf(torch.randn(b, n, l), dtype),
        leaf(torch.randn(d), torch.float32),
        leaf(torch.randn(d) * 0.1, torch.float32),
        leaf(torch.randn(b, d, n), torch.float32),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_selective_scan_kernel(dtype):
    need("triton_selective_scan")

    def fn(u, delta, A, B, C, D, bias, h0, backend):
        return selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True, initial_state=h0,
                              backend=backend)  # fmt: skip

    compare("selective_scan", fn, selective_scan_inputs(dtype), dtype)


def test_selective_scan_kernel_split_and_carry():
    need("triton_selective_scan")
    u, delta, A, B, C, D, bias, _ = selective_scan_inputs(torch.float32)

    def fn(u, delta, B, C, h0):
        return selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True, initial_state=h0,
                              backend="kernel")  # fmt: skip

    for split in (1, 200, 511):
        split_matches("selective_scan", fn, [u, delta, B, C], split, 2)


# ----------------------------------------------------------------------------- GLA and RWKV-6
def linear_attention_inputs(dtype, b=2, t=512, h=4, K=64, V=64):
    torch.manual_seed(2)
    return [
        leaf(torch.randn(b, t, h, K), dtype),
        leaf(torch.randn(b, t, h, K), dtype),
        leaf(torch.randn(b, t, h, V), dtype),
        leaf(F.logsigmoid(torch.randn(b, t, h, K)) / 4, dtype),
        leaf(torch.randn(b, h, K, V), torch.float32),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gla_kernel(dtype):
    need("fla")
    fn = lambda q, k, v, g, h0, backend: gla_scan(q, k, v, g, initial_state=h0, backend=backend)  # noqa: E731
    compare("gla_scan", fn, linear_attention_inputs(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rwkv6_kernel(dtype):
    need("fla")
    inputs = linear_attention_inputs(dtype)
    inputs[0] = leaf(inputs[0].detach() * 64**-0.5, dtype)  # RWKV-6 runs at scale 1: keep outputs O(1)
    u = leaf(torch.randn(4, 64) * 0.1, dtype)

    def fn(r, k, v, w, h0, u, backend):
        return rwkv6_scan(r, k, v, w, u, scale=1.0, initial_state=h0, backend=backend)

    compare("rwkv6_scan", fn, [*inputs, u], dtype)


def test_linear_attention_kernels_split_and_carry():
    need("fla")
    q, k, v, g, _ = linear_attention_inputs(torch.float32)
    u = torch.randn(4, 64, device=DEV) * 0.1
    gla = lambda q, k, v, g, h0: gla_scan(q, k, v, g, initial_state=h0, backend="kernel")  # noqa: E731
    rwkv = lambda r, k, v, w, h0: rwkv6_scan(r, k, v, w, u, initial_state=h0, backend="kernel")  # noqa: E731
    for split in (1, 64, 300):
        split_matches("gla_scan", gla, [q, k, v, g], split, 1)
        split_matches("rwkv6_scan", rwkv, [q * 64**-0.5, k, v, g], split, 1)


# ----------------------------------------------------------------------------- causal conv
def conv_kernel_available():
    return (_backend.kernel_unavailable_reason("causal_conv1d") is None
            or _backend.kernel_unavailable_reason("triton_conv") is None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_conv1d_kernel(dtype):
    """The compiled causal-conv1d when installed, else lengthgen's Triton conv: outputs, final window and every
    gradient (the window's included) vs float64. x in ``dtype`` as Mamba's in_proj gives it (a
    channel-last view of a wider tensor), weight, bias and window in float32 as the parameters are."""
    if not conv_kernel_available():
        pytest.skip("neither causal-conv1d's extension nor triton is installed")
    torch.manual_seed(3)
    wide = leaf(torch.randn(2, 512, 80), dtype)       # (b, l, channels + 16): x is 64 of its channels
    w, bias, st = leaf(torch.randn(64, 4) / 2, torch.float32), leaf(torch.randn(64), torch.float32), \
        leaf(torch.randn(2, 64, 3), torch.float32)

    def fn(wide, w, b, s, backend):
        return causal_conv1d(wide[..., 8:72].transpose(1, 2), w, b, conv_state=s, backend=backend)

    compare("causal_conv1d", fn, [wide, w, bias, st], dtype)


def test_causal_conv1d_kernel_split_and_carry():
    if not conv_kernel_available():
        pytest.skip("neither causal-conv1d's extension nor triton is installed")
    torch.manual_seed(4)
    x, w, bias = torch.randn(2, 64, 512, device=DEV), torch.randn(64, 4, device=DEV), torch.randn(64, device=DEV)
    fn = lambda x, s: causal_conv1d(x, w, bias, conv_state=s, backend="auto")  # noqa: E731
    for split in (1, 3, 200):
        split_matches("causal_conv1d", fn, [x], split, 2)


@pytest.mark.parametrize("length", [16, 64, 300])
def test_triton_conv_matches_the_reference_at_the_study_shapes(length):
    """lengthgen's Triton conv from no window (the study's training steps) and from a carried one,
    bf16 x as a channel-last view, against float64: outputs, window and gradients."""
    need("triton_conv")
    torch.manual_seed(5)
    wide = leaf(torch.randn(8, length, 1030), torch.bfloat16)   # m2-m's in_proj width: xBC is 640 channels
    w, bias = leaf(torch.randn(640, 4) / 2, torch.float32), leaf(torch.randn(640), torch.float32)
    st = leaf(torch.randn(8, 640, 3), torch.float32)

    def fn(wide, w, b, s, backend):
        return causal_conv1d(wide[..., 384:1024].transpose(1, 2), w, b, conv_state=s, backend=backend)

    compare("causal_conv1d triton", fn, [wide, w, bias, st], torch.bfloat16)
    compare("causal_conv1d triton, no window", lambda wide, w, b, backend: fn(wide, w, b, None, backend),
            [wide, w, bias], torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_add_rms_norm_kernel(dtype, kind):
    """RMSNorm / LayerNorm with the residual add fused (GLA's mlp_norm, RWKV-6's ffn_norm: lengthgen's
    Triton norm): x in ``dtype`` as a sub-block's output, the residual stream in
    float32; output, new residual and gradients vs float64."""
    from lengthgen.ops.norm import add_layer_norm, add_rms_norm

    need("triton_norm")
    gen = torch.Generator(device=DEV).manual_seed(1)
    x = leaf(torch.randn(2, 256, 512, device=DEV, generator=gen), dtype)
    r = leaf(torch.randn(2, 256, 512, device=DEV, generator=gen), torch.float32)
    w = leaf(1 + 0.1 * torch.randn(512, device=DEV, generator=gen), torch.float32)
    b = leaf(0.1 * torch.randn(512, device=DEV, generator=gen), torch.float32)

    def fn(x, r, w, *bias, backend):
        if kind == "rms":
            return add_rms_norm(x, r, w, 1e-5, backend=backend)
        return add_layer_norm(x, r, w, bias[0], 1e-5, backend=backend)

    inputs = [x, r, w] + ([] if kind == "rms" else [b])
    out, new = fn(*inputs, backend="kernel")
    assert out.dtype == dtype and new.dtype == torch.float32
    compare(f"add_{kind}_norm", fn, inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("gated", [False, True, "before"], ids=["plain", "gated", "norm_before_gate"])
def test_rms_norm_kernel(dtype, gated):
    """lengthgen's Triton RMSNorm, plain and gated (with groups, Mamba-2's output norm; norm before
    the gate per head, GLA's output norm) vs float64."""
    from lengthgen.ops import rms_norm

    need("triton_norm")
    gen = torch.Generator(device=DEV).manual_seed(0)
    x, z = (leaf(torch.randn(2, 256, 512, device=DEV, generator=gen), dtype) for _ in range(2))
    w = leaf(1 + 0.1 * torch.randn(512, device=DEV, generator=gen), torch.float32)
    extra = dict(norm_before_gate=True, group_size=128) if gated == "before" else dict(group_size=128)
    inputs = [x, w] + ([z] if gated else [])

    def fn(x, w, *gate, backend):
        return rms_norm(x, w, 1e-5, backend=backend, **(dict(z=gate[0], **extra) if gated else {}))

    compare_output(f"rms_norm {gated}", fn, inputs, dtype, gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", ["plain", "gated", "add"])
def test_triton_norm_at_the_study_shape(dtype, case):
    """lengthgen's Triton RMSNorm at the study's training step, 65,536 rows: the block norm and the
    pre-norm add at d_model 192 (residual float32), Mamba-2's gated output norm at d_inner 384 (one
    group, z a slice of in_proj's output); output (new residual) and every gradient vs float64, and
    bit-identical outputs and gradients from two calls."""
    from lengthgen.ops.norm import add_rms_norm, rms_norm

    need("triton_norm")
    gen = torch.Generator(device=DEV).manual_seed(6)
    d = 384 if case == "gated" else 192
    x = leaf(torch.randn(8, 8192, d, device=DEV, generator=gen), dtype)
    w = leaf(1 + 0.1 * torch.randn(d, device=DEV, generator=gen), torch.float32)
    if case == "add":
        inputs = [x, leaf(torch.randn(8, 8192, d, device=DEV, generator=gen), torch.float32), w]

        def fn(x, r, w, backend):
            return add_rms_norm(x, r, w, 1e-5, backend=backend)

        compare("add_rms_norm triton", fn, inputs, dtype)
    else:
        inputs = [x, w]
        if case == "gated":
            inputs.append(leaf(torch.randn(8, 8192, d + 64, device=DEV, generator=gen), dtype))

        def fn(x, w, *proj, backend):
            z = proj[0][..., 32:32 + d] if proj else None
            return rms_norm(x, w, 1e-5, z=z, group_size=d if proj else None, backend=backend)

        compare_output(f"rms_norm triton {case}", fn, inputs, dtype, gen)

    def run():
        out = fn(*inputs, backend="kernel")
        outs = out if isinstance(out, tuple) else (out,)
        loss = sum((o.float() * p).sum() for o, p in zip(outs, probes))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, inputs))

    probes = [torch.randn(x.shape, device=DEV, generator=gen) for _ in range(2)]
    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second)), f"{case} {dtype}: two calls differ"


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", ["plain", "grouped_gated"])
def test_layer_norm_kernel(dtype, case):
    """lengthgen's Triton LayerNorm: RWKV-6's block norms (whole dim, bias) and its per-head
    GroupNorm times silu(g) (4 groups of 128): output and the gradients of x, weight, bias (and z)
    vs float64."""
    from lengthgen.ops import layer_norm

    need("triton_norm")
    gen = torch.Generator(device=DEV).manual_seed(2)
    x, z = (leaf(torch.randn(2, 256, 512, device=DEV, generator=gen), dtype) for _ in range(2))
    w = leaf(1 + 0.1 * torch.randn(512, device=DEV, generator=gen), torch.float32)
    b = leaf(0.1 * torch.randn(512, device=DEV, generator=gen), torch.float32)
    gated = case == "grouped_gated"
    inputs = [x, w, b] + ([z] if gated else [])

    def fn(x, w, b, *gate, backend):
        return layer_norm(x, w, b, 1e-5, z=gate[0] if gate else None, group_size=128 if gated else None,
                          backend=backend)

    compare_output(f"layer_norm {case}", fn, inputs, dtype, gen)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_swiglu_linear_kernel(dtype):
    """fla's swiglu_linear (GLA's MLP) vs float64: output and the gradients of all four inputs."""
    from lengthgen.ops import swiglu_linear

    need("fla_swiglu")
    gen = torch.Generator(device=DEV).manual_seed(0)
    gate, up = (leaf(torch.randn(2, 256, 384, device=DEV, generator=gen), dtype) for _ in range(2))
    w = leaf(torch.randn(128, 384, device=DEV, generator=gen) / 20, dtype)
    b = leaf(torch.randn(128, device=DEV, generator=gen), dtype)
    compare_output("swiglu_linear", swiglu_linear, [gate, up, w, b], dtype, gen)


@pytest.mark.parametrize("vocab", [32, 4096, 50280])  # copying's padded vocabulary, the study's, the Pile's
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_cross_entropy_kernel(dtype, vocab):
    """fla's fused cross-entropy (the training loss) vs float64: the summed loss and the logits'
    gradient, with ignored targets; the in-place backward leaves the same gradient."""
    from lengthgen.ops import cross_entropy_sum

    need("fla_cross_entropy")
    gen = torch.Generator(device=DEV).manual_seed(0)
    n = 3000
    targets = torch.randint(0, vocab, (n,), device=DEV, generator=gen)
    targets[::3] = -100
    base = torch.randn(n, vocab, device=DEV, generator=gen) * 3
    ref_logits = base.to(dtype).double().requires_grad_()
    ref = cross_entropy_sum(ref_logits, targets, backend="torch")
    (ref_grad,) = torch.autograd.grad(ref * 0.01, ref_logits)
    for inplace in (False, True):
        logits = base.to(dtype).requires_grad_()
        out = cross_entropy_sum(logits * 1, targets, inplace_backward=inplace, backend="kernel")  # a non-leaf, as in training
        (grad,) = torch.autograd.grad(out * 0.01, logits)
        errors = {"loss": rel(out, ref), "grad": rel(grad, ref_grad)}
        print(f"\ncross_entropy_sum {dtype} V={vocab} inplace={inplace}: "
              + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
        assert out.dtype == torch.float32 and grad.dtype == dtype
        assert torch.equal(grad[::3], torch.zeros_like(grad[::3]))
        bad = {k: v for k, v in errors.items() if not v < TOLERANCE[dtype]}
        assert not bad, f"cross_entropy_sum {dtype}: errors above {TOLERANCE[dtype]}: {bad}"


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast_bf16"])
@pytest.mark.parametrize("length", [2048, 300])
def test_token_shift_lerp_kernel(length, autocast):
    """lengthgen's Triton token-shift interpolations at RWKV-6-70m's time mix (B = 4, D = 512, the
    five data-dependent mu in bfloat16 as the einsum gives them under autocast, x_bias float32):
    the outputs (bfloat16 under autocast, else float32) and the gradients of x, previous, mu and the
    bias vs float64, each within its dtype's tolerance (everything bfloat16's under autocast: the
    gradients carry the outputs' rounding); bit-identical outputs and gradients from two calls."""
    from lengthgen.ops import token_shift_lerp

    need("triton_token_mix")
    gen = torch.Generator(device=DEV).manual_seed(7)
    b, d, n = 4, 512, 5
    x = leaf(torch.randn(b, length, d, device=DEV, generator=gen), torch.float32)
    previous = leaf(torch.randn(b, d, device=DEV, generator=gen), torch.float32)
    mu = leaf(0.5 * torch.randn(b, length, n, d, device=DEV, generator=gen), torch.bfloat16)
    bias = leaf(0.5 * torch.randn(n, d, device=DEV, generator=gen), torch.float32)
    inputs = [x, previous, mu, bias]
    probes = [torch.randn(b, length, d, device=DEV, dtype=torch.float64, generator=gen) for _ in range(n)]

    def run():
        with torch.autocast(DEV, dtype=torch.bfloat16, enabled=autocast):
            outs = token_shift_lerp(*inputs, backend="kernel")
        loss = sum((o.double() * p).sum() for o, p in zip(outs, probes))
        return [o.detach() for o in outs] + list(torch.autograd.grad(loss, inputs))

    got = run()
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_outs = token_shift_lerp(*ref_inputs, backend="torch")
    ref_grads = torch.autograd.grad(sum((o * p).sum() for o, p in zip(ref_outs, probes)), ref_inputs)
    names = [f"out{i}" for i in range(n)] + ["dx", "dprevious", "dmu", "dbias"]
    errors = {k: rel(a, r) for k, a, r in zip(names, got, list(ref_outs) + list(ref_grads))}
    print(f"\ntoken_shift_lerp T={length} autocast={autocast}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
    out_dtype = torch.bfloat16 if autocast else torch.float32
    assert all(o.dtype == out_dtype for o in got[:n])
    assert [g.dtype for g in got[n:]] == [t.dtype for t in inputs]
    bad = {k: v for k, v, t in zip(names, errors.values(), got)
           if not v < TOLERANCE[torch.bfloat16 if autocast else t.dtype]}
    assert not bad, f"token_shift_lerp: errors above tolerance: {bad}"
    assert all(torch.equal(a, c) for a, c in zip(got, run())), "two calls differ"


@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_relu_kernel(dtype):
    """lengthgen's one-pass squared ReLU at RWKV-6-70m's channel-mix width (4 x 2048 x 1792):
    float32 bit-identical to torch's ``relu(x).square()`` forward and backward, bfloat16 within its
    tolerance of float64."""
    from lengthgen.ops import squared_relu

    need("triton_squared_relu")
    gen = torch.Generator(device=DEV).manual_seed(3)
    x = leaf(torch.randn(4, 2048, 1792, device=DEV, generator=gen), dtype)
    dy = torch.randn(x.shape, device=DEV, generator=gen).to(dtype)
    y = squared_relu(x, backend="kernel")
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().double().requires_grad_()
    yr = squared_relu(xr, backend="torch")
    (dxr,) = torch.autograd.grad(yr, xr, dy.double())
    errors = {"out": rel(y, yr), "dx": rel(dx, dxr)}
    print(f"\nsquared_relu {dtype}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
    assert y.dtype == dx.dtype == dtype
    assert all(v < TOLERANCE[dtype] for v in errors.values()), errors
    if dtype == torch.float32:
        xt = x.detach().clone().requires_grad_()
        yt = squared_relu(xt, backend="torch")
        (dxt,) = torch.autograd.grad(yt, xt, dy)
        assert torch.equal(y, yt) and torch.equal(dx, dxt)
