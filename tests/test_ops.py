"""The torch references of lengthgen.ops against step-by-step loops written here, in float64.

For each op: outputs, final states and the gradients of a random linear functional of both with
respect to every input (the initial state included) match a naive per-token recurrence; running
a sequence split at any point with the state carried equals one run; bad shapes and backends give
clear errors.
"""

import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from lengthgen import ops
from lengthgen.ops import _backend, _mamba_import, ssd as ssd_mod
from lengthgen.ops import causal_conv1d, gla_scan, rwkv6_scan, selective_scan, ssd_scan

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def rand(*shape, low=None, high=None, gen):
    t = torch.randn(*shape, dtype=DT, generator=gen)
    if low is not None:
        t = low + (high - low) * torch.rand(*shape, dtype=DT, generator=gen)
    return t.requires_grad_()


def check_against(fn, naive, inputs, gen):
    """fn(*inputs) == naive(*inputs) for outputs, final states and all input gradients."""
    out, state = fn(*inputs)
    ref_out, ref_state = naive(*inputs)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(state, ref_state, **TOL)
    w_out = torch.randn(out.shape, dtype=DT, generator=gen)
    w_state = torch.randn(state.shape, dtype=DT, generator=gen)
    wanted = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad((out * w_out).sum() + (state * w_state).sum(), wanted)
    ref_grads = torch.autograd.grad((ref_out * w_out).sum() + (ref_state * w_state).sum(), wanted)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, **TOL)
        assert rg.abs().max() > 0  # every input matters


def check_split(fn, time_args, other_args, state_kw, split_points, time_dim):
    """Whole run == run on [0:s] then [s:] carrying the state, at each split point."""
    whole, final = fn(*time_args, *other_args)
    for s in split_points:
        first = [a.narrow(d, 0, s) for a, d in zip(time_args, time_dim)]
        second = [a.narrow(d, s, a.shape[d] - s) for a, d in zip(time_args, time_dim)]
        y1, st = fn(*first, *other_args)
        y2, st2 = fn(*second, *other_args, **{state_kw: st})
        torch.testing.assert_close(torch.cat([y1, y2], dim=time_dim[0]), whole, **TOL)
        torch.testing.assert_close(st2, final, **TOL)


