"""Model folders: our format, mamba-ssm's layout, and the dispatch to the fla-hub loaders.

Our format (written by :func:`save_model`, read by everything) is a folder with
``config.json`` = ``{"lengthgen": {"arch": ..., "config": {...}}}`` and ``model.safetensors``
(a tied ``lm_head.weight`` is not stored twice). :func:`load_model` also reads

* mamba-ssm's ``MambaLMHeadModel`` layout (``config.json`` with ``d_model``, ``n_layer``,
  ``ssm_cfg``... + ``pytorch_model.bin``), e.g. ``state-spaces/mamba-130m``, ``state-spaces/mamba2-130m``;
* the fla-hub layout (``config.json`` with ``model_type`` ``gla``/``rwkv6``), handed to that
  arch module's ``load_official``.

A hub name is fetched with ``huggingface_hub.snapshot_download`` (or found in its cache), and a
run folder (one holding ``final/``, see ``lengthgen.train.checkpoint``) means its final model
(:func:`resolve_model_path`). Every problem with what a folder holds is a
:class:`lengthgen.errors.ModelError` naming the file and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from lengthgen.errors import ModelError, ModelNotFoundError
from lengthgen.io import atomic_path, write_json
from lengthgen.models.base import LanguageModel, ModelConfig
from lengthgen.models.registry import ARCHS, arch_module, instantiate

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"
HEAD_KEY = "lm_head.weight"
EMBEDDING_KEY = "backbone.embedding.weight"
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
RUN_FINAL = "final"              # a run folder's final model (lengthgen.train.checkpoint.RunDir)
RUN_CHECKPOINTS = "checkpoints"
REWRITE = "re-copy the model folder, or rerun the stage that wrote it (a run's checkpoints/step_* hold earlier copies)"


# ---------------------------------------------------------------------------- our format
def save_model(model: LanguageModel, folder: str | Path) -> Path:
    """Write ``model`` to ``folder`` in our format. Each file is replaced atomically, and
    ``config.json`` is written last, so a folder with a config has complete weights."""
    from safetensors.torch import save_file

    model = unwrap(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        del tensors[HEAD_KEY]
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(folder / CONFIG_FILE, {"lengthgen": {"arch": model.arch, "config": model.config.to_dict()}})
    return folder


def unwrap(model: Any) -> LanguageModel:
    """The LanguageModel inside a torch.compile (``_orig_mod``) or DDP (``module``) wrapper."""
    while not isinstance(model, LanguageModel):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"save_model needs a lengthgen LanguageModel, got {type(model).__name__}")
        model = inner
    return model


def _load_ours(folder: Path, meta: Mapping[str, Any]) -> LanguageModel:
    from safetensors.torch import load_file

    arch = meta.get("arch")
    if arch not in ARCHS:
        raise ModelError(f"{folder / CONFIG_FILE}: lengthgen.arch is {arch!r}; valid archs: {', '.join(ARCHS)}")
    try:
        config = arch_module(arch).Config.from_dict(meta.get("config", {}))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{folder / CONFIG_FILE}: {e}") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelNotFoundError(f"{folder} has a config.json but no {WEIGHTS_FILE}: the checkpoint is incomplete; "
                                 f"{REWRITE}")
    return model_from_state_dict(arch, config, _load_safetensors(weights), source=str(weights))


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    """The tensors in ``path``; a truncated or corrupted file is a :class:`ModelError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise ModelError(f"{path} is truncated or corrupted ({e}): {REWRITE}") from None


def _load_torch_weights(path: Path) -> dict[str, Tensor]:
    """A ``pytorch_model.bin`` state dict; an unreadable file is a :class:`ModelError` naming it."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as e:
        raise ModelError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}): {REWRITE}") from None


# ---------------------------------------------------------------------------- shared helpers
def model_from_state_dict(
    arch: str, config: ModelConfig, state_dict: Mapping[str, Tensor], source: str
) -> LanguageModel:
    """A model of ``arch``/``config`` holding exactly ``state_dict`` (our parameter names).

    A tied head may be absent from ``state_dict`` or equal to the embedding. Missing, unexpected
    or misshapen keys raise an error naming them and ``source``. (The model is built on the CPU
    and overwritten: building on the meta device would lose the tie and the no-weight-decay marks.)"""
    model = instantiate(config, arch)
    sd = dict(state_dict)
    expected = model.state_dict()
    if config.tie_embeddings and EMBEDDING_KEY in sd:
        head = sd.get(HEAD_KEY)
        if head is not None and not torch.equal(head.to(sd[EMBEDDING_KEY].dtype), sd[EMBEDDING_KEY]):
            raise ModelError(f"{source}: {HEAD_KEY} differs from {EMBEDDING_KEY} but the config ties them (tie_embeddings)")
        sd[HEAD_KEY] = sd[EMBEDDING_KEY]
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{source} does not match a {arch} model with this config: "
            f"missing keys {_listing(missing)}; unexpected keys {_listing(unexpected)}"
        )
    wrong = [f"{k}: {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if wrong:
        raise ModelError(f"{source}: parameter shapes do not match the config: {_listing(wrong)}")
    model.load_state_dict(sd, strict=True)
    return model


def _listing(items: list[str], limit: int = 12) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path} is not valid JSON ({e}): {REWRITE}") from None


def read_weights(folder: Path) -> tuple[dict[str, Tensor], str]:
    """The state dict in ``folder`` (``model.safetensors`` or ``pytorch_model.bin``) and its path."""
    if (folder / WEIGHTS_FILE).is_file():
        return _load_safetensors(folder / WEIGHTS_FILE), str(folder / WEIGHTS_FILE)
    if (folder / TORCH_WEIGHTS_FILE).is_file():
        path = folder / TORCH_WEIGHTS_FILE
        return _load_torch_weights(path), str(path)
    raise ModelNotFoundError(f"{folder} has no weights: expected {WEIGHTS_FILE} or {TORCH_WEIGHTS_FILE}; {REWRITE}")


# ---------------------------------------------------------------------------- mamba-ssm layout
# MambaConfig defaults (mamba_ssm/models/config_mamba.py) for keys a config.json may omit.
_MAMBA_SSM_DEFAULTS = {"rms_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True, "d_intermediate": 0}
# Keys that only select kernels or numerics of the upstream implementation.
_MAMBA_SSM_IGNORED = {"residual_in_fp32", "fused_add_norm", "use_fast_path", "use_mem_eff_path", "layer_idx"}


def mamba_ssm_config(cfg: Mapping[str, Any], source: str = CONFIG_FILE) -> tuple[str, ModelConfig]:
    """Translate a mamba-ssm ``config.json`` into (arch, our Config); unsupported options are errors."""
    cfg = {**_MAMBA_SSM_DEFAULTS, **cfg}
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in cfg:
            raise ValueError(f"{source}: mamba-ssm config lacks {key!r}")
    if not cfg["rms_norm"]:
        raise ValueError(f"{source}: LayerNorm models (rms_norm: false) are not supported; lengthgen models use RMSNorm")
    if cfg["d_intermediate"]:
        raise ValueError(f"{source}: blocks with an MLP (d_intermediate={cfg['d_intermediate']}) are not supported")
    if cfg.get("attn_layer_idx"):
        raise ValueError(f"{source}: hybrid models with attention layers (attn_layer_idx) are not supported")
    ssm_cfg = {k: v for k, v in (cfg.get("ssm_cfg") or {}).items() if k not in _MAMBA_SSM_IGNORED}
    layer = ssm_cfg.pop("layer", "Mamba1")
    arch = {"Mamba1": "mamba1", "Mamba2": "mamba2"}.get(layer)
    if arch is None:
        raise ValueError(f"{source}: ssm_cfg.layer {layer!r} is not supported (Mamba1 or Mamba2)")
    module = arch_module(arch)
    ssm_cfg = module.from_mamba_ssm_cfg(ssm_cfg, source)
    fields = {
        "d_model": cfg["d_model"],
        "n_layers": cfg["n_layer"],
        "vocab_size": cfg["vocab_size"],
        "pad_vocab_size_multiple": cfg["pad_vocab_size_multiple"],
        "tie_embeddings": cfg["tie_embeddings"],
        **ssm_cfg,
    }
    if "norm_epsilon" in cfg:
        fields["norm_eps"] = cfg["norm_epsilon"]
    try:
        return arch, module.Config.from_dict(fields)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_mamba_ssm(folder: str | Path) -> LanguageModel:
    """A model from a folder in mamba-ssm's layout (``config.json`` + ``pytorch_model.bin``)."""
    folder = Path(folder)
    arch, config = mamba_ssm_config(read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    state_dict, source = read_weights(folder)
    return model_from_state_dict(arch, config, state_dict, source)


# ---------------------------------------------------------------------------- entry point
def is_hub_name(name: str | Path) -> bool:
    """True for an ``owner/name`` string a Hugging Face hub repository could have."""
    return bool(_HUB_NAME.match(str(name)))


def resolve_model_path(path_or_hub_name: str | Path) -> str:
    """Where the model named by a stage's ``--model`` / ``--init`` / ``model.init_from`` is.

    A run folder (one holding ``final/``) means its ``final/`` model; a model folder or a hub name is
    returned as it is. A run folder without ``final/`` (an unfinished run) and a local path that does
    not exist (and is not a hub name) are :class:`ModelError` naming the path and the fix; every
    stage that takes a model resolves it here, before it writes anything.
    """
    p = Path(path_or_hub_name)
    if p.is_dir() and not (p / CONFIG_FILE).exists():
        if (p / RUN_FINAL).is_dir():
            return str(p / RUN_FINAL)
        if (p / RUN_CHECKPOINTS).is_dir():
            raise ModelError(f"{p} is a run folder without final/: the run has not finished; finish it "
                             "(rerun its pretrain command) or pass one of its checkpoints/step_* folders")
    if not p.exists() and not is_hub_name(path_or_hub_name):
        raise ModelNotFoundError(f"model folder {p} does not exist (and is not a hub name like "
                                 "state-spaces/mamba-130m): check the path; pass a run folder, its final/, a "
                                 "checkpoints/step_* folder or a hub name")
    return str(path_or_hub_name)


def resolve_folder(path_or_hub_name: str | Path, revision: str | None = None) -> Path:
    """A local folder as is (a run folder: its ``final/``); a hub name (``owner/name``) through the
    Hugging Face cache/hub."""
    path = Path(resolve_model_path(path_or_hub_name))
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path} is a file; a model is a folder (config.json + weights): pass the folder "
                             "that holds it, or the run folder")
        return path
    name = str(path_or_hub_name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(f"loading {name} from the hub needs huggingface_hub (pip install huggingface_hub)") from None
    try:
        return Path(
            snapshot_download(name, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])
        )
    except Exception as e:  # offline, unknown repo, network: one actionable message
        raise ModelNotFoundError(
            f"{name} is not a local folder and could not be got from the Hugging Face hub "
            f"({type(e).__name__}: {e}). If it is a path, check it; for a hub model, on a machine with network "
            f"run `huggingface-cli download {name} --local-dir <folder>` (or pre-fill the HF cache), "
            f"then pass that folder instead of the hub name"
        ) from None


def load_model(
    path_or_hub_name: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> LanguageModel:
    """Load a model folder in any supported format (detected from its ``config.json``), a run
    folder's final model, or a hub name; what cannot be loaded is a :class:`ModelError`."""
    folder = resolve_folder(path_or_hub_name, revision)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelNotFoundError(f"{folder} has no {CONFIG_FILE}: not a model folder; pass a model folder "
                                 f"(config.json + {WEIGHTS_FILE}), a run folder (with final/) or a hub name")
    cfg = read_json(folder / CONFIG_FILE)
    if not isinstance(cfg, dict):
        raise ModelError(f"{folder / CONFIG_FILE} does not hold a JSON object: {REWRITE}")
    try:
        if "lengthgen" in cfg:
            model = _load_ours(folder, cfg["lengthgen"])
        elif cfg.get("model_type") in ARCHS:
            model = arch_module(cfg["model_type"]).load_official(folder)
        elif "d_model" in cfg and "n_layer" in cfg:
            model = load_mamba_ssm(folder)
        else:
            raise ModelError(
                f"{folder / CONFIG_FILE} is not a known model format: expected a lengthgen checkpoint "
                f"(key 'lengthgen'), an fla-hub config (model_type in {list(ARCHS)}), or a mamba-ssm config "
                f"(d_model, n_layer, ssm_cfg)"
            )
    except ModelError:
        raise
    except ValueError as e:  # the format translators' errors name the file; make them the user error
        raise ModelError(f"{e}") from e
    return model.to(device=device, dtype=dtype)
