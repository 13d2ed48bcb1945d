"""``fitted_noise`` (paper §4.3, eq. 5-6): Gaussian initial states fitted to the final states seen.

For every layer and head (dim 1 of a state component: the head of ``ssm``, the channel of
``conv``/token shifts) the intervention keeps exponential moving averages of the mean and variance
of the final states, taken over the batch and the head's remaining dims (head dim and state
expansion N), with the paper's update and coefficient beta (0.1):

    mu    <- (1 - beta) * Mean(h_T)     + beta * mu
    sigma^2 <- (1 - beta) * Variance(h_T) + beta * sigma^2

The first observation initialises the averages. Statistics are pooled over all micro-batches and
data-parallel ranks of an optimizer step (sums reduced in float64), then the averages are updated
once per step. Each step's initial states are drawn independently per element from
N(mu, sigma^2) of their layer and head; until the first update they are zero.
Training only: evaluation always starts from zeros.

The averages live in float64 on the device of the states, so a training step makes no
device-to-host copy (and waits for no synchronisation) for them; checkpoints hold CPU copies.
"""

from __future__ import annotations

import torch

from lengthgen.interventions.base import Intervention, zero_state_for


class FittedNoise(Intervention):
    name = "fitted_noise"

    def __init__(self, components: str = "ssm", seed: int = 0, beta: float = 0.1):
        super().__init__(components, seed)
        if not 0 <= beta <= 1:
            raise ValueError(f"intervention.beta must lie in [0, 1], got {beta}")
        self.beta = float(beta)
        self.mean: dict[tuple[int, str], torch.Tensor] = {}   # float64 on the states' device, shape (dim 1,)
        self.var: dict[tuple[int, str], torch.Tensor] = {}
        self._sums: dict[tuple[int, str], list] = {}  # this step: [count (float), sum, sum of squares]

    # ------------------------------------------------------------------ hooks
    def initial_state(self, model, rows, step, *, device=None, reset=None):
        if not self.mean:
            return None
        zero = zero_state_for(model, len(rows), device)
        gen = self.generator(zero.device, step, rows.start)

        def sample(layer, name, t):
            shape = (1, t.shape[1]) + (1,) * (t.dim() - 2)
            mu = self.mean[(layer, name)].to(t.device, t.dtype).view(shape)
            std = self.var[(layer, name)].clamp(min=0).sqrt().to(t.device, t.dtype).view(shape)
            return mu + std * torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype)

        return self.compose(zero, sample)

    def observe(self, rows, final_state):
        for layer, name, t in final_state.tensors():
            if not self.selected(name):
                continue
            if t.dim() < 2:
                raise ValueError(f"fitted_noise: state component {name!r} has no head dim (shape {tuple(t.shape)})")
            x = t.detach().to(torch.float64)
            dims = [0] + list(range(2, x.dim()))
            new = [float(x.numel() // x.shape[1]), x.sum(dims), x.square().sum(dims)]  # count stays on the host
            acc = self._sums.get((layer, name))
            self._sums[(layer, name)] = new if acc is None else [a + b for a, b in zip(acc, new)]

    def end_step(self, all_reduce=None):
        if not self._sums:
            return
        for key, (count, s, sq) in sorted(self._sums.items()):
            if all_reduce is not None:
                count = all_reduce(torch.tensor(count, dtype=torch.float64, device=s.device))
                s, sq = all_reduce(s), all_reduce(sq)
            mean = s / count
            var = (sq / count - mean.square()).clamp(min=0)
            if key in self.mean:
                mean = (1 - self.beta) * mean + self.beta * self.mean[key].to(mean.device)
                var = (1 - self.beta) * var + self.beta * self.var[key].to(var.device)
            self.mean[key], self.var[key] = mean, var
        self._sums = {}

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self):
        return {"name": self.name, "beta": self.beta,
                "mean": {f"{l}.{n}": v.detach().cpu().clone() for (l, n), v in self.mean.items()},
                "var": {f"{l}.{n}": v.detach().cpu().clone() for (l, n), v in self.var.items()}}

    def load_state_dict(self, sd, rows=None):
        super().load_state_dict(sd, rows)

        def parse(d):
            return {(int(k.split(".", 1)[0]), k.split(".", 1)[1]): v.to(torch.float64).cpu() for k, v in d.items()}

        self.mean, self.var, self._sums = parse(sd["mean"]), parse(sd["var"]), {}

    def __repr__(self) -> str:
        return f"FittedNoise(beta={self.beta}, components={self.components!r})"
