"""The one place that imports mamba-ssm (and causal-conv1d) when their CUDA extensions are missing.

mamba-ssm can be installed as a pure wheel (``MAMBA_SKIP_CUDA_BUILD=TRUE``): its Triton SSD
kernels then work, but ``import mamba_ssm`` fails, because ``mamba_ssm/__init__.py`` imports
``ops.selective_scan_interface``, which imports the compiled ``selective_scan_cuda``
unconditionally.  This module first records which compiled extensions really import, then
imports ``mamba_ssm.ops.triton.ssd_combined``; whenever that import stops on one of the known
compiled modules (missing, or present but unloadable), it registers an empty stand-in module under that name and tries again.  Stand-ins
are only ever registered for modules that failed to import, and touching an attribute of one
raises an ImportError that names the missing extension.  Nothing here runs until a kernel is
asked for, so CPU-only installs never import mamba-ssm.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import Callable

# Compiled extension modules that mamba-ssm / causal-conv1d import by these top-level names.
COMPILED_MODULES = ("selective_scan_cuda", "causal_conv1d_cuda")


@functools.lru_cache(maxsize=None)
def compiled_available(name: str) -> bool:
    """Whether the real compiled extension ``name`` imports (checked once, before any stand-in)."""
    if name not in COMPILED_MODULES:
        raise ValueError(f"unknown compiled module {name!r}; known: {COMPILED_MODULES}")
    existing = sys.modules.get(name)
    if existing is not None:
        return not getattr(existing, "__lengthgen_stand_in__", False)
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def compiled_selective_scan_available() -> bool:
    """True when mamba-ssm's compiled selective scan (``selective_scan_cuda``) is installed."""
    return compiled_available("selective_scan_cuda")


def compiled_causal_conv1d_available() -> bool:
    """True when causal-conv1d's compiled extension (``causal_conv1d_cuda``) is installed."""
    return compiled_available("causal_conv1d_cuda")


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"lengthgen stand-in: the compiled extension {name} is not installed")
    module.__lengthgen_stand_in__ = True

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(
            f"{name}.{attr} is unavailable: {name} is a compiled CUDA extension that is not installed "
            "(mamba-ssm / causal-conv1d were installed without it); lengthgen uses its Triton and torch "
            "paths instead"
        )

    module.__getattr__ = __getattr__
    return module


def _from_mamba(module: str, attr: str) -> Callable:
    """``getattr(import_module(module), attr)`` for a mamba-ssm module, with stand-ins for the
    compiled extensions its package ``__init__`` imports (see the module docstring)."""
    for name in COMPILED_MODULES:  # record the truth before any stand-in can mask it
        compiled_available(name)
    for _ in range(len(COMPILED_MODULES) + 1):
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:  # missing, or present but unloadable (e.g. built for another torch)
            if e.name in COMPILED_MODULES and e.name not in sys.modules:
                sys.modules[e.name] = _stand_in(e.name)
                continue
            raise
    raise ImportError(f"could not import {module}")  # pragma: no cover


@functools.lru_cache(maxsize=None)
def mamba_chunk_scan_combined() -> Callable:
    """mamba-ssm's ``mamba_chunk_scan_combined`` (Triton SSD), importable without compiled extensions."""
    return _from_mamba("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")


@functools.lru_cache(maxsize=None)
def mamba_rmsnorm_fn() -> Callable:
    """mamba-ssm's Triton ``rmsnorm_fn`` (plain or gated, grouped RMSNorm), without compiled extensions."""
    return _from_mamba("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn")


@functools.lru_cache(maxsize=None)
def mamba_layernorm_fn() -> Callable:
    """mamba-ssm's Triton ``layernorm_fn`` (plain or gated, grouped LayerNorm with a bias)."""
    return _from_mamba("mamba_ssm.ops.triton.layernorm_gated", "layernorm_fn")


@functools.lru_cache(maxsize=None)
def mamba_add_rms_norm_fn() -> Callable:
    """mamba-ssm's Triton ``rms_norm_fn`` with a residual (the residual add fused into the norm)."""
    return _from_mamba("mamba_ssm.ops.triton.layer_norm", "rms_norm_fn")


@functools.lru_cache(maxsize=None)
def mamba_add_layer_norm_fn() -> Callable:
    """mamba-ssm's Triton ``layer_norm_fn`` with a residual (LayerNorm, the residual add fused in)."""
    return _from_mamba("mamba_ssm.ops.triton.layer_norm", "layer_norm_fn")


@functools.lru_cache(maxsize=None)
def causal_conv1d_fn() -> Callable | None:
    """causal-conv1d's ``causal_conv1d_fn`` when its compiled extension is installed, else None."""
    if not compiled_causal_conv1d_available():
        return None
    from causal_conv1d import causal_conv1d_fn as fn

    return fn
