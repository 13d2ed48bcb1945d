"""The reference implementations, built with the same config and the same weights as ours.

* Mamba-2: mamba-ssm's ``MambaLMHeadModel`` (``ssm_cfg.layer = "Mamba2"``).
* GLA, RWKV-6: fla's ``GLAForCausalLM`` / ``RWKV6ForCausalLM``.

The reference model is built (seeded), saved in its own layout (``save_pretrained``) and read
back by ``lengthgen.models.load_model``, so ours holds exactly its weights and the loaders are
exercised on the way. When the package is missing, :func:`pair` returns our model alone and the
reason.

Each reference is called the way its library is used for training: ``logits_of(kind)`` gives the
call that returns the logits (the loss is computed outside, identically for both).
"""

from __future__ import annotations

import tempfile
from typing import Callable

import torch
from torch import nn

from bench.common import scrub
from lengthgen.models import build_model, load_model, make_config


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ---------------------------------------------------------------------------- mamba-ssm
def import_mamba_ssm():
    """mamba-ssm's LM class, importable without its compiled extensions (lengthgen's import shim)."""
    from lengthgen.ops._mamba_import import mamba_chunk_scan_combined

    mamba_chunk_scan_combined()  # registers stand-ins for missing compiled modules, then imports mamba_ssm
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    return MambaConfig, MambaLMHeadModel


_MAMBA2_SSM_KEYS = ("d_state", "d_conv", "expand", "headdim", "ngroups", "A_init_range", "dt_min", "dt_max",
                    "dt_init_floor", "conv_init", "conv_bias", "bias", "norm_before_gate", "chunk_size")


def mamba_ssm_config_dict(config) -> dict:
    """Our Mamba-2 config as mamba-ssm ``MambaConfig`` keyword arguments."""
    ssm_cfg = {"layer": "Mamba2", **{k: getattr(config, k) for k in _MAMBA2_SSM_KEYS}}
    ssm_cfg["A_init_range"] = tuple(ssm_cfg["A_init_range"])
    return dict(d_model=config.d_model, d_intermediate=0, n_layer=config.n_layers, vocab_size=config.vocab_size,
                ssm_cfg=ssm_cfg, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                pad_vocab_size_multiple=config.pad_vocab_size_multiple, tie_embeddings=config.tie_embeddings)


def mamba_ssm_conv_path() -> dict:
    """What mamba-ssm's ``Mamba2`` will use for its short convolution on this install."""
    import mamba_ssm.modules.mamba2 as m2

    fn = getattr(m2, "causal_conv1d_fn", None)
    return {"causal_conv1d_fn": None if fn is None else f"{fn.__module__}.{fn.__qualname__}",
            "causal_conv1d_cuda_compiled": _compiled("causal_conv1d_cuda")}


def _compiled(name: str) -> bool:
    from lengthgen.ops._mamba_import import compiled_available

    return compiled_available(name)


def mamba_ssm_variants(model: nn.Module) -> list[tuple[str, Callable[[], None]]]:
    """Ways to run mamba-ssm's Mamba-2, tried in order until one trains:

    1. ``use_mem_eff_path=True`` (its default: conv, scan, gated norm and out_proj fused, needs the
       causal-conv1d extension);
    2. ``use_mem_eff_path=False``: separate conv and ``mamba_chunk_scan_combined``;
    3. as 2 with ``causal_conv1d_fn = None`` in ``mamba_ssm.modules.mamba2``: upstream's own
       fallback when causal-conv1d is not installed (``nn.Conv1d`` in torch).
    """
    import mamba_ssm.modules.mamba2 as m2

    mixers = [m for m in model.modules() if type(m).__name__ == "Mamba2"]

    def mem_eff(flag: bool) -> Callable[[], None]:
        def setup() -> None:
            for m in mixers:
                m.use_mem_eff_path = flag
        return setup

    def torch_conv() -> None:
        mem_eff(False)()
        m2.causal_conv1d_fn = None

    return [("use_mem_eff_path=True (fused conv+scan)", mem_eff(True)),
            ("use_mem_eff_path=False (causal_conv1d_fn as imported)", mem_eff(False)),
            ("use_mem_eff_path=False, causal_conv1d_fn=None (upstream torch conv fallback)", torch_conv)]


