"""``random_noise`` (paper §4.2): every selected state element drawn iid from N(0, sigma^2).

Training only: evaluation always starts from zeros (the evaluation code never sees an intervention).
"""

from __future__ import annotations

import torch

from lengthgen.interventions.base import Intervention, zero_state_for


class RandomNoise(Intervention):
    name = "random_noise"

    def __init__(self, components: str = "ssm", seed: int = 0, sigma: float = 0.1):
        super().__init__(components, seed)
        if not sigma >= 0:
            raise ValueError(f"intervention.sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)

    def initial_state(self, model, rows, step, *, device=None, reset=None):
        zero = zero_state_for(model, len(rows), device)
        gen = self.generator(zero.device, step, rows.start)

        def noise(_layer, _name, t):
            return torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype) * self.sigma

        return self.compose(zero, noise)

    def __repr__(self) -> str:
        return f"RandomNoise(sigma={self.sigma}, components={self.components!r})"