# ----------------------------------------------------------------------------- Mamba-2 SSD
def naive_ssd(x, dt, A, B, C, D, dt_bias, h0, softplus=True):
    h, g = x.shape[2], B.shape[2]
    dt = F.softplus(dt + dt_bias) if softplus else dt + dt_bias
    Bh, Ch = B.repeat_interleave(h // g, 2), C.repeat_interleave(h // g, 2)
    state, ys = h0, []
    for t in range(x.shape[1]):
        dA = torch.exp(dt[:, t] * A)[:, :, None, None]
        state = dA * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((state * Ch[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("l,chunk", [(37, 8), (16, 16), (5, 64), (1, 4)])
def test_ssd_matches_loop_with_grads(l, chunk):
    gen = torch.Generator().manual_seed(l)
    b, h, p, g, n = 2, 4, 3, 2, 5
    inputs = (
        rand(b, l, h, p, gen=gen), rand(b, l, h, gen=gen), rand(h, low=-2.0, high=-0.1, gen=gen),
        rand(b, l, g, n, gen=gen), rand(b, l, g, n, gen=gen), rand(h, gen=gen), rand(h, gen=gen),
        rand(b, h, p, n, gen=gen),
    )  # fmt: skip

    def fn(x, dt, A, B, C, D, dt_bias, h0):
        return ssd_scan(x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=True, initial_state=h0,
                        chunk_size=chunk, backend="torch")  # fmt: skip

    check_against(fn, naive_ssd, inputs, gen)


def test_ssd_split_and_carry_and_zero_default():
    gen = torch.Generator().manual_seed(1)
    b, l, h, p, g, n = 2, 29, 2, 3, 1, 4
    x, dt, B, C = rand(b, l, h, p, gen=gen), rand(b, l, h, gen=gen), rand(b, l, g, n, gen=gen), rand(b, l, g, n, gen=gen)
    A, D, bias = rand(h, low=-1.0, high=-0.1, gen=gen), rand(h, gen=gen), rand(h, gen=gen)

    def fn(x, dt, B, C, initial_state=None):
        return ssd_scan(x, dt, A, B, C, D=D, dt_bias=bias, dt_softplus=True, initial_state=initial_state,
                        chunk_size=8, backend="torch")  # fmt: skip

    check_split(fn, [x, dt, B, C], [], "initial_state", [1, 7, 8, 9, l - 1], [1, 1, 1, 1])
    y0, s0 = fn(x, dt, B, C)
    y1, s1 = fn(x, dt, B, C, initial_state=torch.zeros(b, h, p, n, dtype=DT))
    torch.testing.assert_close(y0, y1, **TOL)
    torch.testing.assert_close(s0, s1, **TOL)


def test_ssd_without_softplus_and_float32_state():
    gen = torch.Generator().manual_seed(2)
    x, dt = rand(1, 9, 2, 2, gen=gen), rand(1, 9, 2, low=0.01, high=0.5, gen=gen)
    A, B, C = rand(2, low=-1.0, high=-0.1, gen=gen), rand(1, 9, 1, 3, gen=gen), rand(1, 9, 1, 3, gen=gen)
    y, s = ssd_scan(x, dt, A, B, C, chunk_size=4, backend="torch")
    ry, rs = naive_ssd(x, dt, A, B, C, torch.zeros(2, dtype=DT), torch.zeros(2, dtype=DT),
                       torch.zeros(1, 2, 2, 3, dtype=DT), softplus=False)  # fmt: skip
    torch.testing.assert_close(y, ry, **TOL)
    torch.testing.assert_close(s, rs, **TOL)
    y32, s32 = ssd_scan(*(t.detach().float() for t in (x, dt, A, B, C)), chunk_size=4, backend="torch")
    assert y32.dtype == torch.float32 and s32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y.detach(), rtol=1e-4, atol=1e-5)


def test_ssd_kernel_segments_long_inputs_exactly(monkeypatch):
    """The int32-overflow guard: a long input runs as segments with the state carried, exactly."""
    gen = torch.Generator().manual_seed(3)
    b, l, h, p, n = 1, 50, 2, 2, 3
    x, dt, B, C = rand(b, l, h, p, gen=gen), rand(b, l, h, gen=gen), rand(b, l, 1, n, gen=gen), rand(b, l, 1, n, gen=gen)
    A, D, h0 = rand(h, low=-1.0, high=-0.1, gen=gen), rand(h, gen=gen), rand(b, h, p, n, gen=gen)
    calls = []

    def fake_kernel(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
                    initial_states=None, return_final_states=False):  # fmt: skip
        calls.append(x.shape[1])
        return ssd_mod.ssd_scan_reference(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_states, chunk_size)

    monkeypatch.setattr(_mamba_import, "mamba_chunk_scan_combined", lambda: fake_kernel)
    monkeypatch.setattr(ssd_mod, "_KERNEL_MAX_ELEMENTS", b * h * n * 16)  # 16 tokens per call
    assert ssd_mod._kernel_segment_length(b, h, p, n, 8) == 16
    y, s = ssd_mod._ssd_kernel(x, dt, A, B, C, D, None, True, h0, 8)
    ry, rs = ssd_scan(x, dt, A, B, C, D=D, dt_softplus=True, initial_state=h0, chunk_size=8, backend="torch")
    assert calls == [16, 16, 16, 2]
    # the kernel path hands the carried state over in float32, as the real kernel returns it
    torch.testing.assert_close(y, ry, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s, rs.float())


def test_ssd_bad_shapes():
    x = torch.zeros(1, 4, 3, 2)
    with pytest.raises(ValueError, match="groups .* must divide"):
        ssd_scan(x, torch.zeros(1, 4, 3), torch.zeros(3), torch.zeros(1, 4, 2, 5), torch.zeros(1, 4, 2, 5))
    with pytest.raises(ValueError, match="initial_state must be"):
        ssd_scan(x, torch.zeros(1, 4, 3), torch.zeros(3), torch.zeros(1, 4, 1, 5), torch.zeros(1, 4, 1, 5),
                 initial_state=torch.zeros(1, 3, 5, 2))  # fmt: skip
    with pytest.raises(ValueError, match="dt must be"):
        ssd_scan(x, torch.zeros(1, 4), torch.zeros(3), torch.zeros(1, 4, 1, 5), torch.zeros(1, 4, 1, 5))


# ----------------------------------------------------------------------------- Mamba-1 selective scan
def naive_selective_scan(u, delta, A, B, C, D, delta_bias, h0):
    delta = F.softplus(delta + delta_bias[:, None])
    state, ys = h0, []
    for t in range(u.shape[2]):
        state = torch.exp(delta[:, :, t, None] * A) * state + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((state * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1), state


@pytest.mark.parametrize("l", [1, 13])
def test_selective_scan_matches_loop_with_grads(l):
    gen = torch.Generator().manual_seed(10 + l)
    b, d, n = 2, 5, 4
    inputs = (
        rand(b, d, l, gen=gen), rand(b, d, l, gen=gen), rand(d, n, low=-2.0, high=-0.1, gen=gen),
        rand(b, n, l, gen=gen), rand(b, n, l, gen=gen), rand(d, gen=gen), rand(d, gen=gen), rand(b, d, n, gen=gen),
    )  # fmt: skip

    def fn(u, delta, A, B, C, D, bias, h0):
        return selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True, initial_state=h0,
                              backend="torch")  # fmt: skip

    check_against(fn, naive_selective_scan, inputs, gen)


def test_selective_scan_split_and_carry():
    gen = torch.Generator().manual_seed(11)
    b, d, n, l = 2, 3, 4, 12
    u, delta, B, C = rand(b, d, l, gen=gen), rand(b, d, l, gen=gen), rand(b, n, l, gen=gen), rand(b, n, l, gen=gen)
    A, D = rand(d, n, low=-1.0, high=-0.1, gen=gen), rand(d, gen=gen)

    def fn(u, delta, B, C, initial_state=None):
        return selective_scan(u, delta, A, B, C, D=D, delta_softplus=True, initial_state=initial_state, backend="torch")

    check_split(fn, [u, delta, B, C], [], "initial_state", [1, 5, l - 1], [2, 2, 2, 2])


def test_selective_scan_bad_shapes():
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(2, 4), torch.zeros(1, 3, 4),
                       torch.zeros(1, 4, 3))  # fmt: skip
    with pytest.raises(ValueError, match="initial_state must be"):
        selective_scan(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(2, 4), torch.zeros(1, 4, 3),
                       torch.zeros(1, 4, 3), initial_state=torch.zeros(1, 4, 2))  # fmt: skip


# ----------------------------------------------------------------------------- GLA and RWKV-6
def naive_linear_attention(q, k, v, g, h0, scale, bonus=None):
    state, outs = h0, []
    for t in range(q.shape[1]):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]
        if bonus is None:
            state = torch.exp(g[:, t])[..., None] * state + kv
            outs.append((q[:, t, :, :, None] * state).sum(-2) * scale)
        else:
            outs.append((q[:, t, :, :, None] * (state + bonus[None, :, :, None] * kv)).sum(-2) * scale)
            state = torch.exp(g[:, t])[..., None] * state + kv
    return torch.stack(outs, 1), state


def linear_attention_inputs(gen, b=2, t=21, h=3, K=4, V=5):
    return (
        rand(b, t, h, K, gen=gen), rand(b, t, h, K, gen=gen), rand(b, t, h, V, gen=gen),
        rand(b, t, h, K, low=-3.0, high=-0.01, gen=gen), rand(b, h, K, V, gen=gen),
    )  # fmt: skip


@pytest.mark.parametrize("t", [1, 16, 21])
def test_gla_matches_loop_with_grads(t):
    gen = torch.Generator().manual_seed(20 + t)
    inputs = linear_attention_inputs(gen, t=t)
    K = inputs[0].shape[-1]
    check_against(
        lambda q, k, v, g, h0: gla_scan(q, k, v, g, initial_state=h0, backend="torch"),
        lambda q, k, v, g, h0: naive_linear_attention(q, k, v, g, h0, K**-0.5),
        inputs,
        gen,
    )


@pytest.mark.parametrize("t", [1, 21])
def test_rwkv6_matches_loop_with_grads(t):
    gen = torch.Generator().manual_seed(30 + t)
    inputs = (*linear_attention_inputs(gen, t=t), rand(3, 4, gen=gen))
    check_against(
        lambda r, k, v, w, h0, u: rwkv6_scan(r, k, v, w, u, scale=0.7, initial_state=h0, backend="torch"),
        lambda r, k, v, w, h0, u: naive_linear_attention(r, k, v, w, h0, 0.7, bonus=u),
        inputs,
        gen,
    )


def test_gla_kernel_path_hands_fla_value_first_states(monkeypatch):
    """The kernel path calls fla's chunk_gla as fla's own GLA layer does, with states (b, h, V, K)
    (``state_v_first=True``), transposing ours (b, h, K, V) in and out: with a CPU stand-in for
    chunk_gla that keeps its states value-first, the results are the reference's."""
    import types

    from lengthgen.ops import gla as gla_mod

    calls = []

    def chunk_gla(q, k, v, g, scale, initial_state, output_final_state, state_v_first):
        calls.append((output_final_state, state_v_first, None if initial_state is None else tuple(initial_state.shape)))
        h0 = None if initial_state is None else initial_state.transpose(-1, -2)
        o, ht = gla_mod.decayed_attention_reference(q, k, v, g, scale, h0)
        return o, ht.transpose(-1, -2).contiguous()

    fla = types.ModuleType("fla")
    fla_ops = types.ModuleType("fla.ops")
    fla_gla = types.ModuleType("fla.ops.gla")
    fla_gla.chunk_gla = chunk_gla
    monkeypatch.setitem(sys.modules, "fla", fla)
    monkeypatch.setitem(sys.modules, "fla.ops", fla_ops)
    monkeypatch.setitem(sys.modules, "fla.ops.gla", fla_gla)
    monkeypatch.setattr(gla_mod, "use_kernel", lambda *a: True)
    gen = torch.Generator().manual_seed(41)
    q, k, v, g, h0 = linear_attention_inputs(gen, t=21)
    for init in (h0, None):
        o, ht = gla_scan(q, k, v, g, initial_state=init)
        init32 = None if init is None else init.float().double()  # the kernel path hands fla a float32 state
        o_ref, ht_ref = gla_mod.decayed_attention_reference(q, k, v, g, q.shape[-1] ** -0.5, init32)
        torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ht, ht_ref.float(), rtol=1e-6, atol=1e-6)
        assert ht.shape == h0.shape and ht.is_contiguous()
    b, _, h, K = q.shape
    assert calls == [(True, True, (b, h, v.shape[-1], K)), (True, True, None)]


