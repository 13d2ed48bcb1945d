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
    """Run training. Bad input (a config, data, init model or run folder that cannot be used) is a
    :class:`lengthgen.errors.UserError`, checked before anything is written and reported by
    ``lengthgen.cli.main`` (exit status 2); a run that fails on valid input (divergence, a full disk)
    is a message and exit status 1."""
    from ..errors import UserError
    from ..train import TrainingDiverged, run_training

    try:
        run_training(cfg, out, stage=stage)
    except UserError:
        raise
    except (TrainingDiverged, OSError) as e:
        print(f"lengthgen {stage}: {e}", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    from ..config import load_config

    return train_stage(load_config(args.config, args.overrides), args.out, NAME)
