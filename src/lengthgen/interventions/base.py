"""The interface every initial-state intervention implements, and the helpers they share.

The trainer drives an intervention through five calls and knows nothing else about it:

``initial_state(model, rows, step, device=..., reset=None)``
    before each micro-batch: the state the model starts from for the global batch rows ``rows``
    (a ``range``) at optimizer step ``step``; ``None`` means zeros.
``observe(rows, final_state)``
    after each micro-batch's forward: the (detached) final states of those rows.
``end_step(all_reduce=None)``
    after the optimizer step; ``all_reduce(tensor)`` sums a tensor over data-parallel ranks.
``state_dict()`` / ``load_state_dict(sd, rows=None)``
    everything needed to resume exactly; ``merge_state_dicts`` joins the per-rank dicts.

Rows are global row indices of the optimizer step's batch, so a row means the same sequence slot
whatever the number of processes. Randomness (noise, state-passing zeroing) comes from generators
seeded by ``(seed, step, first row)``: the stream position is the step counter, which the
checkpoint holds, so resume is exact and draws do not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor

from lengthgen.models.state import SSM, RecurrentState

COMPONENTS = ("ssm", "all")


class Intervention:
    """Base class: the zero initial state. Subclasses override what they change."""

    name = "zero"
    needs_contiguous = False
    """True when the batch source must be the TBTT-contiguous sampler (``data.ContiguousStreams``)."""

    def __init__(self, components: str = "ssm", seed: int = 0):
        if components not in COMPONENTS:
            raise ValueError(f"intervention.components must be one of {COMPONENTS}, got {components!r}")
        self.components = components
        self.seed = int(seed)

    # ------------------------------------------------------------------ hooks
    def initial_state(self, model, rows: range, step: int, *, device=None,
                      reset: Tensor | None = None) -> RecurrentState | None:
        return None

    def observe(self, rows: range, final_state: RecurrentState) -> None:
        pass

    def end_step(self, all_reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        pass

    @property
    def keeps_final_state(self) -> bool:
        """Whether :meth:`observe` uses the final states (the trainer then hands it copies it may keep)."""
        return type(self).observe is not Intervention.observe

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict:
        return {"name": self.name}

    def load_state_dict(self, sd: Mapping, rows: range | None = None) -> None:
        if sd.get("name") != self.name:
            raise ValueError(f"checkpoint holds intervention {sd.get('name')!r}, this run uses {self.name!r}")

    @staticmethod
    def merge_state_dicts(sds: list[dict]) -> dict:
        """Join the state dicts of all data-parallel ranks (shared parts are equal on every rank)."""
        return sds[0]

    # ------------------------------------------------------------------ helpers
    def selected(self, name: str) -> bool:
        """Whether the intervention sets state component ``name`` (others start at zero)."""
        return self.components == "all" or name == SSM

    def generator(self, device, step: int, row: int, salt: str = "") -> torch.Generator:
        """A generator whose stream is a pure function of (seed, intervention, step, row)."""
        key = f"{self.name}:{salt}:{self.seed}:{step}:{row}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
        return torch.Generator(device=torch.device(device)).manual_seed(seed)

    def compose(self, zero: RecurrentState, fn: Callable[[int, str, Tensor], Tensor]) -> RecurrentState:
        """``zero`` with each selected component replaced by ``fn(layer, name, zero_tensor)``."""
        return RecurrentState(
            zero.arch,
            tuple(
                {n: (fn(i, n, t) if self.selected(n) else t) for n, t in layer.items()}
                for i, layer in enumerate(zero.layers)
            ),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(components={self.components!r})"


def zero_state_for(model, batch_size: int, device=None) -> RecurrentState:
    """The model's zero state on ``device`` (the underlying module of a DDP wrapper is used)."""
    model = getattr(model, "module", model)
    return model.zero_state(batch_size, device=device)


def rows_in(keys: Iterable[int], rows: range | None) -> list[int]:
    return [k for k in keys if rows is None or k in rows]