def test_gla_and_rwkv6_split_and_carry():
    gen = torch.Generator().manual_seed(40)
    q, k, v, g, _ = linear_attention_inputs(gen, t=35)
    u = rand(3, 4, gen=gen)
    splits = [1, 15, 16, 17, 34]
    check_split(lambda q, k, v, g, initial_state=None: gla_scan(q, k, v, g, initial_state=initial_state, backend="torch"),
                [q, k, v, g], [], "initial_state", splits, [1, 1, 1, 1])  # fmt: skip
    check_split(lambda r, k, v, w, initial_state=None: rwkv6_scan(r, k, v, w, u, initial_state=initial_state, backend="torch"),
                [q, k, v, g], [], "initial_state", splits, [1, 1, 1, 1])  # fmt: skip


def test_linear_attention_bad_shapes():
    q = torch.zeros(1, 4, 2, 3)
    with pytest.raises(ValueError, match="initial_state must be"):
        gla_scan(q, q, torch.zeros(1, 4, 2, 5), q, initial_state=torch.zeros(1, 2, 5, 3))
    with pytest.raises(ValueError, match="u must be"):
        rwkv6_scan(q, q, torch.zeros(1, 4, 2, 5), q, torch.zeros(3))
    with pytest.raises(ValueError, match="keys and log decays"):
        gla_scan(q, torch.zeros(1, 4, 2, 4), torch.zeros(1, 4, 2, 5), q)


