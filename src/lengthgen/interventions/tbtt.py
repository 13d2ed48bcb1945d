"""``tbtt`` (paper §4.5): truncated backpropagation through time over consecutive chunks.

The batch source is the contiguous sampler (``data.ContiguousStreams``): batch row i at step s+1
holds the chunk of text that follows row i's chunk at step s. The final state of each row is the
initial state of the same row at the next step, detached (the gradient stops between chunks).
Rows whose stream wrapped or restarted (the batch's ``reset`` flags) start from zeros, as does
the first step. There is no random zeroing: that is the difference from state passing, together
with the unshuffled data.
"""

from __future__ import annotations

import torch

from lengthgen.interventions.state_passing import StatePassing


class TBTT(StatePassing):
    name = "tbtt"
    needs_contiguous = True

    def __init__(self, components: str = "ssm", seed: int = 0):
        super().__init__(components, seed, p_zero=0.0)

    def keep_mask(self, rows, step, device, reset):
        if reset is None:
            return torch.ones(len(rows), dtype=torch.bool, device=device)
        reset = torch.as_tensor(reset, device=device)
        if reset.dtype != torch.bool or reset.shape != (len(rows),):
            raise ValueError(f"tbtt: reset flags must be a bool tensor of shape ({len(rows)},), "
                             f"got {reset.dtype} {tuple(reset.shape)}")
        return ~reset

    def __repr__(self) -> str:
        return f"TBTT(components={self.components!r})"
