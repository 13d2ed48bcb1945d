"""fla-hub checkpoints: tiny GLA / RWKV-6 folders written in fla's exact layout (config.json with
fla's field names, weights under fla's parameter names) load into our models with the same logits."""

import json

import pytest
import torch
from safetensors.torch import save_file

from lengthgen.models import build_model, load_model, save_model
from lengthgen.models import gla, rwkv6

MODULES = {"gla": gla, "rwkv6": rwkv6}

# What fla's GLAConfig / RWKV6Config.to_json_string() writes for the tiny preset (plus the
# transformers bookkeeping keys a hub config.json carries, which the loader ignores).
FLA_CONFIGS = {
    "gla": dict(
        model_type="gla", architectures=["GLAForCausalLM"], hidden_size=64, num_hidden_layers=2, num_heads=2,
        num_kv_heads=None, expand_k=0.5, expand_v=1.0, hidden_ratio=4, intermediate_size=None, vocab_size=256,
        attn_mode="chunk", use_short_conv=False, conv_size=4, use_output_gate=True, clamp_min=None,
        hidden_act="swish", feature_map=None, elementwise_affine=True, norm_eps=1e-6, use_gk=True, use_gv=False,
        attn=None, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True, tie_word_embeddings=False,
        initializer_range=0.02, bos_token_id=1, eos_token_id=2, torch_dtype="float32", transformers_version="4.53.0",
    ),
    "rwkv6": dict(
        model_type="rwkv6", architectures=["RWKV6ForCausalLM"], hidden_size=64, num_hidden_layers=2, num_heads=2,
        expand_k=0.5, expand_v=1.0, hidden_ratio=3.5, intermediate_size=None, proj_low_rank_dim=8,
        gate_low_rank_dim=16, hidden_act="sqrelu", norm_first=True, norm_bias=True, norm_eps=1e-5, attn=None,
        attn_mode="chunk", fuse_norm=True, vocab_size=256, tie_word_embeddings=False, initializer_range=0.02,
        bos_token_id=1, eos_token_id=2, torch_dtype="float32", transformers_version="4.53.0",
    ),
}  # fmt: skip


def to_fla_key(key: str) -> str:
    for ours, theirs in (("backbone.embedding.", "model.embeddings."), ("backbone.layers.", "model.layers."),
                         ("backbone.norm_f.", "model.norm.")):  # fmt: skip
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def source_model(arch):
    model = build_model(arch, "tiny", seed=3, pad_vocab_size_multiple=1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-default norms and mixes, so a mix-up shows
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def write_fla_folder(folder, arch, model, config_overrides=None, drop=(), extra=None, rename=None, fmt="safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**FLA_CONFIGS[arch], **(config_overrides or {})}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = {to_fla_key(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for k in drop:
        del sd[k]
    for old, new in (rename or {}).items():
        sd[new] = sd.pop(old)
    sd.update(extra or {})
    if fmt == "safetensors":
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, folder / "pytorch_model.bin")
    return folder


def logits(model, x):
    with torch.no_grad():
        return model(x)[0]


X = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_fla_hub_folder_loads_with_the_same_logits(tmp_path, arch, fmt):
    src = source_model(arch)
    folder = write_fla_folder(tmp_path / "hub", arch, src, fmt=fmt)
    loaded = load_model(folder)
    assert loaded.arch == arch and isinstance(loaded, MODULES[arch].Model)
    assert loaded.config == src.config
    assert torch.equal(logits(loaded, X), logits(src, X))
    direct = MODULES[arch].load_official(folder)
    assert torch.equal(logits(direct, X), logits(src, X))


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
def test_our_format_round_trips(tmp_path, arch):
    src = source_model(arch)
    again = load_model(save_model(src, tmp_path / "ours"))
    assert torch.equal(logits(again, X), logits(src, X))


def test_gla_unfused_norm_name_is_accepted(tmp_path):
    """fla names the output norm ``g_norm`` when fuse_norm is false."""
    src = source_model("gla")
    rename = {f"model.layers.{i}.attn.g_norm_swish_gate.weight": f"model.layers.{i}.attn.g_norm.weight" for i in range(2)}
    folder = write_fla_folder(tmp_path / "hub", "gla", src, config_overrides=dict(fuse_norm=False), rename=rename)
    assert torch.equal(logits(load_model(folder), X), logits(src, X))


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
def test_tied_embeddings_without_a_head(tmp_path, arch):
    src = build_model(arch, "tiny", seed=4, pad_vocab_size_multiple=1, tie_embeddings=True).eval()
    folder = write_fla_folder(tmp_path / "hub", arch, src, config_overrides=dict(tie_word_embeddings=True),
                              drop=["lm_head.weight"])  # fmt: skip
    loaded = load_model(folder)
    assert loaded.config.tie_embeddings and torch.equal(loaded.lm_head.weight, loaded.backbone.embedding.weight)
    assert torch.equal(logits(loaded, X), logits(src, X))


@pytest.mark.parametrize("arch, key", [("gla", "model.layers.1.attn.gk_proj.1.bias"), ("rwkv6", "model.layers.0.attn.bonus")])
def test_missing_key_is_named(tmp_path, arch, key):
    folder = write_fla_folder(tmp_path / "hub", arch, source_model(arch), drop=[key])
    with pytest.raises(ValueError, match=r"missing keys \[" + key.replace("model.", "backbone.").replace(".", r"\.")):
        load_model(folder)


@pytest.mark.parametrize("arch", ["gla", "rwkv6"])
def test_unexpected_key_is_named(tmp_path, arch):
    folder = write_fla_folder(tmp_path / "hub", arch, source_model(arch), extra={"model.layers.0.attn.q_conv1d.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys \[backbone\.layers\.0\.attn\.q_conv1d\.weight.*model\.layers"):
        load_model(folder)


@pytest.mark.parametrize(
    "arch, overrides, match",
    [("gla", dict(use_short_conv=True), "use_short_conv"), ("gla", dict(num_kv_heads=1), "num_kv_heads"),
     ("gla", dict(feature_map="relu"), "feature_map"), ("rwkv6", dict(hidden_act="relu"), "hidden_act"),
     ("gla", dict(expand_k=0.3), "expand_k")],
)  # fmt: skip
def test_unsupported_fla_config_is_a_clear_error(tmp_path, arch, overrides, match):
    folder = write_fla_folder(tmp_path / "hub", arch, source_model(arch), config_overrides=overrides)
    with pytest.raises(ValueError, match=match):
        load_model(folder)


def test_wrong_shapes_are_named(tmp_path):
    folder = write_fla_folder(tmp_path / "hub", "rwkv6", source_model("rwkv6"), config_overrides=dict(num_heads=4))
    with pytest.raises(ValueError, match="bonus"):
        load_model(folder)


def test_missing_weights_file(tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(FLA_CONFIGS["gla"]))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(folder)
