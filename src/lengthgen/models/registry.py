"""Architecture registry: arch name -> module (imported lazily), presets, and ``build_model``.

The module protocol each architecture implements is described in ``lengthgen.models``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import torch

from lengthgen.models.base import LanguageModel, ModelConfig

ARCHS: tuple[str, ...] = ("mamba1", "mamba2", "gla", "rwkv6")

_ARCH_MODULES: dict[str, str] = {
    "mamba1": "lengthgen.models.mamba1",
    "mamba2": "lengthgen.models.mamba2",
    "gla": "lengthgen.models.gla",
    "rwkv6": "lengthgen.models.rwkv6",
}

_REQUIRED = ("ARCH", "Config", "PRESETS", "PRESET_LR", "Model", "load_official")


def arch_module(arch: str) -> ModuleType:
    """The module implementing ``arch``, checked against the protocol."""
    if arch not in _ARCH_MODULES:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    module = importlib.import_module(_ARCH_MODULES[arch])
    missing = [name for name in _REQUIRED if not hasattr(module, name)]
    if missing:
        raise ImportError(f"{module.__name__} does not implement the arch protocol: missing {missing}")
    if module.ARCH != arch or module.Model.arch != arch:
        raise ImportError(f"{module.__name__} declares arch {module.ARCH!r}/{module.Model.arch!r}, expected {arch!r}")
    return module


def presets(arch: str) -> dict[str, dict[str, Any]]:
    """Preset name -> config kwargs for ``arch`` (paper Table 2 rows plus ``tiny``)."""
    return dict(arch_module(arch).PRESETS)


def preset_lr(arch: str, preset: str) -> float:
    """The peak learning rate that goes with a preset (paper Table 2; ``tiny`` has its own)."""
    table = arch_module(arch).PRESET_LR
    if preset not in table:
        raise ValueError(f"no learning rate recorded for {arch} preset {preset!r}; presets with one: {', '.join(table)}")
    return float(table[preset])


def make_config(arch: str, preset: str = "tiny", **overrides: Any) -> ModelConfig:
    """The config of ``preset`` with keyword ``overrides`` (unknown keys are errors listing valid ones)."""
    module = arch_module(arch)
    if preset not in module.PRESETS:
        raise ValueError(f"unknown {arch} preset {preset!r}; valid presets: {', '.join(module.PRESETS)}")
    return module.Config.from_dict(module.PRESETS[preset]).replace(**overrides)


def instantiate(
    config: ModelConfig,
    arch: str,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> LanguageModel:
    """Build ``arch``'s model from ``config``. Weights are drawn on the CPU in float32 (so a seed
    gives the same weights on every device), then moved; ``device="meta"`` builds without memory."""
    model_cls = arch_module(arch).Model
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            model = model_cls(config)
    elif seed is None:
        model = model_cls(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_cls(config)
    return model.to(device=device, dtype=dtype)


def build_model(
    arch: str,
    preset: str = "tiny",
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> LanguageModel:
    """A freshly initialised model: ``build_model("mamba2", preset="mamba2-130m", n_layers=4)``."""
    return instantiate(make_config(arch, preset, **overrides), arch, seed=seed, device=device, dtype=dtype)
