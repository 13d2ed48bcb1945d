"""The language models: public contract, exact state carrying, state errors, presets, init, and
the Mamba-1/2 math against a token-by-token reference written from mamba-ssm's ``step``."""

from __future__ import annotations

import importlib.util
import math
import re

import pytest
import torch
import torch.nn.functional as F

from lengthgen.models import ARCHS, RecurrentState, arch_module, build_model, make_config, preset_lr, presets
from lengthgen.models.registry import _ARCH_MODULES


def require_arch(arch: str):
    """Skip only while the arch's module file does not exist; a broken module fails the test."""
    if importlib.util.find_spec(_ARCH_MODULES[arch]) is None:
        pytest.skip(f"{_ARCH_MODULES[arch]} is not written yet")
    return arch_module(arch)


def tiny(arch: str, seed: int = 0, **overrides):
    require_arch(arch)
    return build_model(arch, "tiny", seed=seed, dtype=torch.float64, **overrides)


def ids_for(model, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=g)


def assert_states_close(a: RecurrentState, b: RecurrentState, tol: float) -> None:
    assert a.arch == b.arch and a.num_layers == b.num_layers
    for (i, name, x), (_, _, y) in zip(a.tensors(), b.tensors()):
        assert x.shape == y.shape, (i, name)
        assert torch.allclose(x, y, atol=tol, rtol=0), (i, name, (x - y).abs().max().item())


# ---------------------------------------------------------------------------- contract
def test_archs_constant_and_presets_table():
    from lengthgen.models import PRESETS

    assert ARCHS == ("mamba1", "mamba2", "gla", "rwkv6")
    assert PRESETS["mamba2"]["mamba2-45m"]["d_model"] == 512 and "tiny" in PRESETS["mamba1"]


@pytest.mark.parametrize("arch", ARCHS)
def test_contract(arch):
    model = tiny(arch)
    assert isinstance(model.vocab_size, int) and model.vocab_size >= model.config.vocab_size
    ids = ids_for(model, 3, 9)
    logits, state = model(ids)
    assert logits.shape == (3, 9, model.vocab_size) and logits.dtype == torch.float64
    assert torch.isfinite(logits).all()
    assert isinstance(state, RecurrentState) and state.arch == arch and state.batch_size == 3
    assert state.num_layers == model.config.n_layers and "ssm" in state.components
    logits2, state2 = model(ids_for(model, 3, 4, seed=2), state=state)
    assert logits2.shape == (3, 4, model.vocab_size)
    zero = model.zero_state(3)
    assert zero.arch == arch and all((t == 0).all() for _, _, t in zero.tensors())
    zero.check_compatible(state2)
    # an explicit zero state is the same as no state
    assert torch.equal(model(ids, state=zero)[0], logits)
    # the state's dtype follows the parameters: float64 here, float32 for low precision
    assert state.dtype == torch.float64
    assert build_model(arch, "tiny", dtype=torch.bfloat16).zero_state(1).dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length", [1, 2, 40])  # shorter than the conv window's 3 inputs, and past a chunk
