"""Training: the paper's recipe (appendix B.1) with exact resume, DDP and metrics.

Library API (what the stages and the copying task use)::

    from lengthgen.train import Trainer, Batch, run_training

    trainer = Trainer(model, batches, cfg, run_dir, intervention)   # cfg: a resolved config
    summary = trainer.fit()          # trains cfg["train"]["steps"] steps (or the token budget),
                                     # resuming from run_dir's last checkpoint if there is one

``batches`` is any resumable iterator of this rank's rows of each optimizer step: it yields a
``(rows, T + 1)`` LongTensor (inputs ``[:, :-1]``, targets ``[:, 1:]``), an ``(inputs, targets)``
pair or a :class:`Batch` (targets ``-100`` are not scored, e.g. a copying task's prompt), and has
``state_dict()`` / ``load_state_dict()`` (equal on every rank). ``rows`` is
``train.batch_tokens // train.context // world_size``. An attribute ``reset_rows`` marks rows that
do not continue the previous step (needed by TBTT). ``intervention`` is any
:class:`lengthgen.interventions.Intervention` (default: zero). ``peak_lr=`` overrides ``train.lr``
and ``dist=`` (from :func:`lengthgen.train.distributed.setup`) makes the run data-parallel.

``run_training(cfg, out_dir)`` is the whole pretrain/posttrain run from a config: model from the
preset (or ``model.init_from``), the prepared dataset, the sampler the intervention needs.

Modules: ``schedule`` (LR / weight decay), ``optim`` (AdamW groups), ``budget`` (token budgets,
batch layout), ``checkpoint`` (run folder), ``metrics``, ``distributed``, ``trainer``, ``run``.
See docs/training.md.
"""

from lengthgen.train.budget import BatchLayout, batch_layout, budget_tokens
from lengthgen.train.checkpoint import RunDir, RunDirError
from lengthgen.train.metrics import read_metrics
from lengthgen.train.run import run_training
from lengthgen.train.trainer import Batch, Trainer, TrainingDiverged

__all__ = ["Batch", "BatchLayout", "RunDir", "RunDirError", "Trainer", "TrainingDiverged",
           "batch_layout", "budget_tokens", "read_metrics", "run_training"]
