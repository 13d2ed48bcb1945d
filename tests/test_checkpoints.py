"""Model folders: our format round trip, mamba-ssm's layout (written here key by key as upstream
names them), the fla-hub dispatch, hub names offline, and the errors for broken folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lengthgen.models import build_model, load_model, save_model
from lengthgen.models import checkpoint as ckpt


def tiny(arch: str, **overrides):
    return build_model(arch, "tiny", seed=0, **overrides)


def ids_for(vocab: int, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(3))


def same_logits(a, b) -> bool:
    ids = ids_for(a.config.vocab_size)
    with torch.no_grad():
        return torch.equal(a(ids)[0], b(ids)[0])


# ---------------------------------------------------------------------------- our format
@pytest.mark.parametrize("arch,overrides", [("mamba1", {}), ("mamba2", {}), ("mamba2", {"tie_embeddings": False})])
def test_roundtrip(tmp_path, arch, overrides):
    from safetensors.torch import load_file

    model = tiny(arch, **overrides)
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta == {"lengthgen": {"arch": arch, "config": model.config.to_dict()}}
    stored = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert ("lm_head.weight" in stored) == (not model.config.tie_embeddings)
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.backbone.embedding.weight) == model.config.tie_embeddings
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert same_logits(model, loaded)
    # markers the optimizer reads survive loading
    assert getattr(loaded.backbone.layers[0].mixer.A_log, "_no_weight_decay", False)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_load_with_device_and_dtype_and_overwrite(tmp_path):
    model = tiny("mamba2")
    save_model(model, tmp_path)
    save_model(model, tmp_path)  # overwriting in place is fine and leaves no temporary files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(str(tmp_path), device="cpu", dtype=torch.float64)
    assert loaded.backbone.embedding.weight.dtype == torch.float64
    assert loaded.zero_state(1).dtype == torch.float64


def test_save_unwraps_ddp_and_compile_wrappers(tmp_path):
    model = tiny("mamba1")

    class Wrapper(torch.nn.Module):  # the attribute names DDP and torch.compile use
        def __init__(self, inner, attr):
            super().__init__()
            setattr(self, attr, inner)

    save_model(Wrapper(Wrapper(model, "module"), "_orig_mod"), tmp_path)
    assert same_logits(load_model(tmp_path), model)
    with pytest.raises(TypeError, match="LanguageModel"):
        save_model(torch.nn.Linear(2, 2), tmp_path)


def test_tuple_fields_survive_json(tmp_path):
    model = tiny("mamba2", A_init_range=(2.0, 4.0))
    save_model(model, tmp_path)
    assert load_model(tmp_path).config.A_init_range == (2.0, 4.0)


def test_incomplete_and_unknown_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lengthgen": {"arch": "mamba2", "config": {}}}))
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lengthgen": {"arch": "mamba9", "config": {}}}))
    with pytest.raises(ValueError, match="valid archs"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lengthgen": {"arch": "mamba2", "config": {"width": 3}}}))
    with pytest.raises(ValueError, match=r"\['width'\].*valid keys"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="not a known model format"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope" / "deeper")
    with pytest.raises(ValueError, match="is a file"):
        load_model(tmp_path / "config.json")


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(tiny("mamba2"), tmp_path)
    weights = str(tmp_path / "model.safetensors")
    sd = load_file(weights)
    good = dict(sd)
    del sd["backbone.layers.1.mixer.dt_bias"]
    sd["backbone.layers.1.mixer.extra"] = torch.zeros(2)
    save_file(sd, weights)
    with pytest.raises(ValueError, match=r"missing keys \[backbone.layers.1.mixer.dt_bias\].*unexpected keys \[backbone.layers.1.mixer.extra\]"):
        load_model(tmp_path)
    bad = dict(good, **{"backbone.norm_f.weight": torch.ones(3)})
    save_file(bad, weights)
    with pytest.raises(ValueError, match=r"backbone.norm_f.weight: \(3,\) != \(64,\)"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------- mamba-ssm layout
def upstream_keys_and_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of mamba-ssm's MambaLMHeadModel (mixer_seq_simple.py,
    mamba_simple.Mamba, mamba2.Mamba2), derived here from the config alone."""
    d, n_layer, ssm = cfg["d_model"], cfg["n_layer"], dict(cfg["ssm_cfg"])
    mult = cfg.get("pad_vocab_size_multiple", 8)
    vocab = math.ceil(cfg["vocab_size"] / mult) * mult
    layer = ssm.get("layer", "Mamba1")
    out = {"backbone.embedding.weight": (vocab, d), "backbone.norm_f.weight": (d,), "lm_head.weight": (vocab, d)}
    for i in range(n_layer):
        pre = f"backbone.layers.{i}."
        out[pre + "norm.weight"] = (d,)
        N, W, E = ssm.get("d_state", 16 if layer == "Mamba1" else 128), ssm.get("d_conv", 4), ssm.get("expand", 2)
        di = E * d
        if layer == "Mamba1":
            r = math.ceil(d / 16) if ssm.get("dt_rank", "auto") == "auto" else ssm["dt_rank"]
            out.update({
                pre + "mixer.A_log": (di, N), pre + "mixer.D": (di,),
                pre + "mixer.in_proj.weight": (2 * di, d),
                pre + "mixer.conv1d.weight": (di, 1, W), pre + "mixer.conv1d.bias": (di,),
                pre + "mixer.x_proj.weight": (r + 2 * N, di),
                pre + "mixer.dt_proj.weight": (di, r), pre + "mixer.dt_proj.bias": (di,),
                pre + "mixer.out_proj.weight": (d, di),
            })  # fmt: skip
        else:
            P, G = ssm.get("headdim", 64), ssm.get("ngroups", 1)
            H, conv_dim = di // P, di + 2 * G * N
            out.update({
                pre + "mixer.dt_bias": (H,), pre + "mixer.A_log": (H,), pre + "mixer.D": (H,),
                pre + "mixer.in_proj.weight": (2 * di + 2 * G * N + H, d),
                pre + "mixer.conv1d.weight": (conv_dim, 1, W), pre + "mixer.conv1d.bias": (conv_dim,),
                pre + "mixer.norm.weight": (di,),
                pre + "mixer.out_proj.weight": (d, di),
            })  # fmt: skip
    return out


