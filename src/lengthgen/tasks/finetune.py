"""Task finetuning through the project's trainer: the passkey and BABILong protocols, the copying task.

``finetune`` trains ``model`` in place on :class:`SeededBatches` rows with the config's training
recipe (precision, schedule shape, clipping, ...), overriding the steps, context, batch and peak LR
of the task, and an intervention by name (``zero`` for standard finetuning, ``fitted_noise`` or
``state_passing``), whose other settings come from the config's ``intervention`` section.
The run folder (metrics, checkpoints, final model) makes an interrupted finetuning resumable.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Callable, Mapping

from .batches import SeededBatches


def finetune(model, make_row: Callable[[random.Random], tuple[list[int], list[int]]], cfg: Mapping,
             run_dir: str | Path, *, intervention: str, steps: int, context: int, batch_size: int,
             lr: float, log=print) -> dict:
    """Train ``model`` for ``steps`` steps of ``batch_size`` rows of ``context`` tokens; returns the
    trainer's summary."""
    from lengthgen.interventions import build_intervention
    from lengthgen.train import Trainer

    run_cfg = copy.deepcopy(dict(cfg))
    run_cfg["train"] = {**run_cfg["train"], "steps": steps, "tokens": None, "context": context,
                        "batch_tokens": batch_size * context, "lr": lr, "milestones": [],
                        "micro_batch": min(batch_size, run_cfg["train"]["micro_batch"] or batch_size)}
    run_cfg["intervention"] = {**run_cfg.get("intervention", {}), "name": intervention}
    batches = SeededBatches(make_row, batch_size, context, seed=run_cfg.get("seed", 0))
    try:
        trainer = Trainer(model, batches, run_cfg, run_dir, build_intervention(run_cfg["intervention"],
                                                                               seed=run_cfg.get("seed", 0)), log=log)
        return trainer.fit()
    finally:
        batches.close()
