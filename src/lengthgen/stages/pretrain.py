"""Pretrain a recurrent language model with the paper's recipe (appendix B.1) into a run folder.

Writes RUN_DIR/config.yaml, provenance.json, metrics.jsonl, checkpoints/, milestones/ and final/
(docs/training.md). Rerunning the same command continues from the last complete checkpoint; a
finished run is a no-op. Under ``torchrun --nproc_per_node N`` it trains data-parallel.
"""

from __future__ import annotations

import sys

from ._common import add_config_arguments

NAME = "pretrain"
HELP = "train a model from scratch (or from model.init_from) into a run folder, resumable"


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created, or continued)")


def train_stage(cfg, out, stage: str) -> int:
    """Run training and turn the expected failures (divergence, a foreign run folder, missing data,
    a full disk or a missing model folder) into a message and exit status 1."""
    from ..data import DataError
    from ..train import RunDirError, TrainingDiverged, run_training

    try:
        run_training(cfg, out, stage=stage)
    except (TrainingDiverged, RunDirError, DataError, OSError) as e:
        print(f"lengthgen {stage}: {e}", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    from ..config import load_config

    return train_stage(load_config(args.config, args.overrides), args.out, NAME)