MAMBA1_CFG = {  # as in state-spaces/mamba-130m's config.json, scaled down
    "d_model": 32, "n_layer": 2, "vocab_size": 260, "ssm_cfg": {},
    "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
}  # fmt: skip
MAMBA2_CFG = {  # as in state-spaces/mamba2-130m's config.json, scaled down
    "d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": 260,
    "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 2, "chunk_size": 32},
    "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
    "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True,
}  # fmt: skip


def write_mamba_ssm_folder(folder, cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """config.json + pytorch_model.bin exactly as mamba-ssm's save_pretrained writes them: the
    state dict (tied lm_head included) with upstream names and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(shape, generator=g) * 0.1 for k, shape in upstream_keys_and_shapes(cfg).items()}
    for k in sd:
        if k.endswith("A_log"):
            sd[k] = torch.rand(sd[k].shape, generator=g).log1p()
    if cfg.get("tie_embeddings", True):
        sd["lm_head.weight"] = sd["backbone.embedding.weight"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, folder / "pytorch_model.bin")
    return sd


@pytest.mark.parametrize("cfg,arch", [(MAMBA1_CFG, "mamba1"), (MAMBA2_CFG, "mamba2")])
def test_mamba_ssm_layout_loads_by_name(tmp_path, cfg, arch):
    sd = write_mamba_ssm_folder(tmp_path, cfg)
    model = load_model(tmp_path)
    assert model.arch == arch and model.config.d_model == 32 and model.config.n_layers == 2
    assert model.vocab_size == (264 if arch == "mamba1" else 272)  # mamba-ssm's padding rule
    assert model.lm_head.weight is model.backbone.embedding.weight
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k
    # our own build of the same config, given the same weights, computes the same logits
    ref = build_model(arch, "tiny", **{k: v for k, v in model.config.to_dict().items()})
    ref.load_state_dict(sd)
    assert same_logits(model, ref)
    # and the arch module's official loader reads the same folder
    from lengthgen.models.registry import arch_module

    assert same_logits(arch_module(arch).load_official(tmp_path), model)
    other = "mamba2" if arch == "mamba1" else "mamba1"
    with pytest.raises(ValueError, match=f"not {other}"):
        arch_module(other).load_official(tmp_path)


def test_mamba_ssm_config_translation():
    arch, c = ckpt.mamba_ssm_config(MAMBA2_CFG)
    assert arch == "mamba2" and (c.d_state, c.headdim, c.ngroups, c.chunk_size) == (16, 16, 2, 32)
    arch, c = ckpt.mamba_ssm_config({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}})
    assert arch == "mamba1" and c.padded_vocab_size == 50280 and c.d_state == 16  # MambaConfig defaults
    for bad, match in [
        ({"rms_norm": False}, "LayerNorm"),
        ({"d_intermediate": 128}, "MLP"),
        ({"attn_layer_idx": [1]}, "attention"),
        ({"ssm_cfg": {"layer": "Mamba3"}}, "Mamba3"),
        ({"ssm_cfg": {"layer": "Mamba2", "rmsnorm": False}}, "rmsnorm"),
        ({"ssm_cfg": {"layer": "Mamba2", "D_has_hdim": True}}, "D_has_hdim"),
        ({"ssm_cfg": {"layer": "Mamba2", "dt_limit": [0.0, 0.1]}}, "dt_limit"),
        ({"ssm_cfg": {"layer": "Mamba2", "d_state": 16, "frobnicate": 1}}, r"\['frobnicate'\].*valid keys"),
    ]:
        with pytest.raises(ValueError, match=match):
            ckpt.mamba_ssm_config({**MAMBA2_CFG, "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16}, **bad})
    with pytest.raises(ValueError, match="lacks 'n_layer'"):
        ckpt.mamba_ssm_config({"d_model": 8, "vocab_size": 8})


def test_mamba_ssm_layout_key_errors(tmp_path):
    sd = write_mamba_ssm_folder(tmp_path, MAMBA1_CFG)
    del sd["backbone.layers.0.mixer.D"]
    sd["backbone.layers.0.mixer.bogus"] = torch.zeros(1)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin.*missing keys \[backbone.layers.0.mixer.D\].*unexpected keys \[backbone.layers.0.mixer.bogus\]"):
        load_model(tmp_path)
    sd = write_mamba_ssm_folder(tmp_path, MAMBA1_CFG)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="ties them"):
        load_model(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------- fla-hub and hub names
def test_fla_hub_layout_dispatches_to_the_arch_module(tmp_path, monkeypatch):
    calls = []
    stand_in = tiny("mamba1")

    class FakeModule:
        @staticmethod
        def load_official(folder):
            calls.append(folder)
            return stand_in

    monkeypatch.setattr(ckpt, "arch_module", lambda arch: calls.append(arch) or FakeModule)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "rwkv6", "hidden_size": 8}))
    assert load_model(tmp_path) is stand_in
    assert calls == ["rwkv6", tmp_path]


def test_hub_name_offline_says_how_to_provide_the_folder(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (tests/conftest.py sets it)")
    monkeypatch.chdir(tmp_path)  # so the name is not a local folder
    name = "lengthgen-tests/no-such-model"
    with pytest.raises(FileNotFoundError, match=f"huggingface-cli download {name} --local-dir"):
        load_model(name)


def test_hub_name_found_in_cache_is_loaded(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub

    write_mamba_ssm_folder(tmp_path / "snap", MAMBA2_CFG)
    seen = {}

    def cached(repo_id, revision=None, allow_patterns=None):
        seen.update(repo_id=repo_id, revision=revision)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    monkeypatch.chdir(tmp_path)
    model = load_model("state-spaces/mamba2-130m", revision="main")
    assert model.arch == "mamba2" and seen == {"repo_id": "state-spaces/mamba2-130m", "revision": "main"}
