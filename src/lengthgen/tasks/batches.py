"""A resumable source of task training batches for :class:`lengthgen.train.Trainer`.

Batch k is a pure function of (seed, k): each of its rows comes from ``make_row(rng)`` with
``rng = random.Random(f"{seed}:{k}:{row}")``, so a resumed run (``load_state_dict``) sees exactly the
batches it would have seen, on every rank.

Building a batch is Python work (a few milliseconds for 64 copying rows), so by default batch k + 1
is built on a background thread while the trainer runs step k on the device. The thread needs the
GIL, so it makes progress mainly while the trainer waits in calls that release it (a graph replay,
reading the loss back). Batch k is still the same pure function of (seed, k), so prefetching changes
no result.
"""

from __future__ import annotations

import random
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch

from lengthgen.train import Batch

IGNORE_INDEX = -100


class SeededBatches:
    """Yields :class:`lengthgen.train.Batch` (inputs, targets) of ``rows`` rows of ``context`` tokens.

    ``make_row(rng) -> (tokens, mask)`` gives ``context + 1`` tokens and a 0/1 mask over them; a
    target (token i + 1) is scored only where ``mask[i + 1]`` is 1.  ``rank``/``world_size`` select
    this rank's slice of the global batch.  ``prefetch``: build the next batch on a background thread.
    """

    def __init__(self, make_row: Callable[[random.Random], tuple[list[int], list[int]]], rows: int, context: int,
                 seed: int, rank: int = 0, world_size: int = 1, prefetch: bool = True):
        if rows % world_size:
            raise ValueError(f"{rows} rows do not split over {world_size} ranks")
        self.make_row, self.rows, self.context, self.seed = make_row, rows, context, seed
        self.rank, self.world_size = rank, world_size
        self.step = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batches") if prefetch else None
        self._ahead: tuple[int, Future] | None = None  # (k, the future of batch(k))

    def batch(self, k: int) -> Batch:
        per = self.rows // self.world_size
        tokens, masks = [], []
        for r in range(self.rank * per, (self.rank + 1) * per):
            t, m = self.make_row(random.Random(f"{self.seed}:{k}:{r}"))
            if len(t) != self.context + 1 or len(m) != len(t):
                raise ValueError(f"a task row has {len(t)} tokens / {len(m)} mask entries, expected {self.context + 1}")
            tokens.append(t)
            masks.append(m)
        x = torch.tensor(tokens, dtype=torch.long)
        keep = torch.tensor(masks, dtype=torch.bool)[:, 1:]
        targets = torch.where(keep, x[:, 1:], torch.full_like(x[:, 1:], IGNORE_INDEX))
        return Batch(x[:, :-1], targets)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        k, ahead = self.step, self._ahead
        b = ahead[1].result() if ahead is not None and ahead[0] == k else self.batch(k)
        self.step += 1
        self._ahead = None if self._pool is None else (k + 1, self._pool.submit(self.batch, k + 1))
        return b

    def close(self) -> None:
        """Stop the prefetch thread (a batch being built is finished and dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self._ahead = None, None

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