def test_no_state_is_exactly_the_zero_state(arch, length):
    """``state=None`` hands the layers no state tensors; logits, final state and every gradient
    equal those from an explicit ``zero_state`` bit for bit (float64)."""
    model = tiny(arch)
    ids = ids_for(model, 2, length)
    runs = []
    for state in (None, model.zero_state(2)):
        model.zero_grad(set_to_none=True)
        logits, final = model(ids, state=state)
        (logits.square().mean() + sum(t.square().sum() for _, _, t in final.tensors())).backward()
        runs.append((logits.detach(), final.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, fa, ga), (b, fb, gb) = runs
    assert torch.equal(a, b)
    assert [(i, n) for i, n, _ in fa.tensors()] == [(i, n) for i, n, _ in fb.tensors()]
    assert all(torch.equal(x, y) and x.dtype == y.dtype for (_, _, x), (_, _, y) in zip(fa.tensors(), fb.tensors()))
    assert ga.keys() == gb.keys() and all(torch.equal(ga[n], gb[n]) for n in ga)


@pytest.mark.parametrize("arch", ARCHS)
def test_detach_and_mask_return_new_states(arch):
    model = tiny(arch)
    ids = ids_for(model, 3, 6)
    with torch.enable_grad():
        _, state = model(ids)
    assert any(t.requires_grad for _, _, t in state.tensors())
    detached = state.detach()
    assert not any(t.requires_grad for _, _, t in detached.tensors())
    keep = torch.tensor([True, False, True])
    masked = detached.mask(keep)
    for (_, _, t), (_, _, m) in zip(detached.tensors(), masked.tensors()):
        assert torch.equal(m[1], torch.zeros_like(m[1])) and torch.equal(m[keep], t[keep])
    assert not all((t[1] == 0).all() for _, _, t in detached.tensors())  # the original is untouched
    # a zeroed row continues exactly like a fresh start
    nxt = ids_for(model, 3, 5, seed=7)
    cont, _ = model(nxt, state=masked)
    fresh, _ = model(nxt[1:2])
    assert torch.allclose(cont[1:2], fresh, atol=1e-12, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("splits", [[3], [1, 32, 33, 40], list(range(1, 48, 7))])
def test_split_and_carry_is_exact(arch, splits):
    """Whole sequence vs the same sequence in pieces with the state carried (float64)."""
    model = tiny(arch)
    ids = ids_for(model, 2, 48)  # crosses the tiny Mamba-2 chunk (32) and splits inside the conv window (3)
    whole, final = model(ids)
    state, pieces = None, []
    for lo, hi in zip([0, *splits], [*splits, 48]):
        out, state = model(ids[:, lo:hi], state=state)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, 1), whole, atol=1e-9, rtol=0)
    assert_states_close(state, final, 1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_nonzero_initial_state_matters_and_carries(arch):
    model = tiny(arch)
    _, state = model(ids_for(model, 2, 20))
    ids = ids_for(model, 2, 30, seed=3)
    from_state, final = model(ids, state=state)
    assert not torch.allclose(from_state, model(ids)[0])
    a, s = model(ids[:, :11], state=state)
    b, s = model(ids[:, 11:], state=s)
    assert torch.allclose(torch.cat([a, b], 1), from_state, atol=1e-9, rtol=0)
    assert_states_close(s, final, 1e-9)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_state_errors(arch):
    model = tiny(arch)
    ids = ids_for(model, 2, 5)
    _, state = model(ids)
    with pytest.raises(ValueError, match="batch size"):
        model(ids_for(model, 3, 5), state=state)
    other = tiny("mamba2" if arch == "mamba1" else "mamba1")
    with pytest.raises(ValueError, match="arch"):
        model(ids, state=other.zero_state(2))
    deeper = tiny(arch, n_layers=3)
    with pytest.raises(ValueError, match="layers"):
        model(ids, state=deeper.zero_state(2))
    wider = tiny(arch, d_state=8)
    with pytest.raises(ValueError, match="shape"):
        model(ids, state=wider.zero_state(2))
    with pytest.raises(TypeError, match="RecurrentState"):
        model(ids, state=[t for _, _, t in state.tensors()])


def test_input_id_errors():
    model = tiny("mamba2")
    with pytest.raises(ValueError, match="batch, length"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        model(torch.tensor([[-1, 2]]))


def test_empty_sequence_keeps_the_state():
    model = tiny("mamba2")
    _, state = model(ids_for(model, 2, 4))
    logits, same = model(torch.zeros(2, 0, dtype=torch.long), state=state)
    assert logits.shape == (2, 0, model.vocab_size)
    assert_states_close(same, state, 0)


def test_bad_arch_preset_and_override_name_the_valid_ones():
    with pytest.raises(ValueError, match="mamba1, mamba2, gla, rwkv6"):
        build_model("mamba3")
    with pytest.raises(ValueError, match="mamba2-45m"):
        build_model("mamba2", preset="mamba2-7b")
    with pytest.raises(ValueError, match=r"\['d_hidden'\].*valid keys: .*d_model.*headdim"):
        build_model("mamba2", d_hidden=3)
    with pytest.raises(ValueError, match="integer"):
        build_model("mamba2", d_model="64")
    with pytest.raises(ValueError, match="multiple of headdim"):
        build_model("mamba2", headdim=48)
    with pytest.raises(ValueError, match="dt_rank"):
        build_model("mamba1", dt_rank=0)


# ---------------------------------------------------------------------------- presets
def _nominal(name: str) -> float:
    value, unit = re.fullmatch(r".*-([\d.]+)([mb])", name).groups()
    return float(value) * (1e6 if unit == "m" else 1e9)


def _paper_presets():
    for arch in ARCHS:
        if importlib.util.find_spec(_ARCH_MODULES[arch]) is None:
            continue
        for name in presets(arch):
            if name != "tiny":
                yield arch, name


@pytest.mark.parametrize("arch,name", list(_paper_presets()))
def test_preset_parameter_counts_match_their_names(arch, name):
    """Unique parameters (a tied embedding counts once; padded vocabulary rows included), on the
    meta device so the 1.3B preset costs nothing."""
    model = build_model(arch, name, device="meta")
    assert abs(model.num_parameters() / _nominal(name) - 1) < 0.10, model.num_parameters()
    assert 0 < preset_lr(arch, name) < 1e-2


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_paper_presets_table2(arch):
    for name, kw in presets(arch).items():
        cfg = make_config(arch, name)
        if name != "tiny":
            assert cfg.vocab_size == 50277 and cfg.padded_vocab_size % 16 == 0 and cfg.padded_vocab_size == 50288
    assert make_config("mamba2", "mamba2-780m").headdim == 96
    assert make_config("mamba2", "mamba2-130m").nheads == 24  # expand 2 x (12 heads of 64 over d_model)
    assert preset_lr("mamba2", "mamba2-780m") == 2.5e-4
    with pytest.raises(ValueError, match="presets with one"):
        preset_lr(arch, "nope")


def test_overrides_apply_on_top_of_the_preset():
    model = build_model("mamba2", "mamba2-45m", device="meta", n_layers=2, d_model=128)
    assert model.config.n_layers == 2 and model.config.d_model == 128 and model.config.d_state == 128
    assert len(model.backbone.layers) == 2


# ---------------------------------------------------------------------------- init
def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("mamba2", seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_model("mamba2", seed=5)
    c = build_model("mamba2", seed=6)
    for (k, x), (_, y), (_, z) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(x, y), k
    assert not torch.equal(a.backbone.embedding.weight, c.backbone.embedding.weight)


def test_mamba1_init_like_upstream():
    m = build_model("mamba1", seed=0, n_layers=4)
    c = m.config
    mixer = m.backbone.layers[0].mixer
    assert m.lm_head.weight is m.backbone.embedding.weight
    assert torch.equal(mixer.A_log, torch.log(torch.arange(1, c.d_state + 1.0)).expand(c.d_inner, -1))
    assert torch.equal(mixer.D, torch.ones(c.d_inner))
    dt = F.softplus(mixer.dt_proj.bias)
    assert (dt >= c.dt_min * (1 - 1e-5)).all() and (dt <= c.dt_max * (1 + 1e-5)).all()
    bound = c.resolved_dt_rank**-0.5
    assert mixer.dt_proj.weight.abs().max() <= bound
    # residual rescale: kaiming-uniform bound 1/sqrt(fan_in), divided by sqrt(n_layers)
    assert mixer.out_proj.weight.abs().max() <= 1 / math.sqrt(c.d_inner) / math.sqrt(c.n_layers) + 1e-7
    assert mixer.out_proj.weight.abs().max() > 0.5 / math.sqrt(c.d_inner) / math.sqrt(c.n_layers)
    assert abs(m.backbone.embedding.weight.std().item() - c.initializer_range) < 0.004
    assert getattr(mixer.A_log, "_no_weight_decay", False) and getattr(mixer.D, "_no_weight_decay", False)


def test_mamba2_init_like_upstream():
    m = build_model("mamba2", seed=0)
    c = m.config
    mixer = m.backbone.layers[1].mixer
    A = torch.exp(mixer.A_log)
    assert A.shape == (c.nheads,) and (A >= c.A_init_range[0]).all() and (A <= c.A_init_range[1]).all()
    dt = F.softplus(mixer.dt_bias)
    assert (dt >= c.dt_min * (1 - 1e-5)).all() and (dt <= c.dt_max * (1 + 1e-5)).all()
    assert torch.equal(mixer.norm.weight, torch.ones(c.d_inner))
    assert mixer.out_proj.weight.abs().max() <= 1 / math.sqrt(c.d_inner) / math.sqrt(c.n_layers) + 1e-7
    untied = build_model("mamba2", tie_embeddings=False)
    assert untied.lm_head.weight is not untied.backbone.embedding.weight


# ---------------------------------------------------------------------------- math vs mamba-ssm's step
def _rms(x, w, eps):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * w


def _mamba1_step_reference(model, ids):
    """Token-by-token Mamba-1 after mamba-ssm's ``Mamba.step`` (full conv window, no ops)."""
    c, p = model.config, dict(model.named_parameters(remove_duplicate=False))
    b, L = ids.shape
    N, W = c.d_state, c.d_conv
    conv = [torch.zeros(b, c.d_inner, W, dtype=torch.float64) for _ in range(c.n_layers)]
    ssm = [torch.zeros(b, c.d_inner, N, dtype=torch.float64) for _ in range(c.n_layers)]
    out = []
    for t in range(L):
        h = p["backbone.embedding.weight"][ids[:, t]]
        for i in range(c.n_layers):
            q = lambda n: p[f"backbone.layers.{i}.mixer.{n}"]  # noqa: E731
            xz = _rms(h, p[f"backbone.layers.{i}.norm.weight"], c.norm_eps) @ q("in_proj.weight").T
            x, z = xz.chunk(2, -1)
            conv[i] = torch.cat([conv[i][:, :, 1:], x[:, :, None]], -1)
            x = F.silu((conv[i] * q("conv1d.weight")[:, 0]).sum(-1) + q("conv1d.bias"))
            dt, B, C = (x @ q("x_proj.weight").T).split([c.resolved_dt_rank, N, N], -1)
            dt = F.softplus(dt @ q("dt_proj.weight").T + q("dt_proj.bias"))
            A = -torch.exp(q("A_log"))
            ssm[i] = ssm[i] * torch.exp(dt[:, :, None] * A) + x[:, :, None] * dt[:, :, None] * B[:, None, :]
            y = (ssm[i] @ C[:, :, None])[..., 0] + q("D") * x
            h = h + (y * F.silu(z)) @ q("out_proj.weight").T
        out.append(_rms(h, p["backbone.norm_f.weight"], c.norm_eps) @ p["lm_head.weight"].T)
    return torch.stack(out, 1), ssm, [w[:, :, 1:] for w in conv]


def _mamba2_step_reference(model, ids):
    """Token-by-token Mamba-2 after mamba-ssm's ``Mamba2.step`` generalised to ngroups >= 1."""
    c, p = model.config, dict(model.named_parameters(remove_duplicate=False))
    b, L = ids.shape
    H, P, N, G, W = c.nheads, c.headdim, c.d_state, c.ngroups, c.d_conv
    conv = [torch.zeros(b, c.conv_dim, W, dtype=torch.float64) for _ in range(c.n_layers)]
    ssm = [torch.zeros(b, H, P, N, dtype=torch.float64) for _ in range(c.n_layers)]
    group_of_head = torch.arange(H) // (H // G)
    out = []
    for t in range(L):
        h = p["backbone.embedding.weight"][ids[:, t]]
        for i in range(c.n_layers):
            q = lambda n: p[f"backbone.layers.{i}.mixer.{n}"]  # noqa: E731
            zxbcdt = _rms(h, p[f"backbone.layers.{i}.norm.weight"], c.norm_eps) @ q("in_proj.weight").T
            z, xBC, dt = zxbcdt.split([c.d_inner, c.conv_dim, H], -1)
            conv[i] = torch.cat([conv[i][:, :, 1:], xBC[:, :, None]], -1)
            xBC = F.silu((conv[i] * q("conv1d.weight")[:, 0]).sum(-1) + q("conv1d.bias"))
            x, B, C = xBC.split([c.d_inner, G * N, G * N], -1)
            x = x.view(b, H, P)
            B = B.view(b, G, N)[:, group_of_head]  # (b, H, N)
            C = C.view(b, G, N)[:, group_of_head]
            dt = F.softplus(dt + q("dt_bias"))
            dA = torch.exp(dt * -torch.exp(q("A_log")))
            ssm[i] = ssm[i] * dA[:, :, None, None] + (dt[:, :, None, None] * x[..., None] * B[:, :, None, :])
            y = torch.einsum("bhpn,bhn->bhp", ssm[i], C) + q("D")[:, None] * x
            g = (y.reshape(b, -1) * F.silu(z)).view(b, G, -1)
            y = (g * torch.rsqrt(g.square().mean(-1, keepdim=True) + 1e-5)).reshape(b, -1) * q("norm.weight")
            h = h + y @ q("out_proj.weight").T
        out.append(_rms(h, p["backbone.norm_f.weight"], c.norm_eps) @ p["lm_head.weight"].T)
    return torch.stack(out, 1), ssm, [w[:, :, 1:] for w in conv]


@pytest.mark.parametrize(
    "arch,overrides,reference",
    [
        ("mamba1", {}, _mamba1_step_reference),
        ("mamba1", {"dt_rank": 3, "d_conv": 3}, _mamba1_step_reference),
        ("mamba2", {}, _mamba2_step_reference),
        ("mamba2", {"ngroups": 2, "tie_embeddings": False}, _mamba2_step_reference),
    ],
)
def test_mamba_matches_upstream_step_recurrence(arch, overrides, reference):
    model = tiny(arch, **overrides)
    with torch.no_grad():  # non-trivial conv/dt biases so their handling is exercised
        for layer in model.backbone.layers:
            layer.mixer.conv1d.bias.normal_()
            layer.norm.weight.uniform_(0.5, 1.5)
    ids = ids_for(model, 2, 40)
    with torch.no_grad():
        logits, state = model(ids)
        ref_logits, ref_ssm, ref_conv = reference(model, ids)
    assert torch.allclose(logits, ref_logits, atol=1e-10, rtol=0)
    for i in range(model.config.n_layers):
        assert torch.allclose(state.layers[i]["ssm"], ref_ssm[i], atol=1e-10, rtol=0)
        assert torch.allclose(state.layers[i]["conv"], ref_conv[i], atol=1e-12, rtol=0)


def test_gradients_reach_every_parameter_and_the_initial_state():
    model = build_model("mamba2", seed=0)
    state = model.zero_state(2).map(lambda _, t: t.clone().requires_grad_(True))
    logits, _ = model(ids_for(model, 2, 12), state=state)
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(t.grad is not None for _, _, t in state.tensors())


def test_set_backend_reaches_every_mixer():
    model = tiny("mamba1").set_backend("torch")
    assert all(layer.mixer.backend == "torch" for layer in model.backbone.layers)
    with pytest.raises(ValueError, match="backend"):
        model.set_backend("nope")(ids_for(model, 1, 3))


def test_the_study_levers_slow_the_initial_decay():
    """config/config.yaml's failing bases: Mamba-2 `m2-m-slow` starts with every step size in
    [1e-4, 1e-2] (per-step decay rates dt * A 10x smaller than `m2-m`'s),
    GLA `gla-s-slow` with a log decay per step 4x smaller than `gla-s`'s (same seed, same weights)."""
    from pathlib import Path

    import yaml

    models = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())["study"]["models"]
    built = {name: build_model(d["arch"], preset=d["preset"], seed=0, vocab_size=4096, **d["overrides"])
             for name, d in models.items() if name in ("m2-m", "m2-m-slow", "gla-s", "gla-s-slow")}
    assert set(built) == {"m2-m", "m2-m-slow", "gla-s", "gla-s-slow"}

    def rates(m):
        mixers = [layer.mixer for layer in m.backbone.layers]
        return torch.cat([F.softplus(x.dt_bias.detach()) * torch.exp(x.A_log.detach()) for x in mixers])

    slow_dt = torch.cat([F.softplus(layer.mixer.dt_bias.detach()) for layer in built["m2-m-slow"].backbone.layers])
    assert slow_dt.min() >= 1e-4 * (1 - 1e-5) and slow_dt.max() <= 1e-2 * (1 + 1e-5)
    # the same seed draws the same A and the same point of the log-uniform dt range: every head 10x slower
    torch.testing.assert_close(rates(built["m2-m"]) / rates(built["m2-m-slow"]), torch.full((24,), 10.0), rtol=1e-4, atol=0)

    x = torch.randn(2, 16, 128, generator=torch.Generator().manual_seed(0))

    def log_decay(m):
        attn = m.backbone.layers[0].attn
        return (F.logsigmoid(attn.gk_proj(x)) / attn.gate_logit_normalizer).mean()

    with torch.no_grad():
        assert float(log_decay(built["gla-s"]) / log_decay(built["gla-s-slow"])) == pytest.approx(4.0, rel=1e-6)


def test_linear_padded_is_the_layer_with_zero_pad_outputs():
    """Mamba-2's in_proj at an odd width runs with its outputs padded to a multiple of 8: the first
    out_features columns and every gradient are the layer's own, the pad's outputs are zero."""
    from lengthgen.models.layers import linear_padded

    torch.manual_seed(0)
    for bias in (False, True):
        layer = torch.nn.Linear(12, 13, bias=bias).double()
        x = torch.randn(3, 5, 12, dtype=torch.float64, requires_grad=True)
        out = linear_padded(x, layer)
        assert out.shape == (3, 5, 16) and torch.equal(out[..., 13:], torch.zeros(3, 5, 3, dtype=torch.float64))
        g = torch.randn(3, 5, 13, dtype=torch.float64)
        grads = torch.autograd.grad((out[..., :13] * g).sum(), [x, *layer.parameters()])
        ref = layer(x)
        ref_grads = torch.autograd.grad((ref * g).sum(), [x, *layer.parameters()])
        torch.testing.assert_close(out[..., :13], ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    aligned = torch.nn.Linear(4, 8)
    assert linear_padded(torch.randn(2, 4), aligned).shape == (2, 8)
