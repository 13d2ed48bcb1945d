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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["far_bucket"] = list(self.far_bucket)
        return d


def length_generalization(curve: Tensor, train_context: int, smoothing: str = "moving_average",
                          window: int | None = None, tolerance: float = 0.0, far_factor: float = 16.0,
                          far_margin: float = 0.05) -> Verdict:
    """Apply Def. 3.2 to a mean position-wise loss ``curve`` (position i = loss on token i + 1)."""
    curve = torch.as_tensor(curve).detach().to("cpu", torch.float64)
    if curve.dim() != 1:
        raise ValueError(f"the loss curve must be 1-D (one mean loss per position), got shape {tuple(curve.shape)}")
    if not torch.isfinite(curve).all():
        raise ValueError("the loss curve holds NaN/inf values; re-run the evaluation (eval.precision=fp32)")
    n = curve.numel()
    if train_context < 1:
        raise ValueError(f"train_context must be >= 1, got {train_context}")
    if n <= train_context:
        raise ValueError(f"the curve has {n} positions but the training context is {train_context}: evaluate on "
                         f"sequences longer than the training context (eval.length > {train_context + 1})")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    window = max(1, train_context // 8) if window is None else int(window)
    s = smooth(curve, window, smoothing)
    t_star = int(torch.argmin(s[:train_context]))
    p_star = float(s[t_star])
    after = s[t_star:]
    worst = int(torch.argmax(after))
    over = torch.nonzero(after > p_star + tolerance).flatten()
    far_lo, far_hi = log_buckets(n)[-1]
    loss_far = float(curve[far_lo:far_hi].mean())
    return Verdict(
        train_context=int(train_context), num_positions=n, smoothing=smoothing, window=window,
        tolerance=float(tolerance), p_star=p_star, t_star=t_star, worst_after=float(after[worst]),
        worst_position=t_star + worst, first_violation=(t_star + int(over[0])) if over.numel() else None,
        generalizes=over.numel() == 0, loss_far=loss_far, far_bucket=(far_lo, far_hi),
        far_gap=loss_far - p_star, far_factor=float(far_factor), far_margin=float(far_margin),
        far_applicable=far_lo >= far_factor * train_context, fails_far=loss_far - p_star >= far_margin,
    )
