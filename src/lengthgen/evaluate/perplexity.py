"""Position-wise loss (paper Def. 3.1): the NLL at every position of long sequences.

Position ``i`` of a curve is the model's loss on token ``i + 1`` after reading tokens ``0..i``,
so a curve over sequences of ``L`` tokens has ``L - 1`` positions, and position ``i`` lies inside a
training context of ``T`` tokens when ``i < T``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.models.base import LanguageModel

from .graphs import ChunkGraphs
from .streaming import check_chunk_size, check_ids, model_device


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """NLL of ``targets`` (batch, n) under the first n positions of ``logits`` (batch, >= n, vocab),
    in float32 (float64 for float64 logits). The vocabulary is the last, contiguous dimension, so
    the log-softmax reads each row once (over a (batch, vocab, n) view it took ~45 ms per 8k-token
    chunk at a 50k vocabulary on an H200; docs/gpu_ledger.md, fourth session)."""
    logits = logits[:, :targets.shape[1]]
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape)


def loss_graphs(model, enabled: bool = True) -> ChunkGraphs:
    """The streamed-loss step of ``model`` under CUDA graphs (:mod:`lengthgen.evaluate.graphs`):
    ``(ids, targets, *state) -> (nll, *new state)``. Models without an explicit
    :class:`RecurrentState` (the Hugging Face adapter) run eagerly. Pass one object to every
    :func:`positionwise_loss` call of an evaluation so each chunk shape is captured once."""
    if not isinstance(model, LanguageModel):
        return ChunkGraphs(None, enabled=False)
    layout = model.zero_state(1, device="meta")  # arch and component names; any batch size

    def step(ids: Tensor, targets: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = model(ids, state=layout.with_flat(state))
        return (token_nll(logits, targets), *new.flat())

    return ChunkGraphs(step, enabled=enabled)


@torch.no_grad()
def positionwise_loss(model, input_ids: Tensor, chunk_size: int, state=None,
                      graphs: ChunkGraphs | bool = True) -> Tensor:
    """NLL (nats) of token ``i + 1`` given tokens ``0..i``, shape (batch, length - 1).

    The sequence is streamed through the model ``chunk_size`` tokens at a time with the state
    carried; each chunk's log-softmax is reduced to its target tokens before the next chunk runs, so
    peak memory is that of one chunk whatever the length.  The last logit of a chunk predicts the
    first token of the next one, which is read from ``input_ids`` directly.  The loss is computed in
    float32 (float64 for a float64 model).

    ``graphs``: on CUDA, chunks of a shape seen before replay a CUDA graph of the step
    (:func:`loss_graphs`; pass the same object to every call of an evaluation), ``True`` makes one
    for this call, ``False`` runs every chunk eagerly. The results are the same.
    """
    check_ids(input_ids, min_length=2)
    check_chunk_size(chunk_size)
    input_ids = input_ids.to(model_device(model))
    batch, length = input_ids.shape
    if not isinstance(graphs, ChunkGraphs):
        graphs = loss_graphs(model, enabled=bool(graphs))
    graphed = graphs.enabled and graphs.can_capture((input_ids,))
    if graphed:  # replays skip the model's token-range check: check the whole input once
        model.check_input_ids(input_ids)
        state = model.zero_state(batch, input_ids.device) if state is None else state
    pieces = []
    for start in range(0, length - 1, chunk_size):  # a last chunk of one token has no target: skipped
        ids = input_ids[:, start:start + chunk_size]
        targets = input_ids[:, start + 1:start + chunk_size + 1]
        if graphed:
            nll, *flat = graphs(ids, targets, *state.flat())
            state = state.with_flat(flat)
            pieces.append(nll.clone())  # a replay's outputs are overwritten by the next replay
        else:
            logits, state = model(ids, state=state)
            pieces.append(token_nll(logits, targets))
    out = torch.cat(pieces, 1)
    assert out.shape[1] == length - 1
    # one check at the end: a check per chunk would make the host wait for every chunk
    bad = ~torch.isfinite(out).all(0)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise FloatingPointError(f"non-finite loss at position {first} (of {length - 1} scored): the model produced "
                                 "NaN/inf logits (try eval.precision=fp32)")
    return out


class PositionwiseMean:
    """Running per-position sum and count of loss curves, merged over batches of sequences.
    With ``keep_rows`` the per-sequence curves are kept too (float32, on the CPU): the verdict's
    bootstrap intervals resample them (:func:`lengthgen.evaluate.length_generalization`)."""

    def __init__(self, num_positions: int, keep_rows: bool = False):
        if num_positions < 1:
            raise ValueError(f"num_positions must be >= 1, got {num_positions}")
        self.sum = torch.zeros(num_positions, dtype=torch.float64)
        self.count = 0
        self._rows: list[Tensor] | None = [] if keep_rows else None

    def update(self, loss: Tensor) -> None:
        """Add a (batch, num_positions) loss tensor."""
        if loss.dim() != 2 or loss.shape[1] != self.sum.shape[0]:
            raise ValueError(f"expected losses of shape (batch, {self.sum.shape[0]}), got {tuple(loss.shape)}")
        loss = loss.detach().to("cpu")
        self.sum += loss.to(torch.float64).sum(0)
        self.count += loss.shape[0]
        if self._rows is not None:
            self._rows.append(loss.to(torch.float32))

    def rows(self) -> Tensor:
        """The per-sequence curves, (count, num_positions) float32 (needs ``keep_rows``)."""
        if self._rows is None:
            raise ValueError("PositionwiseMean(keep_rows=False) keeps no per-sequence curves")
        if not self._rows:
            raise ValueError("no sequences were evaluated (the validation set is empty?)")
        return torch.cat(self._rows)

    def mean(self) -> Tensor:
        if self.count == 0:
            raise ValueError("no sequences were evaluated (the validation set is empty?)")
        return self.sum / self.count


def log_buckets(num_positions: int) -> list[tuple[int, int]]:
    """Log-spaced position buckets ``[0, 1), [1, 2), [2, 4), ..., [2^k, 2^(k+1))``, the last cut at
    ``num_positions``."""
    if num_positions < 1:
        raise ValueError(f"num_positions must be >= 1, got {num_positions}")
    edges = [0] + [2 ** k for k in range(0, int(math.log2(num_positions)) + 1)]
    edges = [e for e in edges if e < num_positions] + [num_positions]
    return list(zip(edges[:-1], edges[1:]))


def bucket_means(curve: Tensor, buckets: list[tuple[int, int]]) -> list[float]:
    """Mean of ``curve`` over each ``[lo, hi)`` bucket."""
    return [float(curve[lo:hi].mean()) for lo, hi in buckets]


def perplexity(curve: Tensor) -> float:
    """exp of the mean NLL over all positions of a mean loss curve."""
    return float(torch.exp(curve.mean()))
