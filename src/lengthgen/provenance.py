"""Provenance recorded in every result file and run folder: commit, config hash, seed, hardware, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Mapping

PACKAGES = (
    "lengthgen", "torch", "triton", "mamba-ssm", "causal-conv1d", "fla-core",
    "flash-linear-attention", "numpy", "tokenizers", "transformers", "datasets",
)


@lru_cache(maxsize=1)
def git_commit() -> dict:
    """Commit of the working tree (``LENGTHGEN_GIT_COMMIT`` overrides, e.g. on a copy without .git)."""
    env = os.environ.get("LENGTHGEN_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None}
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit or "unknown", "dirty": dirty if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


@lru_cache(maxsize=1)
def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_info(device=None) -> dict:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    dev = torch.device(device) if device is not None else None
    if torch.cuda.is_available() and (dev is None or dev.type == "cuda"):
        idx = dev.index if dev is not None and dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(device="cuda", gpu=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info.update(device="cpu")
    return info


def provenance(cfg: Mapping | None = None, seed: int | None = None, device=None, **extra) -> dict:
    """The provenance block. ``cfg`` is a resolved config (its hash and seed are recorded)."""
    from .config import config_hash

    prov = {
        "git": git_commit(),
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "seed": seed if seed is not None else (cfg or {}).get("seed"),
        "hardware": device_info(device),
        "versions": versions(),
        "argv": sys.argv[1:] if sys.argv else [],
    }
    prov.update(extra)
    return prov


REQUIRED = ("git", "config_hash", "seed", "hardware", "versions")
