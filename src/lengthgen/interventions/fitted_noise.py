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
Layers whose state components have one shape are handled together, stacked along a new first dim:
a step costs a fixed number of kernel launches whatever the depth (bench/, ``profile`` section).
"""

from __future__ import annotations

import torch

from lengthgen.interventions.base import Intervention, zero_state_for

Group = tuple[str, tuple[int, ...]]  # (component name, layers whose tensors share one shape)


def layer_groups(state, selected) -> dict[Group, list[torch.Tensor]]:
    """The selected components of ``state``, grouped by name and shape: ``(name, layers) -> tensors``."""
    by_shape: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for layer, name, t in state.tensors():
        if selected(name):
            if t.dim() < 2:
                raise ValueError(f"fitted_noise: state component {name!r} has no head dim (shape {tuple(t.shape)})")
            by_shape.setdefault((name, tuple(t.shape)), []).append((layer, t))
    return {(name, tuple(l for l, _ in items)): [t for _, t in items] for (name, _), items in by_shape.items()}


class FittedNoise(Intervention):
    name = "fitted_noise"

    def __init__(self, components: str = "ssm", seed: int = 0, beta: float = 0.1):
        super().__init__(components, seed)
        if not 0 <= beta <= 1:
            raise ValueError(f"intervention.beta must lie in [0, 1], got {beta}")
        self.beta = float(beta)
        self.mean: dict[tuple[int, str], torch.Tensor] = {}   # float64, shape (dim 1,): rows of the stacked averages
        self.var: dict[tuple[int, str], torch.Tensor] = {}
        self._sums: dict[Group, list] = {}  # this step: [count (float), sum (layers, dim 1), sum of squares]
        self._stacked: dict[Group, tuple[torch.Tensor, torch.Tensor]] = {}  # group -> (mean, std), (layers, dim 1)

    # ------------------------------------------------------------------ hooks
    def initial_state(self, model, rows, step, *, device=None, reset=None):
        if not self.mean:
            return None
        zero = zero_state_for(model, len(rows), device)
        gen = self.generator(zero.device, step, rows.start)
        drawn = {}
        for group, tensors in layer_groups(zero, self.selected).items():
            mu, std = self._mean_std(group, zero.device)
            t = tensors[0]
            shape = (len(tensors), 1, t.shape[1]) + (1,) * (t.dim() - 2)
            noise = torch.randn((len(tensors),) + tuple(t.shape), generator=gen, device=t.device, dtype=t.dtype)
            sample = mu.to(t.dtype).view(shape) + std.to(t.dtype).view(shape) * noise
            drawn.update({(layer, group[0]): x for layer, x in zip(group[1], sample.unbind(0))})
        return self.compose(zero, lambda layer, name, _t: drawn[(layer, name)])

    def observe(self, rows, final_state):
        for group, tensors in layer_groups(final_state, self.selected).items():
            x = torch.stack([t.detach() for t in tensors]).to(torch.float64)  # (layers, batch, heads, ...)
            dims = [1] + list(range(3, x.dim()))
            new = [float(x[0].numel() // x.shape[2]), x.sum(dims), x.square().sum(dims)]  # count stays on the host
            acc = self._sums.get(group)
            self._sums[group] = new if acc is None else [a + b for a, b in zip(acc, new)]

    def end_step(self, all_reduce=None):
        if not self._sums:
            return
        for group, (count, s, sq) in sorted(self._sums.items()):
            if all_reduce is not None:
                count = all_reduce(torch.tensor(count, dtype=torch.float64, device=s.device))
                s, sq = all_reduce(s), all_reduce(sq)
            mean = s / count
            var = (sq / count - mean.square()).clamp(min=0)
            keys = [(layer, group[0]) for layer in group[1]]
            if all(k in self.mean for k in keys):
                mean = (1 - self.beta) * mean + self.beta * torch.stack([self.mean[k] for k in keys]).to(mean.device)
                var = (1 - self.beta) * var + self.beta * torch.stack([self.var[k] for k in keys]).to(var.device)
            self.mean.update(zip(keys, mean.unbind(0)))
            self.var.update(zip(keys, var.unbind(0)))
            self._stacked[group] = (mean, var.sqrt())
        self._sums = {}

    def _mean_std(self, group: Group, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked mean and std of a group (rebuilt from the per-layer averages after a load)."""
        if group not in self._stacked:
            keys = [(layer, group[0]) for layer in group[1]]
            missing = [k for k in keys if k not in self.mean]
            if missing:
                raise ValueError(f"fitted_noise: no fitted statistics for (layer, component) {missing}")
            mean = torch.stack([self.mean[k] for k in keys])
            self._stacked[group] = (mean, torch.stack([self.var[k] for k in keys]).clamp(min=0).sqrt())
        mean, std = self._stacked[group]
        if mean.device != torch.device(device):
            mean, std = mean.to(device), std.to(device)
            self._stacked[group] = (mean, std)
        return mean, std

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self):
        return {"name": self.name, "beta": self.beta,
                "mean": {f"{l}.{n}": v.detach().cpu().clone() for (l, n), v in self.mean.items()},
                "var": {f"{l}.{n}": v.detach().cpu().clone() for (l, n), v in self.var.items()}}

    def load_state_dict(self, sd, rows=None):
        super().load_state_dict(sd, rows)

        def parse(d):
            return {(int(k.split(".", 1)[0]), k.split(".", 1)[1]): v.to(torch.float64).cpu() for k, v in d.items()}

        self.mean, self.var, self._sums, self._stacked = parse(sd["mean"]), parse(sd["var"]), {}, {}

    def __repr__(self) -> str:
        return f"FittedNoise(beta={self.beta}, components={self.components!r})"
