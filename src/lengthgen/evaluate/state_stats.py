"""Statistics of the recurrent state over positions (paper Sec. 3.5, Figs. 4 and 9).

At positions p = stride - 1, 2 * stride - 1, ... (and the last position), i.e. the state h_p after
reading tokens 0..p, we record per sequence:

* the whole state: standard deviation and L2 norm over every element of the selected components
  of every layer (paper Fig. 4: "taken across all elements of the state in all layers");
* each layer: the same over that layer's selected components;
* each layer and head (``per_head``): the same over ``ssm[:, h]`` (dim 1 of the ``ssm`` component
  is the head; for Mamba-1 it is the channel) (paper Fig. 9).

Standard deviations are population ones (divide by the element count), computed in float64.  The
sequence is streamed in chunks of ``stride`` tokens with the state carried, and the state at each
chunk end is measured, so the cost is one forward pass plus one reduction over the state per
stride.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .streaming import check_chunk_size, check_ids, model_device, stream

SSM = "ssm"


def _select(components: Sequence[str] | str) -> tuple[str, ...] | None:
    """``"all"`` -> every component (None); else the tuple of names."""
    if components == "all" or components == ("all",):
        return None
    comps = (components,) if isinstance(components, str) else tuple(components)
    if not comps:
        raise ValueError("components is empty: use 'ssm', 'all' or a list of component names")
    return comps


def _std_norm(x: Tensor) -> tuple[Tensor, Tensor]:
    """Population std and L2 norm over dim 1 of a (batch, n) float64 tensor."""
    return x.std(1, unbiased=False), x.norm(dim=1)


def measure_state(state, components: Sequence[str] | str = (SSM,), per_head: bool = True) -> dict[str, Tensor]:
    """Per-sample statistics of one RecurrentState.

    Returns ``whole_std``/``whole_norm`` (batch,), ``layer_std``/``layer_norm`` (batch, layers) and,
    when ``per_head``, ``head_std``/``head_norm`` (batch, layers, heads) of the ``ssm`` component.
    """
    wanted = _select(components)
    layers: list[list[Tensor]] = [[] for _ in range(state.num_layers)]
    for i, name, t in state.tensors(wanted):
        layers[i].append(t.detach().reshape(t.shape[0], -1).to(torch.float64))
    if not any(layers):
        raise ValueError(f"the state has no component among {components!r}; it has {state.components}")
    flat = [torch.cat(parts, 1) for parts in layers if parts]
    out = {}
    out["whole_std"], out["whole_norm"] = _std_norm(torch.cat(flat, 1))
    per_layer = [_std_norm(x) for x in flat]
    out["layer_std"] = torch.stack([s for s, _ in per_layer], 1)
    out["layer_norm"] = torch.stack([n for _, n in per_layer], 1)
    if per_head:
        if SSM not in state.components:
            raise ValueError(f"per-head statistics need an {SSM!r} component; the state has {state.components}")
        heads = [layer[SSM].detach().to(torch.float64) for layer in state.layers]
        heads = [h.reshape(h.shape[0], h.shape[1], -1) for h in heads]
        out["head_std"] = torch.stack([h.std(2, unbiased=False) for h in heads], 1)
        out["head_norm"] = torch.stack([h.norm(dim=2) for h in heads], 1)
    return out


@torch.no_grad()
def state_statistics(model, input_ids: Tensor, stride: int, components: Sequence[str] | str = (SSM,),
                     per_head: bool = True, state=None) -> dict[str, Tensor]:
    """State statistics at positions stride - 1, 2 * stride - 1, ..., length - 1.

    Returns ``positions`` (P,) and, for each key of :func:`measure_state`, a tensor with a new
    dim 1 of size P (e.g. ``whole_std`` (batch, P), ``head_std`` (batch, P, layers, heads)).
    """
    check_ids(input_ids)
    check_chunk_size(stride)
    input_ids = input_ids.to(model_device(model))
    positions, rows = [], []
    for start, logits, state in stream(model, input_ids, stride, state):
        positions.append(start + logits.shape[1] - 1)
        rows.append(measure_state(state, components, per_head))
    out = {k: torch.stack([r[k] for r in rows], 1) for k in rows[0]}
    out["positions"] = torch.tensor(positions)
    return out


class StatsMean:
    """Mean over sequences of :func:`state_statistics` outputs, as a long table."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.positions: Tensor | None = None
        self.count = 0

    def update(self, stats: dict[str, Tensor]) -> None:
        if self.positions is not None and not torch.equal(self.positions, stats["positions"]):
            raise ValueError("state statistics of sequences of different lengths or strides cannot be averaged")
        self.positions = stats["positions"]
        for k, v in stats.items():
            if k != "positions":
                self.sums[k] = self.sums.get(k, 0) + v.detach().cpu().sum(0)
        self.count += int(stats["whole_std"].shape[0])

    def frame(self):
        """DataFrame (position, layer, head, std, norm); layer -1 = all layers, head -1 = whole layer."""
        import pandas as pd

        if self.count == 0:
            raise ValueError("no sequences were measured (the validation set is empty?)")
        m = {k: v / self.count for k, v in self.sums.items()}
        pos = self.positions.tolist()
        parts = [pd.DataFrame({"position": pos, "layer": -1, "head": -1,
                               "std": m["whole_std"].numpy(), "norm": m["whole_norm"].numpy()})]
        n_layers = m["layer_std"].shape[1]
        for i in range(n_layers):
            parts.append(pd.DataFrame({"position": pos, "layer": i, "head": -1,
                                       "std": m["layer_std"][:, i].numpy(), "norm": m["layer_norm"][:, i].numpy()}))
            if "head_std" in m:
                for h in range(m["head_std"].shape[2]):
                    parts.append(pd.DataFrame({"position": pos, "layer": i, "head": h,
                                               "std": m["head_std"][:, i, h].numpy(),
                                               "norm": m["head_norm"][:, i, h].numpy()}))
        return pd.concat(parts, ignore_index=True)
