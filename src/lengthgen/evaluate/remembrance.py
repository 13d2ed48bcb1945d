"""Effective Remembrance (paper Def. 3.3): how much the tokens before t still move the prediction.

EffRem_T(t) = d(q(.|x_{0:T}), q(.|x_{t:T})), with T the input length and q the next-token
distribution after the last token.  Distances (all in [0, 1], all 0 for equal distributions):

* ``tv``: total variation, 0.5 * sum |p - q| (the paper's default);
* ``js``: Jensen-Shannon distance, the square root of the JS divergence in bits (base 2);
* ``cosine``: 1 - cosine similarity of the two probability vectors (appendix G calls it the
  cosine similarity; we use 1 - similarity so that, like the others, 0 means "no remembrance").

Cut points t range over [0, T - 1]: t = T would leave an empty context, for which a model without a
beginning-of-sequence token has no prediction.

Batched suffixes: the suffixes x_{t:T} of one group of cut points run as one batch over the
positions [min cut, T), streamed in chunks; a row's state is reset to zero (``state.mask``) exactly
at its cut point, which is the same as starting that suffix from scratch (the zero state is the
state of an empty context).  Cost: group_size * batch rows times (T - smallest cut of the group)
tokens per group, with the logits of one chunk of those rows in memory at a time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .streaming import check_chunk_size, check_ids, model_device


def _tv(p: Tensor, q: Tensor) -> Tensor:
    return 0.5 * (p - q).abs().sum(-1)


def _js(p: Tensor, q: Tensor) -> Tensor:
    m = 0.5 * (p + q)
    kl_pm = torch.special.xlogy(p, p).sum(-1) - torch.special.xlogy(p, m).sum(-1)
    kl_qm = torch.special.xlogy(q, q).sum(-1) - torch.special.xlogy(q, m).sum(-1)
    div_bits = 0.5 * (kl_pm + kl_qm) / torch.log(torch.tensor(2.0, dtype=p.dtype))
    return div_bits.clamp(0.0, 1.0).sqrt()


def _cosine(p: Tensor, q: Tensor) -> Tensor:
    sim = (p * q).sum(-1) / (p.norm(dim=-1) * q.norm(dim=-1))
    return (1.0 - sim).clamp(0.0, 1.0)


DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"tv": _tv, "js": _js, "cosine": _cosine}


def distance(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The distance function ``d(p, q)`` over the last dim of probability tensors."""
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[name]


def check_cut_points(cut_points: Sequence[int], length: int) -> list[int]:
    cuts = [int(t) for t in cut_points]
    if not cuts:
        raise ValueError("cut_points is empty: give at least one t in [0, T - 1]")
    bad = [t for t in cuts if not 0 <= t < length]
    if bad:
        raise ValueError(f"cut points {bad} out of range: for sequences of T={length} tokens they must lie in "
                         f"[0, {length - 1}] (t = T would leave an empty context)")
    return cuts


def _last_probs(logits: Tensor) -> Tensor:
    return torch.softmax(logits[:, -1].to(torch.float64), dim=-1)


@torch.no_grad()
def suffix_probs(model, input_ids: Tensor, cut_points: Sequence[int], chunk_size: int = 1024,
                 group_size: int = 16) -> Tensor:
    """q(.|x_{t:T}) for every cut point t: float64 tensor (len(cut_points), batch, vocab)."""
    check_ids(input_ids)
    check_chunk_size(chunk_size)
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    length = input_ids.shape[1]
    cuts = check_cut_points(cut_points, length)
    input_ids = input_ids.to(model_device(model))
    batch = input_ids.shape[0]
    unique = sorted(set(cuts))
    probs: dict[int, Tensor] = {}
    for g in range(0, len(unique), group_size):
        group = unique[g:g + group_size]
        start = group[0]
        rows = input_ids[:, start:].repeat(len(group), 1)              # row j * batch + i: cut group[j]
        row_cut = torch.tensor(group, device=input_ids.device).repeat_interleave(batch)
        edges = sorted(set(range(start, length, chunk_size)) | set(group)) + [length]
        state, logits = None, None
        for lo, hi in zip(edges[:-1], edges[1:]):
            if state is not None and lo in group:
                state = state.mask(row_cut != lo)
            logits, state = model(rows[:, lo - start:hi - start], state=state)
        last = _last_probs(logits)
        for j, t in enumerate(group):
            probs[t] = last[j * batch:(j + 1) * batch]
    return torch.stack([probs[t] for t in cuts])


@torch.no_grad()
def effective_remembrance(model, input_ids: Tensor, cut_points: Sequence[int], distance: str = "tv",
                          chunk_size: int = 1024, group_size: int = 16, reduction: str = "mean") -> Tensor:
    """EffRem_T(t) for each cut point, T = input_ids.shape[1].

    Returns (len(cut_points),) averaged over the batch (``reduction="mean"``) or
    (batch, len(cut_points)) (``reduction="none"``), float64.
    """
    dist = DISTANCES.get(distance)
    if dist is None:
        raise ValueError(f"unknown distance {distance!r}; choose one of {sorted(DISTANCES)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    q = suffix_probs(model, input_ids, [0, *cut_points], chunk_size, group_size)
    d = dist(q[:1], q[1:]).transpose(0, 1)                              # (batch, cuts)
    return d.mean(0) if reduction == "mean" else d


def log_cut_points(length: int, num: int) -> list[int]:
    """About ``num`` cut points from 0 to length - 1, log-spaced in the distance T - t to the end
    (dense near T where EffRem changes fastest), always including 0."""
    if length < 2 or num < 2:
        raise ValueError(f"log_cut_points needs length >= 2 and num >= 2, got length={length}, num={num}")
    dists = torch.logspace(0, torch.log10(torch.tensor(float(length))), num, dtype=torch.float64)
    cuts = {length - int(round(float(x))) for x in dists} | {0}
    return sorted(t for t in cuts if 0 <= t < length)
