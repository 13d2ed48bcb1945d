"""The run folder: resolved config, provenance, metrics, checkpoints, milestones, final model.

::

    RUN_DIR/config.yaml                 resolved run config, without the study grid (the run's identity:
                                        its hash is checked on rerun)
    RUN_DIR/provenance.json             lengthgen.provenance block
    RUN_DIR/metrics.jsonl               one JSON line per optimizer step
    RUN_DIR/checkpoints/step_XXXXXXXX/  model folder (models.save_model) + trainer.pt
    RUN_DIR/checkpoints/latest          text: the name of the last complete checkpoint
    RUN_DIR/milestones/<name>/          model folder at a token milestone ("2.5x", "1000000")
    RUN_DIR/final/                      model folder after the last step

Every folder is written under a temporary name and renamed into place when complete, and
``latest`` is replaced atomically after that: a crash or a full disk at any moment leaves the
previous checkpoint and ``latest`` intact.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import yaml

from lengthgen import io
from lengthgen.config import config_hash, read_yaml, run_config
from lengthgen.errors import UserError

CKPT_PREFIX = "step_"
TRAINER_FILE = "trainer.pt"
MODEL_FILES = ("model.safetensors", "config.json")   # a model folder (models.save_model)
# Keys that only change how a run is observed or how often it is saved, not what it computes:
# they may differ when a run is continued.
OPERATIONAL_KEYS = ("progress", "tensorboard", "wandb", "log_every", "checkpoint_every", "keep_checkpoints")


class RunDirError(UserError, RuntimeError):
    """A run folder that cannot be used as asked; the message says why and what to do (a user error)."""


def identity_hash(cfg: Mapping) -> str:
    """Hash of the run-defining config, ignoring :data:`OPERATIONAL_KEYS` of ``train``."""
    cfg = {k: v for k, v in cfg.items()}
    cfg["train"] = {k: v for k, v in dict(cfg.get("train", {})).items() if k not in OPERATIONAL_KEYS}
    return config_hash(cfg)


def write_folder(dest: Path, fill: Callable[[Path], None]) -> Path:
    """Create folder ``dest`` atomically: ``fill(tmp)`` writes into a temporary sibling, which is
    renamed to ``dest`` only when ``fill`` returns (an existing ``dest`` is replaced)."""
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        old = dest.parent / f".{dest.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    io._fsync_dir(dest.parent)
    return dest


def is_model_folder(path: Path) -> bool:
    return all((Path(path) / name).is_file() for name in MODEL_FILES)


def copy_model_folder(src: Path, dest: Path) -> Path:
    """Copy the model files of folder ``src`` (e.g. a checkpoint) to model folder ``dest``, atomically."""
    return write_folder(dest, lambda tmp: [shutil.copy2(Path(src) / n, tmp / n) for n in MODEL_FILES])


def rng_state() -> dict:
    """Every global RNG stream a run might touch: torch (CPU, CUDA), numpy, python."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.provenance = self.root / "provenance.json"
        self.metrics = self.root / "metrics.jsonl"
        self.checkpoints = self.root / "checkpoints"
        self.latest_file = self.checkpoints / "latest"
        self.final = self.root / "final"
        self.milestones = self.root / "milestones"

    # ------------------------------------------------------------------ identity
    def check_config(self, cfg: Mapping) -> bool:
        """True if the folder already belongs to this config; a different config is an error."""
        if not self.config.exists():
            if self.latest_file.exists():
                raise RunDirError(f"{self.root} has checkpoints but no config.yaml: it is not a complete "
                                  "run folder; use a new --out folder")
            return False
        saved = read_yaml(self.config, "run config") or {}
        if not isinstance(saved, dict):
            raise RunDirError(f"{self.config} does not hold a config mapping: it is not a lengthgen run folder; "
                              "use a new --out folder")
        if identity_hash(saved) != identity_hash(cfg):
            diff = _diff(run_config(saved), run_config(cfg))
            raise RunDirError(
                f"{self.root} holds a run with a different config (hash {identity_hash(saved)} != "
                f"{identity_hash(cfg)}; differing keys: {', '.join(diff) or '?'}). Rerun with the same "
                "config and overrides to continue it, or pass a new --out folder")
        return True

    def write_config(self, cfg: Mapping) -> None:
        """Save the run-defining part of ``cfg`` (:func:`lengthgen.config.run_config`: the study grid,
        which many runs share, is not part of a run)."""
        io.write_text(self.config, yaml.safe_dump(run_config(cfg), sort_keys=False))

    def finished(self) -> bool:
        """True when ``final/`` holds a complete model folder (a workflow may have deleted its files)."""
        return is_model_folder(self.final)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"{CKPT_PREFIX}{step:08d}"

    # ------------------------------------------------------------------ checkpoints
    def latest(self) -> Path | None:
        """The last complete checkpoint folder, or None."""
        if not self.latest_file.exists():
            return None
        name = self.latest_file.read_text().strip()
        path = self.checkpoints / name
        if not (path / TRAINER_FILE).is_file():
            raise RunDirError(f"{self.latest_file} names {name!r}, which is missing or incomplete; "
                              "delete the latest file to restart from scratch, or use a new --out folder")
        return path

    def save_checkpoint(self, step: int, save_model: Callable[[Path], None], trainer_state: Mapping,
                        keep: int | None = None, protect: tuple[int, ...] = ()) -> Path:
        """Write ``step_<step>``, point ``latest`` at it, then keep the newest ``keep`` checkpoints
        (and those of the steps in ``protect``: the milestones' checkpoints are never pruned)."""
        name = self.checkpoint_dir(step).name

        def fill(tmp: Path) -> None:
            save_model(tmp)
            io.torch_save(dict(trainer_state), tmp / TRAINER_FILE)

        path = write_folder(self.checkpoints / name, fill)
        io.write_text(self.latest_file, name + "\n")
        if keep:
            keep_names = {name} | {self.checkpoint_dir(s).name for s in protect}
            done = sorted(p for p in self.checkpoints.glob(f"{CKPT_PREFIX}*") if p.is_dir())
            for p in done[:-keep]:
                if p.name not in keep_names:
                    shutil.rmtree(p, ignore_errors=True)
        return path

    def clean_temporaries(self) -> None:
        """Remove half-written folders left by a killed run."""
        for parent in (self.checkpoints, self.milestones, self.root):
            if parent.is_dir():
                for p in parent.glob(".*.tmp"):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                for p in parent.glob(".*.old"):
                    shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def load_trainer_state(checkpoint: Path) -> dict:
        """The trainer state of ``checkpoint``; a truncated or corrupted file is a :class:`RunDirError`."""
        import pickle

        path = Path(checkpoint) / TRAINER_FILE
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (EOFError, RuntimeError, pickle.UnpicklingError) as e:
            raise RunDirError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}): write the name of "
                              f"an earlier checkpoint into {Path(checkpoint).parent / 'latest'} (or delete that "
                              "file to restart), or use a new --out folder") from None


def _diff(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, key + ".")
        elif va != vb and not (prefix == "train." and k in OPERATIONAL_KEYS):
            out.append(key)
    return out
