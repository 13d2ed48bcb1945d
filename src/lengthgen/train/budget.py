"""Token budgets, step counts and the batch layout (global batch -> ranks -> micro-batches).

A budget is an integer number of tokens or a Chinchilla multiple ``"Nx"``: N times the
Chinchilla-optimal 20 tokens per parameter (so ``"20x"`` = 400 tokens per parameter). Parameters
are counted like the presets: every unique parameter, the tied embedding once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from lengthgen.config import ConfigError

CHINCHILLA_TOKENS_PER_PARAM = 20
_MULTIPLE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)x$")


def budget_tokens(budget: int | str, num_params: int) -> int:
    """Tokens of a budget given as an integer or as a Chinchilla multiple such as ``"2.5x"``."""
    if isinstance(budget, bool):
        raise ConfigError(f"token budget {budget!r} must be an integer or a multiple like '20x'")
    if isinstance(budget, int):
        return budget
    m = _MULTIPLE.match(str(budget))
    if not m:
        raise ConfigError(f"token budget {budget!r} must be an integer or a Chinchilla multiple like '20x'")
    return round(float(m.group(1)) * CHINCHILLA_TOKENS_PER_PARAM * num_params)


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's ``batch_tokens`` are split: rows, ranks, micro-batches."""

    context: int
    rows: int            # sequences per optimizer step (all ranks)
    world_size: int
    micro_batch: int     # sequences per forward/backward

    @property
    def rows_per_rank(self) -> int:
        return self.rows // self.world_size

    @property
    def accumulation(self) -> int:
        return self.rows_per_rank // self.micro_batch

    @property
    def tokens_per_step(self) -> int:
        return self.rows * self.context

    def micro_rows(self, rank: int) -> list[range]:
        """Global row ranges of the micro-batches rank ``rank`` runs in one step."""
        first = rank * self.rows_per_rank
        return [range(first + j * self.micro_batch, first + (j + 1) * self.micro_batch)
                for j in range(self.accumulation)]


def batch_layout(train: Mapping, world_size: int = 1) -> BatchLayout:
    """Check ``train.batch_tokens``/``context``/``micro_batch`` against the world size."""
    T, tokens, micro = train["context"], train["batch_tokens"], train["micro_batch"]
    if tokens % T:
        raise ConfigError(f"train.batch_tokens={tokens} must be a multiple of train.context={T} "
                          f"(e.g. {max(1, tokens // T) * T})")
    rows = tokens // T
    if micro is None:  # the whole of a rank's rows in one forward/backward
        if rows % world_size:
            raise ConfigError(f"train.batch_tokens={tokens} gives {rows} sequences of {T} tokens per step, "
                              f"which {world_size} processes cannot share evenly; set train.batch_tokens "
                              f"to a multiple of {world_size * T}")
        micro = rows // world_size
    if rows % (micro * world_size):
        raise ConfigError(
            f"train.batch_tokens={tokens} gives {rows} sequences of {T} tokens per step, which must be a "
            f"multiple of train.micro_batch={micro} x {world_size} process(es); "
            f"set train.batch_tokens to a multiple of {micro * world_size * T} or change train.micro_batch")
    return BatchLayout(context=T, rows=rows, world_size=world_size, micro_batch=micro)


def total_steps(train: Mapping, layout: BatchLayout, num_params: int) -> int:
    """``train.steps``, or the token budget ``train.tokens`` divided by the tokens per step (ceil)."""
    if train.get("steps") is not None:
        return int(train["steps"])
    if train.get("tokens") is None:
        raise ConfigError("set train.steps or train.tokens (an integer or a Chinchilla multiple like '20x')")
    return max(1, math.ceil(budget_tokens(train["tokens"], num_params) / layout.tokens_per_step))


def milestone_steps(milestones, layout: BatchLayout, num_params: int, steps: int) -> dict[str, int]:
    """Milestone name (as configured, e.g. ``"2.5x"`` or ``"1000000"``) -> the step reaching it."""
    out = {}
    for m in milestones or ():
        step = max(1, math.ceil(budget_tokens(m, num_params) / layout.tokens_per_step))
        if step > steps:
            raise ConfigError(f"train.milestones: {m!r} needs step {step}, beyond the run's {steps} steps")
        out[str(m)] = step
    return out
