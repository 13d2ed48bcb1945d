"""The length-generalization verdict (paper Def. 3.2) on a position-wise loss curve.

Def. 3.2 in loss terms: let p* be the lowest loss on positions [0, T_train) and t* its position;
the model length-generalizes on [0, T] if the loss at every position in [t*, T] is <= p*.
A mean curve over a finite validation set is noisy position by position, so the rule is applied to
a smoothed curve:

* ``moving_average`` (default): the loss at t is the mean over the trailing window
  [t - window + 1, t] (over [0, t] while t < window - 1); it only looks back, so the value at a
  position never mixes in positions beyond it.
* ``bucket``: the curve is cut into consecutive buckets of ``window`` positions and every position
  gets its bucket's mean.

``window`` defaults to max(1, T_train // 8).  ``tolerance`` (nats, default 0) is added to p*:
``generalizes`` is ``max(smoothed[t*:]) <= p* + tolerance``.

Also reported: ``loss_far``, the mean (unsmoothed) loss over the last log-spaced bucket
[2^k, L) of the curve, and ``far_gap = loss_far - p*``.  The project's claims use the criterion
"loss far past T_train (bucket start >= far_factor * T_train, default 16) exceeds p* by at least
far_margin (default 0.05 nats)": ``fails_far`` is that criterion and ``far_applicable`` says whether
the curve reaches far enough for it to apply.

**Confidence intervals.** Given the per-sequence losses (``losses``, shape (sequences, positions)),
the verdict is also computed on ``num_bootstrap`` resamples of the sequences (with replacement;
t* and p* are re-selected in every resample, so the selection of the minimum is part of the
interval). ``*_ci`` are the basic bootstrap intervals at ``ci_level`` (see ``_interval``), per log bucket too
(:func:`bootstrap_buckets`). With them ``fails_far`` asks the interval: the model fails when the
lower end of ``far_gap_ci`` is >= far_margin, i.e. the far loss exceeds p* by the margin *beyond*
what resampling the evaluation sequences explains. Without per-sequence losses (or with a single
sequence) the intervals are None and ``fails_far`` is the point rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .perplexity import log_buckets

SMOOTHINGS = ("moving_average", "bucket")


def smooth(curve: Tensor, window: int, kind: str = "moving_average") -> Tensor:
    """The smoothed curve used by the verdict (see the module docstring), float64."""
    if curve.dim() != 1 or curve.numel() == 0:
        raise ValueError(f"smooth() needs a non-empty 1-D curve, got shape {tuple(curve.shape)}")
    if window < 1:
        raise ValueError(f"smoothing window must be >= 1, got {window}")
    curve = curve.to(torch.float64)
    n = curve.numel()
    if kind == "moving_average":
        csum = torch.cat([curve.new_zeros(1), curve.cumsum(0)])
        hi = torch.arange(1, n + 1)
        lo = (hi - window).clamp(min=0)
        return (csum[hi] - csum[lo]) / (hi - lo)
    if kind == "bucket":
        out = torch.empty_like(curve)
        for lo in range(0, n, window):
            out[lo:lo + window] = curve[lo:lo + window].mean()
        return out
    raise ValueError(f"unknown smoothing {kind!r}; choose one of {SMOOTHINGS}")


@dataclass(frozen=True)
class Verdict:
    train_context: int
    num_positions: int
    smoothing: str
    window: int
    tolerance: float
    p_star: float
    t_star: int
    worst_after: float
    worst_position: int
    first_violation: int | None
    generalizes: bool
    loss_far: float
    far_bucket: tuple[int, int]
    far_gap: float
    far_factor: float
    far_margin: float
    far_applicable: bool
    fails_far: bool
    num_sequences: int | None = None
    ci_level: float | None = None
    num_bootstrap: int | None = None
    p_star_ci: tuple[float, float] | None = None
    loss_far_ci: tuple[float, float] | None = None
    far_gap_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("far_bucket", "p_star_ci", "loss_far_ci", "far_gap_ci"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


def _check_curve(curve: Tensor, train_context: int) -> None:
    if curve.dim() != 1:
        raise ValueError(f"the loss curve must be 1-D (one mean loss per position), got shape {tuple(curve.shape)}")
    if not torch.isfinite(curve).all():
        raise ValueError("the loss curve holds NaN/inf values; re-run the evaluation (eval.precision=fp32)")
    if train_context < 1:
        raise ValueError(f"train_context must be >= 1, got {train_context}")
    if curve.numel() <= train_context:
        raise ValueError(f"the curve has {curve.numel()} positions but the training context is {train_context}: "
                         f"evaluate on sequences longer than the training context (eval.length > {train_context})")


def _resample_means(losses: Tensor, num_bootstrap: int, seed: int, block: int = 64):
    """Mean curves of ``num_bootstrap`` resamples (with replacement) of the rows of ``losses``,
    yielded in blocks of (<= block, positions), float64. Deterministic in ``seed``."""
    n = losses.shape[0]
    gen = torch.Generator().manual_seed(int(seed))
    for lo in range(0, num_bootstrap, block):
        b = min(block, num_bootstrap - lo)
        idx = torch.randint(0, n, (b, n), generator=gen)
        counts = torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(b, n, dtype=torch.float64))
        yield counts @ losses / n


def _interval(samples: Tensor, level: float, estimate: float) -> tuple[float, float]:
    """The basic (reverse-percentile) bootstrap interval ``(2 est - q_hi, 2 est - q_lo)``. A minimum
    over noisy positions is biased low, and more so in a resample (whose positions are noisier):
    the percentile interval of p* would sit below p* by that extra bias, the basic one undoes it to
    first order. For means both intervals agree."""
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(samples.to(torch.float64), q).tolist()
    return float(2 * estimate - hi), float(2 * estimate - lo)


def _as_losses(losses) -> Tensor:
    losses = torch.as_tensor(losses).detach().to("cpu", torch.float64)
    if losses.dim() != 2 or losses.shape[0] < 1:
        raise ValueError(f"per-sequence losses must be (sequences, positions), got shape {tuple(losses.shape)}")
    return losses


def bootstrap_buckets(losses, buckets: list[tuple[int, int]], level: float = 0.95, num_bootstrap: int = 1000,
                      seed: int = 0) -> list[tuple[float, float]] | None:
    """Basic bootstrap interval (``_interval``) of each ``[lo, hi)`` bucket's mean loss over resamples
    of the sequences (rows of ``losses``); None for fewer than two sequences."""
    losses = _as_losses(losses)
    if losses.shape[0] < 2:
        return None
    per_seq = torch.stack([losses[:, lo:hi].mean(1) for lo, hi in buckets], 1)  # (sequences, buckets)
    means = torch.cat(list(_resample_means(per_seq, num_bootstrap, seed)))
    est = per_seq.mean(0)
    return [_interval(means[:, j], level, float(est[j])) for j in range(len(buckets))]


def length_generalization(curve: Tensor | None, train_context: int, smoothing: str = "moving_average",
                          window: int | None = None, tolerance: float = 0.0, far_factor: float = 16.0,
                          far_margin: float = 0.05, losses: Tensor | None = None, ci_level: float = 0.95,
                          num_bootstrap: int = 1000, seed: int = 0) -> Verdict:
    """Apply Def. 3.2 to a mean position-wise loss ``curve`` (position i = loss on token i + 1).

    ``losses`` (sequences, positions): the per-sequence losses whose mean is the curve (``curve``
    may then be None); with two or more sequences the verdict gets bootstrap intervals and
    ``fails_far`` uses them (module docstring)."""
    if losses is not None:
        losses = _as_losses(losses)
        if not torch.isfinite(losses).all():
            raise ValueError("the per-sequence losses hold NaN/inf values; re-run the evaluation (eval.precision=fp32)")
        curve = losses.mean(0)
    curve = torch.as_tensor(curve).detach().to("cpu", torch.float64)
    _check_curve(curve, train_context)
    n = curve.numel()
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level}")
    window = max(1, train_context // 8) if window is None else int(window)
    s = smooth(curve, window, smoothing)
    t_star = int(torch.argmin(s[:train_context]))
    p_star = float(s[t_star])
    after = s[t_star:]
    worst = int(torch.argmax(after))
    over = torch.nonzero(after > p_star + tolerance).flatten()
    far_lo, far_hi = log_buckets(n)[-1]
    loss_far = float(curve[far_lo:far_hi].mean())
    far_gap = loss_far - p_star
    cis: dict = {}
    if losses is not None and losses.shape[0] >= 2 and num_bootstrap >= 1:
        # p* needs the smoothed curve on [0, T) only: smooth the whole windows that cover it (a
        # trailing mean and buckets from 0 on a prefix equal the full curve's there)
        prefix = min(n, -(-train_context // window) * window)
        p_stars, fars = [], []
        for block in _resample_means(losses, num_bootstrap, seed):
            sm = torch.stack([smooth(c, window, smoothing) for c in block[:, :prefix]])
            p_stars.append(sm[:, :train_context].min(1).values)  # t* re-selected in every resample
            fars.append(block[:, far_lo:far_hi].mean(1))
        ps, fs = torch.cat(p_stars), torch.cat(fars)
        cis = {"num_sequences": int(losses.shape[0]), "ci_level": float(ci_level), "num_bootstrap": int(num_bootstrap),
               "p_star_ci": _interval(ps, ci_level, p_star), "loss_far_ci": _interval(fs, ci_level, loss_far),
               "far_gap_ci": _interval(fs - ps, ci_level, far_gap)}
    elif losses is not None:
        cis = {"num_sequences": int(losses.shape[0])}
    fails = (cis["far_gap_ci"][0] >= far_margin) if "far_gap_ci" in cis else far_gap >= far_margin
    return Verdict(
        train_context=int(train_context), num_positions=n, smoothing=smoothing, window=window,
        tolerance=float(tolerance), p_star=p_star, t_star=t_star, worst_after=float(after[worst]),
        worst_position=t_star + worst, first_violation=(t_star + int(over[0])) if over.numel() else None,
        generalizes=over.numel() == 0, loss_far=loss_far, far_bucket=(far_lo, far_hi),
        far_gap=far_gap, far_factor=float(far_factor), far_margin=float(far_margin),
        far_applicable=far_lo >= far_factor * train_context, fails_far=bool(fails), **cis,
    )
