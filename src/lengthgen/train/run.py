"""A whole training run from a resolved config: what ``lengthgen pretrain`` / ``posttrain`` call.

Builds (or loads) the model, opens the prepared dataset, picks the sampler the intervention
needs, and hands everything to :class:`~lengthgen.train.trainer.Trainer`. Every rank of a
torchrun job runs this; only rank 0 writes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from lengthgen.config import ConfigError
from lengthgen.interventions import build_intervention
from lengthgen.train.budget import batch_layout
from lengthgen.train.checkpoint import RunDir
from lengthgen.train.distributed import Dist, setup
from lengthgen.train.trainer import Trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run_model(cfg: Mapping, vocab_size: int):
    """(model, peak learning rate): fresh weights from the preset, or ``model.init_from``."""
    from lengthgen.models import build_model, load_model, preset_lr

    m, lr = cfg["model"], cfg["train"].get("lr")
    if m.get("init_from"):
        model = load_model(m["init_from"])
        if model.vocab_size < vocab_size:
            raise ConfigError(f"the model from {m['init_from']} has {model.vocab_size} token ids, the dataset "
                              f"{vocab_size}: post-train with the tokenizer the model was trained with")
    else:
        overrides = dict(m.get("overrides") or {})
        overrides.setdefault("vocab_size", vocab_size)
        model = build_model(m["arch"], m["preset"], seed=cfg["seed"], **overrides)
        if model.vocab_size < vocab_size:
            raise ConfigError(f"model.overrides.vocab_size={overrides['vocab_size']} is smaller than the "
                              f"tokenizer's {vocab_size}: drop the override")
    if lr is None:
        try:
            lr = preset_lr(model.arch, m["preset"])
        except (ValueError, KeyError) as e:
            raise ConfigError(f"no peak learning rate for this model ({e}): set train.lr") from None
    return model, float(lr)


def build_batches(cfg: Mapping, tokens, rows: int, dist: Dist, contiguous: bool):
    """The training sampler: TBTT-contiguous streams or shuffled windows, sliced for this rank."""
    from lengthgen.data import ContiguousStreams, ShuffledWindows

    T = cfg["train"]["context"]
    if contiguous:
        return ContiguousStreams(tokens, context=T, batch_size=rows, rank=dist.rank, world_size=dist.world_size)
    return ShuffledWindows(tokens, context=T, batch_size=rows, seed=cfg["seed"], rank=dist.rank,
                           world_size=dist.world_size)


def run_training(cfg: Mapping, out_dir: str | Path, *, stage: str = "pretrain", log=print) -> dict:
    """Train as ``cfg`` says into ``out_dir`` (continuing it if it holds this run)."""
    from lengthgen.data import open_dataset
    from lengthgen.provenance import provenance

    dist = setup(cfg["train"].get("device", "auto"))
    try:
        # Everything is checked before anything is written: the run folder's identity, the data, the
        # init model, the intervention and the trainer's settings. Bad input leaves --out untouched.
        run = RunDir(out_dir)
        existing = run.check_config(cfg)
        dataset = open_dataset(dict(cfg))
        seed_everything(cfg["seed"])
        model, lr = build_run_model(cfg, dataset.vocab_size)
        intervention = build_intervention(cfg["intervention"], cfg["seed"])
        layout = batch_layout(cfg["train"], dist.world_size)
        batches = build_batches(cfg, dataset.train, layout.rows, dist, intervention.needs_contiguous)
        trainer = Trainer(model, batches, cfg, out_dir, intervention, dist=dist, peak_lr=lr, log=log)
        if dist.is_main and not existing:
            run.write_config(cfg)
            from lengthgen import io

            io.write_json(run.provenance, provenance(cfg, device=dist.device, stage=stage,
                                                     world_size=dist.world_size))
        dist.barrier()
        if dist.is_main:
            log(f"{stage}: {trainer.num_params:,} parameters, {trainer.steps} steps of "
                f"{layout.tokens_per_step:,} tokens, intervention {intervention!r}, peak lr {lr:g}, "
                f"{dist.world_size} process(es) on {dist.device}")
        return trainer.fit()
    finally:
        dist.close()