def mamba_ssm_pair(preset: str, seed: int, **overrides) -> tuple[nn.Module, nn.Module]:
    MambaConfig, MambaLMHeadModel = import_mamba_ssm()
    config = make_config("mamba2", preset, **overrides)
    theirs = _seeded(seed, lambda: MambaLMHeadModel(MambaConfig(**mamba_ssm_config_dict(config))))
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = load_model(tmp)
    return ours, theirs


# ---------------------------------------------------------------------------- fla
def fla_config_dict(arch: str, config) -> dict:
    """Our GLA / RWKV-6 config as fla config keyword arguments (vocabulary = our padded one)."""
    c = config
    common = dict(hidden_size=c.d_model, num_hidden_layers=c.n_layers, num_heads=c.num_heads, expand_k=c.expand_k,
                  expand_v=c.expand_v, hidden_ratio=c.hidden_ratio, intermediate_size=c.intermediate_size,
                  vocab_size=c.padded_vocab_size, tie_word_embeddings=c.tie_embeddings, norm_eps=c.norm_eps,
                  initializer_range=c.initializer_range, use_cache=False)
    if arch == "gla":
        return dict(common, clamp_min=c.clamp_min, elementwise_affine=c.elementwise_affine)
    if arch == "rwkv6":
        return dict(common, proj_low_rank_dim=c.proj_low_rank_dim, gate_low_rank_dim=c.gate_low_rank_dim,
                    norm_first=c.norm_first, norm_bias=c.norm_bias)
    raise ValueError(f"fla has no reference for arch {arch!r}")


def fla_pair(arch: str, preset: str, seed: int, **overrides) -> tuple[nn.Module, nn.Module]:
    import fla.models as fm

    cfg_cls, model_cls = {"gla": (fm.GLAConfig, fm.GLAForCausalLM),
                          "rwkv6": (fm.RWKV6Config, fm.RWKV6ForCausalLM)}[arch]
    config = make_config(arch, preset, **overrides)
    theirs = _seeded(seed, lambda: model_cls(cfg_cls(**fla_config_dict(arch, config))))
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        ours = load_model(tmp)
    return ours, theirs


# ---------------------------------------------------------------------------- entry points
REFERENCES = {"mamba2": "mamba-ssm MambaLMHeadModel", "gla": "fla GLAForCausalLM", "rwkv6": "fla RWKV6ForCausalLM"}


def pair(arch: str, preset: str, seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module | None, dict]:
    """(ours, theirs or None, info): the two models with the same weights, or ours alone with the
    reason the reference is unavailable. ``overrides`` change the preset's config (as in
    ``build_model``), e.g. the reduced study's shapes (``study_train`` section)."""
    info = {"reference": REFERENCES.get(arch)}
    try:
        if arch == "mamba2":
            ours, theirs = mamba_ssm_pair(preset, seed, **overrides)
            info["conv_path"] = mamba_ssm_conv_path()
        elif arch in ("gla", "rwkv6"):
            ours, theirs = fla_pair(arch, preset, seed, **overrides)
        else:
            raise ValueError(f"no reference implementation for arch {arch!r}")
        info["same_weights"] = "reference saved with save_pretrained, loaded by lengthgen.models.load_model"
        return ours, theirs, info
    except Exception as e:  # noqa: BLE001 - a missing or broken package is a recorded outcome
        info["unavailable"] = scrub(f"{type(e).__name__}: {e}")[:1000]
        return build_model(arch, preset, seed=seed, **overrides), None, info


def logits_of(kind: str) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """How to get (batch, length, vocab) logits from a model of ``kind`` (ours, mamba_ssm, fla)."""
    if kind == "ours":
        return lambda model, ids: model(ids)[0]
    if kind == "mamba_ssm":
        return lambda model, ids: model(ids).logits
    if kind == "fla":
        return lambda model, ids: model(input_ids=ids, use_cache=False).logits
    raise ValueError(f"unknown model kind {kind!r}")


def reference_kind(arch: str) -> str:
    return "mamba_ssm" if arch == "mamba2" else "fla"
