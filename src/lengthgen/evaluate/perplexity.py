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

from .streaming import check_chunk_size, check_ids, model_device, stream


@torch.no_grad()
def positionwise_loss(model, input_ids: Tensor, chunk_size: int, state=None) -> Tensor:
    """NLL (nats) of token ``i + 1`` given tokens ``0..i``, shape (batch, length - 1).

    The sequence is streamed through the model ``chunk_size`` tokens at a time with the state
    carried; each chunk's log-softmax is reduced to its target tokens before the next chunk runs, so
    peak memory is that of one chunk whatever the length.  The last logit of a chunk predicts the
    first token of the next one, which is read from ``input_ids`` directly.  The loss is computed in
    float32 (float64 for a float64 model).
    """
    check_ids(input_ids, min_length=2)
    check_chunk_size(chunk_size)
    input_ids = input_ids.to(model_device(model))
    length = input_ids.shape[1]
    pieces = []
    for start, logits, _ in stream(model, input_ids, chunk_size, state):
        targets = input_ids[:, start + 1:start + logits.shape[1] + 1]
        logits = logits[:, :targets.shape[1]]
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()
        pieces.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))
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
    """Running per-position sum and count of loss curves, merged over batches of sequences."""

    def __init__(self, num_positions: int):
        if num_positions < 1:
            raise ValueError(f"num_positions must be >= 1, got {num_positions}")
        self.sum = torch.zeros(num_positions, dtype=torch.float64)
        self.count = 0

    def update(self, loss: Tensor) -> None:
        """Add a (batch, num_positions) loss tensor."""
        if loss.dim() != 2 or loss.shape[1] != self.sum.shape[0]:
            raise ValueError(f"expected losses of shape (batch, {self.sum.shape[0]}), got {tuple(loss.shape)}")
        self.sum += loss.detach().to("cpu", torch.float64).sum(0)
        self.count += loss.shape[0]

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
