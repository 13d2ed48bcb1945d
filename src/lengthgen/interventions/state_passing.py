"""``state_passing`` (paper §4.4): start each sequence from the final state of another sequence.

Sequences are shuffled, so the final state a batch row reached at the previous optimizer step is
the final state of an unrelated sequence: a draw from the distribution of attainable states. Each
row's passed state is zeroed with probability ``p_zero`` (0.1) so the model still sees sequences
without prior context; the first step starts from zeros. With gradient accumulation every
micro-batch slot (a fixed range of batch rows) passes its own state to the same slot at the next
step. Passed states are detached: no gradient flows between steps.
"""

from __future__ import annotations

import torch

from lengthgen.interventions.base import Intervention, rows_in, zero_state_for
from lengthgen.models.state import RecurrentState


class StatePassing(Intervention):
    name = "state_passing"

    def __init__(self, components: str = "ssm", seed: int = 0, p_zero: float = 0.1):
        super().__init__(components, seed)
        if not 0 <= p_zero <= 1:
            raise ValueError(f"intervention.p_zero must lie in [0, 1], got {p_zero}")
        self.p_zero = float(p_zero)
        self.passed: dict[int, RecurrentState] = {}   # first row of a micro-batch slot -> its last final state

    # ------------------------------------------------------------------ hooks
    def keep_mask(self, rows: range, step: int, device, reset) -> torch.Tensor:
        """Rows that keep their passed state: each dropped with probability p_zero."""
        gen = self.generator(device, step, rows.start, salt="p_zero")
        return torch.rand(len(rows), generator=gen, device=device) >= self.p_zero

    def initial_state(self, model, rows, step, *, device=None, reset=None):
        passed = self.passed.get(rows.start)
        if passed is None:
            return None
        zero = zero_state_for(model, len(rows), device)
        if passed.batch_size != len(rows):
            raise ValueError(f"{self.name}: slot at row {rows.start} holds {passed.batch_size} rows, "
                             f"the micro-batch has {len(rows)}")
        passed = passed.to(device=zero.device).mask(self.keep_mask(rows, step, zero.device, reset))
        return self.compose(zero, lambda layer, name, _t: passed.layers[layer][name])

    def observe(self, rows, final_state):
        self.passed[rows.start] = final_state.detach()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self):
        return {"name": self.name,
                "passed": {start: s.to(device="cpu").state_dict() for start, s in self.passed.items()}}

    def load_state_dict(self, sd, rows=None):
        super().load_state_dict(sd, rows)
        self.passed = {int(start): RecurrentState.from_state_dict(sd["passed"][start])
                       for start in rows_in(sd["passed"], rows)}

    @staticmethod
    def merge_state_dicts(sds):
        merged = dict(sds[0])
        merged["passed"] = {k: v for sd in sds for k, v in sd["passed"].items()}
        return merged

    def __repr__(self) -> str:
        return f"StatePassing(p_zero={self.p_zero}, components={self.components!r})"