# ----------------------------------------------------------------------------- causal conv
def naive_conv(x, weight, bias, state):
    w = weight.shape[1]
    window, ys = state, []
    for t in range(x.shape[2]):
        window = torch.cat([window, x[:, :, t : t + 1]], -1)  # the last w inputs
        ys.append(F.silu((window[:, :, -w:] * weight).sum(-1) + bias))
        window = window[:, :, 1:] if w > 1 else window[:, :, :0]
    return torch.stack(ys, -1), window[:, :, window.shape[-1] - (w - 1) :]


@pytest.mark.parametrize("l,w", [(9, 4), (2, 4), (1, 4), (5, 1)])
def test_conv_matches_loop_with_grads(l, w):
    gen = torch.Generator().manual_seed(50 + l)
    b, d = 2, 3
    inputs = (rand(b, d, l, gen=gen), rand(d, w, gen=gen), rand(d, gen=gen), rand(b, d, w - 1, gen=gen))
    fn = lambda x, wt, bias, st: causal_conv1d(x, wt, bias, conv_state=st, backend="torch")  # noqa: E731
    if w == 1:  # a width-1 conv has an empty state: nothing to differentiate there
        y, st = fn(*inputs)
        ry, _ = naive_conv(*inputs)
        torch.testing.assert_close(y, ry, **TOL)
        assert st.shape == (b, d, 0)
        return
    check_against(fn, naive_conv, inputs, gen)


def test_conv_state_when_shorter_than_window():
    x = torch.arange(1.0, 3.0, dtype=DT).view(1, 1, 2)  # l = 2 < w - 1 = 3
    state = torch.tensor([[[10.0, 20.0, 30.0]]], dtype=DT)
    _, new = causal_conv1d(x, torch.ones(1, 4, dtype=DT), conv_state=state, activation=None, backend="torch")
    assert new.tolist() == [[[30.0, 1.0, 2.0]]]


def test_conv_split_and_carry():
    gen = torch.Generator().manual_seed(60)
    x, wt, bias = rand(2, 3, 11, gen=gen), rand(3, 4, gen=gen), rand(3, gen=gen)
    check_split(lambda x, conv_state=None: causal_conv1d(x, wt, bias, conv_state=conv_state, backend="torch"),
                [x], [], "conv_state", [1, 2, 3, 10], [2])  # fmt: skip


def test_conv_bad_input():
    with pytest.raises(ValueError, match="activation must be one of"):
        causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 4), activation="relu")
    with pytest.raises(ValueError, match="conv_state must be"):
        causal_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 4), conv_state=torch.zeros(1, 2, 4))


# ----------------------------------------------------------------------------- backends
def test_backend_choice_on_cpu():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="valid backends: auto, torch, kernel"):
        _backend.use_kernel("cuda", "fla", x)
    assert _backend.use_kernel("torch", "fla", x) is False
    assert _backend.use_kernel("auto", "fla", x) is False  # CPU inputs never try a kernel
    assert _backend.use_kernel("auto", "mamba_ssd", x.double()) is False
    with pytest.raises(RuntimeError, match="backend='kernel'"):
        _backend.use_kernel("kernel", "fla", x)
    with pytest.raises(ValueError, match="unknown backend"):
        ssd_scan(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1), torch.zeros(1), torch.zeros(1, 2, 1, 1),
                 torch.zeros(1, 2, 1, 1), backend="fast")  # fmt: skip


