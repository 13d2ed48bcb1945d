"""Batches of token windows for training and evaluation, deterministic and exactly resumable.

Every sampler reads a 1-D token array (a ``numpy`` array, a ``np.memmap`` or a
:class:`~lengthgen.data.shards.TokenArray`) and yields ``LongTensor (rows, T + 1)``: inputs are
``batch[:, :-1]`` and targets ``batch[:, 1:]``. Window ``k`` of a context ``T`` is
``tokens[k*T : k*T + T + 1]``, so window ``k``'s last token is window ``k+1``'s first.

Training samplers are DDP-aware: ``batch_size`` is the *global* number of rows per step and rank
``r`` of ``world_size`` gets rows ``[r*b, (r+1)*b)`` with ``b = batch_size // world_size``, so the
ranks together read exactly the batch a single process would. ``state_dict()`` after ``k``
batches, loaded into a fresh sampler, makes it yield batch ``k+1`` onwards, identical.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
import torch


class SamplerError(DataError):
    """Bad sampler arguments or too little data; the message names the fix."""


def _num_windows(tokens, context: int) -> int:
    if context < 1:
        raise SamplerError(f"context must be >= 1, got {context}")
    return max(0, (len(tokens) - 1) // context)


def _training_windows(tokens, context: int, batch_size: int, batch: str) -> int:
    """The number of windows of ``context`` in ``tokens``; fewer than ``batch_size`` (described to
    the user as ``batch``) is an error that says what to change."""
    n = _num_windows(tokens, context)
    if n < batch_size:
        raise SamplerError(
            f"{len(tokens)} tokens hold {n} windows of context {context}, fewer than {batch}: prepare "
            "more data (data.corpus.max_tokens / max_documents) or lower train.context / the batch size")
    return n


def _rows_per_rank(batch_size: int, rank: int, world_size: int) -> int:
    if world_size < 1 or not 0 <= rank < world_size:
        raise SamplerError(f"rank {rank} is not in [0, world_size={world_size})")
    if batch_size < 1 or batch_size % world_size:
        raise SamplerError(f"global batch_size {batch_size} must be a positive multiple of "
                           f"world_size {world_size} (each rank reads batch_size // world_size rows)")
    return batch_size // world_size


def _stack(tokens, starts, length: int) -> torch.Tensor:
    rows = [np.asarray(tokens[s:s + length], dtype=np.int64) for s in starts]
    return torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, length, dtype=torch.long)


def _check_state(kind: str, expected: dict, state: dict) -> None:
    if state.get("kind") != kind:
        raise SamplerError(f"sampler state is for {state.get('kind')!r}, not {kind!r}")
    changed = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: saved {a} != now {b}" for k, (a, b) in changed.items())
        raise SamplerError(f"cannot resume {kind}: the data or batch settings changed ({detail}); "
                           "resume with the same data and train settings, or start a new run")


class ShuffledWindows:
    """Shuffled non-overlapping windows of ``context + 1`` tokens, reshuffled every epoch.

    Epoch ``e`` visits the windows in the order ``default_rng([seed, e]).permutation(n)`` and
    takes ``n // batch_size`` full global batches (the remainder is dropped that epoch, but not
    forever: it differs every epoch). The iterator is endless; ``epoch`` tells where it is.
    """

    kind = "shuffled_windows"

    def __init__(self, tokens, context: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.tokens, self.context, self.batch_size, self.seed = tokens, context, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.rows = _rows_per_rank(batch_size, rank, world_size)
        self.num_windows = _training_windows(tokens, context, batch_size, f"the global batch of {batch_size}")
        self.batches_per_epoch = self.num_windows // batch_size
        self.epoch, self.index = 0, 0
        self._order, self._order_epoch = None, None

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order, self._order_epoch = rng.permutation(self.num_windows), self.epoch
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        first = self.index * self.batch_size + self.rank * self.rows
        windows = self._epoch_order()[first:first + self.rows]
        self.index += 1
        return _stack(self.tokens, windows * self.context, self.context + 1)

    def _fingerprint(self) -> dict:
        return {"seed": self.seed, "context": self.context, "batch_size": self.batch_size,
                "num_tokens": len(self.tokens)}

    def state_dict(self) -> dict:
        return {"kind": self.kind, **self._fingerprint(), "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        _check_state(self.kind, self._fingerprint(), state)
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class ContiguousStreams:
    """``batch_size`` parallel streams through the token array for TBTT (paper section 4.5).

    Stream ``i`` starts at window ``k_i = i * n // batch_size`` (evenly spaced) and at step ``s``
    reads window ``(k_i + s) mod n``, so each row continues exactly where the same row stopped at
    the previous step: the last target of step ``s`` is the first input of step ``s + 1``. After
    window ``n - 1`` a stream wraps to window 0, a discontinuity: ``reset_rows`` (bool, this rank's
    rows) marks, for the batch just returned, rows that do not continue the previous batch's row
    (all rows at step 0, and rows that wrapped), so the trainer can zero their carried state.
    """

    kind = "contiguous_streams"

    def __init__(self, tokens, context: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.tokens, self.context, self.batch_size = tokens, context, batch_size
        self.rank, self.world_size = rank, world_size
        self.rows = _rows_per_rank(batch_size, rank, world_size)
        self.num_windows = _training_windows(tokens, context, batch_size, f"the {batch_size} parallel streams")
        streams = np.arange(rank * self.rows, (rank + 1) * self.rows)
        self.stream_starts = streams * self.num_windows // batch_size
        self.step = 0
        self.reset_rows = torch.ones(self.rows, dtype=torch.bool)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        windows = (self.stream_starts + self.step) % self.num_windows
        reset = np.ones(self.rows, dtype=bool) if self.step == 0 else windows == 0
        self.reset_rows = torch.from_numpy(reset)
        self.step += 1
        return _stack(self.tokens, windows * self.context, self.context + 1)

    def _fingerprint(self) -> dict:
        return {"context": self.context, "batch_size": self.batch_size, "num_tokens": len(self.tokens)}

    def state_dict(self) -> dict:
        return {"kind": self.kind, **self._fingerprint(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        _check_state(self.kind, self._fingerprint(), state)
        self.step = int(state["step"])
        self.reset_rows = torch.zeros(self.rows, dtype=torch.bool)


class ValidationSequences:
    """Fixed-length evaluation sequences of ``length + 1`` tokens from the validation split.

    Deterministic and re-iterable: ``num_sequences`` non-overlapping windows of ``length`` tokens,
    spread evenly over the split (all of them when ``num_sequences`` is None), yielded in batches of
    ``batch_size`` rows (the last batch may be smaller).
    """

    def __init__(self, tokens, length: int, num_sequences: int | None = None, batch_size: int = 1):
        if batch_size < 1:
            raise SamplerError(f"batch_size must be >= 1, got {batch_size}")
        available = _num_windows(tokens, length)
        if available < 1 or (num_sequences is not None and num_sequences > available):
            wanted = num_sequences or 1
            raise SamplerError(
                f"the validation split has {len(tokens)} tokens, too few for {wanted} sequence(s) of "
                f"{length} (+1) tokens: lower the length or number of sequences, or prepare more "
                "validation data (raise data.val_fraction or the corpus size)")
        count = available if num_sequences is None else num_sequences
        if count < 1:
            raise SamplerError(f"num_sequences must be >= 1, got {num_sequences}")
        self.tokens, self.length, self.batch_size = tokens, length, batch_size
        self.starts = (np.arange(count) * available // count) * length

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self):
        for i in range(0, len(self.starts), self.batch_size):
            yield _stack(self.tokens, self.starts[i:i + self.batch_size], self.length + 1)
