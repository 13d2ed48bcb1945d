"""GLA and RWKV-6 language models on the CPU in float64: the model contract, exact
split-and-carry (token shifts included), state errors and preset sizes."""

import pytest
import torch

from lengthgen.models import build_model, make_config, preset_lr
from lengthgen.models.state import RecurrentState

ARCHS = ("gla", "rwkv6")
COMPONENTS = {"gla": ("ssm",), "rwkv6": ("ssm", "shift_tm", "shift_cm")}


def tiny(arch, **kw):
    """A tiny float64 model whose zero-initialised parameters (token-shift mixes, bonus, LoRA
    input) are randomised too, so every path (especially the token shifts) matters."""
    model = build_model(arch, "tiny", seed=0, dtype=torch.float64, **kw)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".mu", "x_bias", "bonus", "lora.0.weight")):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model.eval()


def ids(batch=2, length=40, seed=0):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_state_diff(a: RecurrentState, b: RecurrentState) -> float:
    return max((x - y).abs().max().item() for (_, _, x), (_, _, y) in zip(a.tensors(), b.tensors()))


@pytest.mark.parametrize("arch", ARCHS)
def test_contract_shapes_and_zero_state(arch):
    model = tiny(arch)
    c = model.config
    x = ids(3, 9)
    logits, state = model(x)
    assert logits.shape == (3, 9, model.vocab_size) and logits.dtype == torch.float64
    assert isinstance(state, RecurrentState) and state.arch == arch and state.num_layers == c.n_layers
    assert state.components == COMPONENTS[arch]
    K, V = c.key_dim // c.num_heads, c.value_dim // c.num_heads
    for _, name, t in state.tensors():
        assert t.dtype == torch.float64
        assert tuple(t.shape) == ((3, c.num_heads, K, V) if name == "ssm" else (3, c.d_model))
    zero = model.zero_state(3)
    assert all(torch.count_nonzero(t) == 0 for _, _, t in zero.tensors())
    zero.check_compatible(state)
    logits0, state0 = model(x, state=zero)
    assert torch.equal(logits0, logits) and max_state_diff(state0, state) == 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_split_and_carry_is_exact(arch):
    model = tiny(arch)
    x = ids(2, 24)
    whole, final = model(x)
    for split in (1, 9, 23):
        a, state = model(x[:, :split])
        b, state = model(x[:, split:], state=state)
        assert (torch.cat([a, b], 1) - whole).abs().max().item() < 1e-9, split
        assert max_state_diff(state, final) < 1e-9, split
    # three pieces, one of them a single token
    state, pieces = None, []
    for lo, hi in ((0, 13), (13, 14), (14, 24)):
        out, state = model(x[:, lo:hi], state=state)
        pieces.append(out)
    assert (torch.cat(pieces, 1) - whole).abs().max().item() < 1e-9
    assert max_state_diff(state, final) < 1e-9


@pytest.mark.parametrize("arch", ARCHS)
def test_state_carries_information(arch):
    """Continuing from a prefix's state differs from continuing from zeros, in every component."""
    model = tiny(arch)
    x = ids(1, 12)
    _, state = model(x[:, :6])
    cold, _ = model(x[:, 6:])
    for component in COMPONENTS[arch]:
        only = state.map(lambda _, t: t, components=[component]).map(
            lambda _, t: torch.zeros_like(t), components=[c for c in COMPONENTS[arch] if c != component]
        )
        warm, _ = model(x[:, 6:], state=only)
        assert (warm[:, 0] - cold[:, 0]).abs().max() > 1e-6, component


