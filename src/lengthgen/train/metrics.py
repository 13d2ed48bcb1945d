"""Metrics of a run: ``metrics.jsonl`` (one line per optimizer step), a progress bar, and optional
TensorBoard / Weights & Biases loggers (imported only when switched on)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from lengthgen import io


class MetricsLog:
    """Append-only JSON lines, made consistent with a checkpoint on resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def truncate_after(self, step: int) -> None:
        """Keep the lines of steps <= ``step`` (lines a killed run wrote past its last checkpoint,
        and a torn last line, are dropped), rewriting the file atomically."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("step", step + 1) <= step:
                kept.append(line)
        io.write_text(self.path, "".join(line + "\n" for line in kept))

    def record_at(self, step: int) -> dict | None:
        """The logged record of ``step`` (the last one if logged twice), or None."""
        found = None
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("step") == step:
                    found = rec
        return found

    def write(self, record: Mapping) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a")
        self._fh.write(json.dumps(dict(record), sort_keys=False) + "\n")
        self._fh.flush()

    def sync(self) -> None:
        """Flush to disk (before a checkpoint names the steps as done)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Loggers:
    """Progress bar (tqdm, rank 0) plus the optional TensorBoard and W&B sinks."""

    def __init__(self, train: Mapping, run_dir: Path, total_steps: int, start_step: int, enabled: bool,
                 run_name: str | None = None, config: Mapping | None = None):
        self.bar = self.tb = self.wandb = None
        self.log_every = int(train.get("log_every", 1))
        if not enabled:
            return
        if train.get("progress", True):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc=run_name or Path(run_dir).name)
        if train.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("train.tensorboard=true needs the tensorboard package: "
                                   "pip install tensorboard (or set train.tensorboard=false)") from e
            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if train.get("wandb"):
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("train.wandb is set but wandb is not installed: pip install wandb "
                                   "(or set train.wandb=null)") from e
            self.wandb = wandb.init(project=train["wandb"], name=run_name or Path(run_dir).name,
                                    dir=str(run_dir), config=dict(config or {}), resume="allow")

    def log(self, record: Mapping) -> None:
        step = record["step"]
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if step % self.log_every == 0:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                     tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        if step % self.log_every:
            return
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
