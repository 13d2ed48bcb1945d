"""The learning-rate and weight-decay schedules of the paper's recipe (appendix B.1).

Linear warm-up over the first ``warmup_frac`` of the steps to the peak, then cosine decay to
``min_lr`` at the last step. Weight decay follows the same shape, scaled to peak at
``weight_decay`` (the "weight decay scheduling with a peak of 0.01" of B.1). Both are pure
functions of the step, so resuming needs nothing but the step counter.
"""

from __future__ import annotations

import math


def warmup_steps(total_steps: int, warmup_frac: float) -> int:
    """Number of warm-up steps: ``round(warmup_frac * total)``, at least 1 when warmup_frac > 0."""
    if warmup_frac <= 0:
        return 0
    return min(total_steps, max(1, round(warmup_frac * total_steps)))


def lr_at(step: int, total_steps: int, peak: float, min_lr: float, warmup_frac: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based) out of ``total_steps``."""
    warm = warmup_steps(total_steps, warmup_frac)
    if step < warm:
        return peak * (step + 1) / warm
    decay = total_steps - warm
    if decay <= 1:
        return peak
    progress = (step - warm) / (decay - 1)
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def weight_decay_at(lr: float, peak_lr: float, peak_weight_decay: float) -> float:
    """Weight decay with the learning rate's shape, peaking at ``peak_weight_decay``."""
    return peak_weight_decay * lr / peak_lr