def test_rwkv6_shift_states_are_the_normed_block_inputs():
    """shift_tm / shift_cm hold the last token's attn_norm / ffn_norm output (what the time mix and
    the channel mix read), as fla shifts."""
    model = tiny("rwkv6")
    seen = {}
    hooks = [
        getattr(block, name).register_forward_pre_hook(lambda m, i, key=(j, name): seen.__setitem__(key, i[0]))
        for j, block in enumerate(model.backbone.layers)
        for name in ("attn", "ffn")
    ]
    _, state = model(ids(2, 5))
    for h in hooks:
        h.remove()
    for j, (layer, block) in enumerate(zip(state.layers, model.backbone.layers)):
        assert torch.equal(layer["shift_tm"], seen[(j, "attn")][:, -1])
        assert torch.equal(layer["shift_cm"], seen[(j, "ffn")][:, -1])
    # the channel mix reads ffn_norm of the residual stream after the attention
    block, x = model.backbone.layers[0], ids(2, 5)
    h = block.pre_norm(model.backbone.embedding(x))
    y, _ = block.attn(block.attn_norm(h), {})
    torch.testing.assert_close(seen[(0, "ffn")], block.ffn_norm(h + y), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch):
    model = tiny(arch).train()
    x = ids(2, 10)
    logits, state = model(x[:, :5])
    logits2, _ = model(x[:, 5:], state=state)
    loss = torch.cat([logits, logits2], 1).logsumexp(-1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


@pytest.mark.parametrize("arch", ARCHS)
def test_state_errors_name_the_problem(arch):
    model = tiny(arch)
    other = tiny("rwkv6" if arch == "gla" else "gla")
    x = ids(2, 4)
    with pytest.raises(ValueError, match="arch"):
        model(x, state=other.zero_state(2))
    with pytest.raises(ValueError, match="batch size"):
        model(x, state=model.zero_state(3))
    with pytest.raises(TypeError, match="RecurrentState"):
        model(x, state={"ssm": torch.zeros(2)})
    bad = model.zero_state(2).map(lambda _, t: t[..., :-1], components=["ssm"])
    with pytest.raises(ValueError, match="ssm"):
        model(x, state=bad)


@pytest.mark.parametrize(
    "arch, overrides, match",
    [
        ("gla", dict(expand_k=0.3), "expand_k"),
        ("gla", dict(num_heads=3), "num_heads"),
        ("gla", dict(intermediate_size=-1), "intermediate_size"),
        ("gla", dict(gate_logit_normalizer=0), "gate_logit_normalizer"),
        ("rwkv6", dict(expand_v=0.7), "expand_v"),
        ("rwkv6", dict(hidden_ratio=0.0), "hidden_ratio"),
        ("rwkv6", dict(proj_low_rank_dim=0), "proj_low_rank_dim"),
        ("rwkv6", dict(norm_first="yes"), "norm_first"),
    ],
)
def test_bad_config_is_a_clear_error(arch, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(arch, "tiny", **overrides)


@pytest.mark.parametrize(
    "arch, preset, size, lr",
    [("gla", "gla-70m", 70e6, 1e-3), ("gla", "gla-120m", 120e6, 6e-4), ("gla", "gla-360m", 360e6, 3e-4),
     ("rwkv6", "rwkv6-70m", 70e6, 1e-3)],
)  # fmt: skip
def test_preset_sizes_match_their_names(arch, preset, size, lr):
    model = build_model(arch, preset, device="meta")
    assert abs(model.num_parameters() / size - 1) < 0.10, model.num_parameters()
    assert model.vocab_size >= 50277 and not model.config.tie_embeddings
    assert preset_lr(arch, preset) == lr


def test_gla_preset_shapes_follow_table2():
    """Table 2's d_head is d_model / n_heads: the value head dim with fla's expand_v = 1."""
    for preset, d_head in (("gla-70m", 128), ("gla-120m", 192), ("gla-360m", 256)):
        c = make_config("gla", preset)
        assert c.value_dim // c.num_heads == d_head
        assert c.key_dim == c.d_model // 2


def test_gla_mlp_width_follows_fla_rule():
    assert make_config("gla", "gla-70m").mlp_size == 1536  # int(512 * 4 * 2/3) = 1365 -> 1536
    assert make_config("gla", "gla-120m").mlp_size == 2048
    assert make_config("gla", "tiny", intermediate_size=100).mlp_size == 100
    assert make_config("rwkv6", "rwkv6-70m").ffn_size == 1792  # int(512 * 3.5), a multiple of 32