def test_kernel_backend_unavailable_names_the_fix(monkeypatch):
    def missing():
        raise ImportError("No module named 'fla'")

    monkeypatch.setitem(_backend.KERNELS, "fla", ("flash-linear-attention (fla-core)", missing))
    _backend.kernel_unavailable_reason.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="flash-linear-attention.*GPU install.*make wheelhouse"):
            gla_scan(*(torch.zeros(1, 2, 1, 2),) * 4, backend="kernel")
    finally:
        _backend.kernel_unavailable_reason.cache_clear()


@pytest.fixture
def fake_mamba(tmp_path, monkeypatch):
    """A package laid out like mamba-ssm 2.x whose __init__ needs the compiled selective scan."""
    root = tmp_path / "mamba_ssm"
    (root / "ops" / "triton").mkdir(parents=True)
    (root / "__init__.py").write_text("import selective_scan_cuda\n")
    (root / "ops" / "__init__.py").write_text("")
    (root / "ops" / "triton" / "__init__.py").write_text("")
    (root / "ops" / "triton" / "ssd_combined.py").write_text(
        textwrap.dedent(
            """
            try:
                import causal_conv1d_cuda
            except ImportError:
                causal_conv1d_cuda = None
            def mamba_chunk_scan_combined(*args, **kwargs):
                return "fake scan"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for cached in (_mamba_import.compiled_available, _mamba_import.mamba_chunk_scan_combined):
        cached.cache_clear()
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("mamba_ssm", "selective_scan_cuda")]:
        del sys.modules[name]
    for cached in (_mamba_import.compiled_available, _mamba_import.mamba_chunk_scan_combined):
        cached.cache_clear()


def test_mamba_import_registers_stand_ins_only_for_missing_extensions(fake_mamba):
    assert "selective_scan_cuda" not in sys.modules
    fn = _mamba_import.mamba_chunk_scan_combined()
    assert fn() == "fake scan"
    assert _mamba_import.compiled_selective_scan_available() is False
    stand_in = sys.modules["selective_scan_cuda"]
    with pytest.raises(ImportError, match="compiled CUDA extension that is not installed"):
        stand_in.fwd  # noqa: B018
    # causal_conv1d_cuda was imported under try/except ImportError, so it needed no stand-in
    assert "causal_conv1d_cuda" not in sys.modules
    assert _mamba_import.causal_conv1d_fn() is None


def test_public_names():
    assert set(ops.__all__) >= {"ssd_scan", "selective_scan", "gla_scan", "rwkv6_scan", "causal_conv1d",
                                "initial_state_contribution", "token_shift_lerp"}  # fmt: skip


def test_kernel_padding_leaves_outputs_and_state_unchanged():
    """Padding in time (g = 0, k = v = 0), as the fla path does, changes no output and not the final state."""
    from lengthgen.ops.gla import KERNEL_TIME_MULTIPLE, decayed_attention_reference, pad_for_kernel

    g = torch.Generator().manual_seed(0)
    b, t, h, K, V = 2, 5, 2, 4, 3
    q, k, gk = (torch.randn(b, t, h, K, generator=g, dtype=torch.float64) for _ in range(3))
    gk = -torch.nn.functional.softplus(gk)
    v = torch.randn(b, t, h, V, generator=g, dtype=torch.float64)
    s0 = torch.randn(b, h, K, V, generator=g, dtype=torch.float64)
    u = torch.randn(h, K, generator=g, dtype=torch.float64)
    n, (qp, kp, vp, gp) = pad_for_kernel(q[:, 1:], k[:, 1:], v[:, 1:], gk[:, 1:])  # a strided slice
    assert n == t - 1 and qp.shape[1] == KERNEL_TIME_MULTIPLE and qp.is_contiguous()
    for bonus in (None, u):
        o_ref, s_ref = decayed_attention_reference(q[:, 1:], k[:, 1:], v[:, 1:], gk[:, 1:], 0.5, s0, bonus=bonus)
        o_pad, s_pad = decayed_attention_reference(qp, kp, vp, gp, 0.5, s0, bonus=bonus)
        torch.testing.assert_close(o_pad[:, :n], o_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s_pad, s_ref, rtol=1e-12, atol=1e-12)


def test_rms_norm_reference_matches_a_loop_over_groups():
    from lengthgen.ops.norm import rms_norm

    g = torch.Generator().manual_seed(1)
    x, z = (torch.randn(2, 3, 8, generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.randn(8, generator=g, dtype=torch.float64)
    silu = torch.nn.functional.silu
    for gate, before in ((None, False), (z, False), (z, True)):
        for group in (None, 4):
            size = group or 8
            u = x * silu(z) if gate is not None and not before else x
            want = torch.cat([u[..., i:i + size] / (u[..., i:i + size].pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
                              for i in range(0, 8, size)], -1) * w
            if gate is not None and before:
                want = want * silu(z)
            got = rms_norm(x, w, 1e-5, z=gate, group_size=group, norm_before_gate=before)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert rms_norm(x.float(), w.float(), 1e-5).dtype == torch.float32
    with pytest.raises(ValueError, match="not a whole number of groups of 3"):
        rms_norm(x, w, 1e-5, group_size=3)
    with pytest.raises(ValueError, match="gate z must have x's shape"):
        rms_norm(x, w, 1e-5, z=z[:, :1])
    with pytest.raises(RuntimeError, match="use backend='torch' on CPU|unavailable"):
        rms_norm(x, w, 1e-5, backend="kernel")


def test_rms_norm_kernel_path_flattens_and_restores_the_shape(monkeypatch):
    """The kernel sees contiguous (rows, d) tensors and the op returns x's shape (CPU fake kernel)."""
    from lengthgen.ops import norm as norm_mod

    seen = []

    def fake(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        seen.append((tuple(x.shape), x.is_contiguous(), None if z is None else tuple(z.shape), group_size))
        return norm_mod.rms_norm_reference(x, weight, eps, z, group_size, norm_before_gate)

    monkeypatch.setattr(norm_mod, "use_kernel", lambda *a: True)
    monkeypatch.setattr(_mamba_import, "mamba_rmsnorm_fn", lambda: fake)
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64).transpose(1, 2)  # not contiguous
    z, w = torch.randn_like(x), torch.randn(8, dtype=torch.float64)
    got = norm_mod.rms_norm(x, w, 1e-5, z=z, group_size=4)
    assert seen == [((30, 8), True, (30, 8), 4)] and got.shape == x.shape
    torch.testing.assert_close(got, norm_mod.rms_norm_reference(x, w, 1e-5, z, 4), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_add_norm_is_the_add_then_the_norm(kind):
    """The fused pre-norm add (RMSNorm: GLA's mlp_norm; LayerNorm: RWKV-6's ffn_norm): the new
    residual is residual + x, the output the norm of it in x's dtype, with gradients as from the
    two ops apart."""
    from lengthgen.ops import norm as norm_mod

    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w, b = (torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    if kind == "rms":
        params, fused = [x, r, w], lambda x, r: norm_mod.add_rms_norm(x, r, w, 1e-5)
        norm = lambda h: norm_mod.rms_norm_reference(h, w, 1e-5)  # noqa: E731
    else:
        params, fused = [x, r, w, b], lambda x, r: norm_mod.add_layer_norm(x, r, w, b, 1e-5)
        norm = lambda h: torch.nn.functional.layer_norm(h, (8,), w, b, 1e-5)  # noqa: E731
    out, new = fused(x, r)
    want_new = r + x
    want = norm(want_new)
    assert torch.equal(new, want_new) and torch.equal(out, want)
    grads = torch.autograd.grad(out.square().sum() + new.sum(), params)
    want_grads = torch.autograd.grad(want.square().sum() + want_new.sum(), params)
    for a, c in zip(grads, want_grads):
        assert torch.equal(a, c)
    out16, _ = fused(x.detach().half(), r.detach())
    assert out16.dtype == torch.float16  # the sub-block output's dtype
    with pytest.raises(ValueError, match="residual must have"):
        fused(x, r[:, :3])
    with pytest.raises(ValueError, match="must have shape"):
        norm_mod.add_layer_norm(x, r, w, b[:4], 1e-5) if kind == "layer" else norm_mod.add_rms_norm(x, r, w[:4], 1e-5)


def test_add_rms_norm_kernel_path_passes_the_residual(monkeypatch):
    from lengthgen.ops import norm as norm_mod

    seen = []

    def fake(x, weight, bias, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False):
        seen.append((bias, prenorm, residual_in_fp32, residual is not None))
        new = residual + x
        return norm_mod.rms_norm_reference(new, weight, eps).to(x.dtype), new

    monkeypatch.setattr(norm_mod, "use_kernel", lambda *a: True)
    monkeypatch.setattr(_mamba_import, "mamba_add_rms_norm_fn", lambda: fake)
    x, r, w = torch.randn(3, 8), torch.randn(3, 8), torch.randn(8)
    out, new = norm_mod.add_rms_norm(x, r, w, 1e-5)
    assert seen == [(None, True, True, True)] and torch.equal(new, r + x)
    norm_mod.add_rms_norm(x, r.double(), w, 1e-5)  # a float64 residual stays on the reference
    assert len(seen) == 1
    bias = torch.randn(8)

    def fake_layer(x, weight, b, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False):
        seen.append((b is bias, prenorm, residual_in_fp32))
        new = residual + x
        return norm_mod.layer_norm_reference(new, weight, b, eps).to(x.dtype), new

    monkeypatch.setattr(_mamba_import, "mamba_add_layer_norm_fn", lambda: fake_layer)
    out, new = norm_mod.add_layer_norm(x, r, w, bias, 1e-5)
    assert seen[1:] == [(True, True, True)] and torch.equal(new, r + x)


def test_layer_norm_reference_matches_a_loop_over_groups():
    """LayerNorm per group with a bias over the whole dim, times silu(z) when gated (RWKV-6's norms
    and its gated per-head GroupNorm); x's dtype out; the kernel path (a CPU fake of mamba-ssm's
    layernorm_fn) gets contiguous (rows, d) tensors, LayerNorm, the gate after the norm."""
    from lengthgen.ops import norm as norm_mod

    g = torch.Generator().manual_seed(3)
    x, z = (torch.randn(2, 3, 8, generator=g, dtype=torch.float64) for _ in range(2))
    w, b = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(2))
    for gate in (None, z):
        for group in (None, 4):
            size = group or 8
            parts = [x[..., i:i + size] for i in range(0, 8, size)]
            want = torch.cat([(p - p.mean(-1, keepdim=True)) / (p.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
                              for p in parts], -1) * w + b
            if gate is not None:
                want = want * torch.nn.functional.silu(z)
            got = norm_mod.layer_norm(x, w, b, 1e-5, z=gate, group_size=group)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(norm_mod.layer_norm(x, w, None, 1e-5), torch.nn.functional.layer_norm(x, (8,), w, None, 1e-5))
    assert norm_mod.layer_norm(x.bfloat16(), w.float(), b.float(), 1e-5).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="not a whole number of groups of 3"):
        norm_mod.layer_norm(x, w, b, 1e-5, group_size=3)
    with pytest.raises(ValueError, match="weight and bias must have shape"):
        norm_mod.layer_norm(x, w, b[:4], 1e-5)
    with pytest.raises(ValueError, match="gate z must have x's shape"):
        norm_mod.layer_norm(x, w, b, 1e-5, z=z[:, :1])

    seen = []

    def fake(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=False):
        seen.append((tuple(x.shape), x.is_contiguous(), None if z is None else tuple(z.shape), group_size,
                     norm_before_gate, is_rms_norm))
        return norm_mod.layer_norm_reference(x, weight, bias, eps, z, group_size)

    import lengthgen.ops._mamba_import as mi
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(norm_mod, "use_kernel", lambda *a: True)
        mp.setattr(mi, "mamba_layernorm_fn", lambda: fake)
        xt = torch.randn(2, 5, 3, 8, dtype=torch.float64).transpose(1, 2)  # not contiguous
        zt = torch.randn_like(xt)
        got = norm_mod.layer_norm(xt, w, b, 1e-5, z=zt, group_size=4)
    assert seen == [((30, 8), True, (30, 8), 4, True, False)] and got.shape == xt.shape
    torch.testing.assert_close(got, norm_mod.layer_norm_reference(xt, w, b, 1e-5, zt, 4), rtol=0, atol=0)


def test_swiglu_linear_reference_and_checks():
    from lengthgen.ops import swiglu_linear

    g = torch.Generator().manual_seed(0)
    gate, up = torch.randn(2, 5, 8, generator=g, dtype=torch.float64), torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    w, b = torch.randn(3, 8, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    want = (gate * torch.sigmoid(gate) * up) @ w.T + b
    torch.testing.assert_close(swiglu_linear(gate, up, w, b), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(swiglu_linear(gate, up, w), want - b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        swiglu_linear(gate, up[..., :4], w)
    with pytest.raises(ValueError, match=r"weight must be \(out, 8\)"):
        swiglu_linear(gate, up, w[:, :4])
    with pytest.raises(RuntimeError, match="backend='kernel' needs"):
        swiglu_linear(gate, up, w, backend="kernel")


def test_cross_entropy_sum_reference_and_checks():
    from lengthgen.ops import cross_entropy_sum

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([3, -100, 0, 10, -100, 5, 5])
    loss = cross_entropy_sum(logits, targets)
    keep = targets != -100
    want = -(logits[keep].log_softmax(-1).gather(1, targets[keep, None])).sum()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)
    assert loss.dtype == torch.float64
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.equal(grad[~keep], torch.zeros_like(grad[~keep]))        # ignored tokens get no gradient
    soft = logits.detach().softmax(-1)
    torch.testing.assert_close(grad[keep], soft[keep] - F.one_hot(targets[keep], 11).double(), rtol=1e-12, atol=1e-12)
    # low precision: float32 math on the upcast logits, a float32 loss
    half = logits.detach().bfloat16()
    assert cross_entropy_sum(half, targets).dtype == torch.float32
    torch.testing.assert_close(cross_entropy_sum(half, targets), cross_entropy_sum(half.float(), targets))
    with pytest.raises(ValueError, match=r"logits must be \(tokens, vocab\)"):
        cross_entropy_sum(logits[None], targets)
    with pytest.raises(ValueError, match=r"targets must be \(7,\)"):
        cross_entropy_sum(logits, targets[:3])
    with pytest.raises(ValueError, match="integer token ids"):
        cross_entropy_sum(logits, targets.double())
    with pytest.raises(RuntimeError, match="backend='kernel' needs"):
        cross_entropy_sum(logits, targets, backend="kernel")


# ----------------------------------------------------------------------------- token-shift lerps
def naive_token_shift_lerp(x, previous, mu, bias):
    """x_t + (x_{t-1} - x_t) * (mu_i + bias_i), token by token (x_{-1} = previous or zeros)."""
    outs = []
    for i in range(mu.shape[-2]):
        rows = []
        for t in range(x.shape[1]):
            before = x[:, t - 1] if t else (torch.zeros_like(x[:, 0]) if previous is None else previous)
            m = mu[:, t, i] if mu.dim() == 4 else mu[i]
            rows.append(x[:, t] + (before - x[:, t]) * (m if bias is None else m + bias[i]))
        outs.append(torch.stack(rows, 1))
    return outs


@pytest.mark.parametrize("dynamic,with_prev,with_bias", [(False, True, False), (False, False, True),
                                                         (True, True, True), (True, False, False)])
@pytest.mark.parametrize("t", [1, 7])
def test_token_shift_lerp_matches_loop_with_grads(dynamic, with_prev, with_bias, t):
    from lengthgen.ops import token_shift_lerp

    gen = torch.Generator().manual_seed(t)
    b, d, n = 2, 5, 3
    x = rand(b, t, d, gen=gen)
    previous = rand(b, d, gen=gen) if with_prev else None
    mu = rand(*((b, t, n, d) if dynamic else (n, d)), gen=gen)
    bias = rand(n, d, gen=gen) if with_bias else None
    outs = token_shift_lerp(x, previous, mu, bias)
    want = naive_token_shift_lerp(x, previous, mu, bias)
    assert len(outs) == n
    probes = [torch.randn(o.shape, dtype=DT, generator=gen) for o in want]
    leaves = [v for v in (x, previous, mu, bias) if v is not None]
    grads = torch.autograd.grad(sum((o * p).sum() for o, p in zip(outs, probes)), leaves)
    want_grads = torch.autograd.grad(sum((o * p).sum() for o, p in zip(want, probes)), leaves)
    for o, w in zip(outs, want):
        torch.testing.assert_close(o, w, **TOL)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, **TOL)
        assert w.abs().max() > 0  # every input matters

    def fn(*tensors):
        it = iter(tensors)
        return token_shift_lerp(*(None if v is None else next(it) for v in (x, previous, mu, bias)))

    assert torch.autograd.gradcheck(fn, leaves)


def test_token_shift_lerp_split_and_carry_and_dtypes():
    """A sequence split at s with previous = x[:, s - 1] gives the whole's outputs; outputs are in
    the inputs' promoted dtype."""
    from lengthgen.ops import token_shift_lerp

    gen = torch.Generator().manual_seed(0)
    x, mu, bias = rand(2, 9, 4, gen=gen), rand(2, 9, 3, 4, gen=gen), rand(3, 4, gen=gen)
    whole = token_shift_lerp(x, None, mu, bias)
    for s in (1, 4, 8):
        first = token_shift_lerp(x[:, :s], None, mu[:, :s], bias)
        second = token_shift_lerp(x[:, s:], x[:, s - 1], mu[:, s:], bias)
        for w, a, c in zip(whole, first, second):
            torch.testing.assert_close(torch.cat([a, c], 1), w, rtol=0, atol=0)
    xf, mf = x.detach().float(), mu.detach()[0, 0].float()
    assert token_shift_lerp(xf.bfloat16(), None, mf)[0].dtype == torch.float32
    assert token_shift_lerp(xf.bfloat16(), None, mf.bfloat16())[0].dtype == torch.bfloat16
    assert token_shift_lerp(xf, None, mu.detach().bfloat16(), bias.detach().float())[0].dtype == torch.float32
    assert token_shift_lerp(xf, None, mf, bias)[0].dtype == torch.float64


def test_token_shift_lerp_bad_shapes():
    from lengthgen.ops import token_shift_lerp

    x, mu = torch.zeros(2, 3, 4), torch.zeros(2, 4)
    bad = [
        ((torch.zeros(3, 4), None, mu), r"x must be \(B, T, D\)"),
        ((torch.zeros(2, 0, 4), None, mu), r"at least one token"),
        ((x, None, torch.zeros(2, 5)), r"mu must be \(n, 4\) or \(B, T, n, 4\)"),
        ((x, None, torch.zeros(0, 4)), r"n >= 1"),
        ((x, None, torch.zeros(3, 4)[None]), r"mu must be"),
        ((x, None, torch.zeros(2, 2, 5, 4)), r"data-dependent mu must be \(2, 3, n, 4\)"),
        ((x, torch.zeros(2, 3), mu), r"previous must be \(2, 4\)"),
        ((x, None, mu, torch.zeros(3, 4)), r"bias must be \(2, 4\)"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            token_shift_lerp(*args)
    with pytest.raises(RuntimeError, match="backend='kernel' needs"):
        token_shift_lerp(x, None, mu, backend="kernel")
