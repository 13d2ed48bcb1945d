"""Initial-state interventions (paper §4): how each training sequence's recurrent state starts.

One small class per strategy, selected by ``intervention.name`` in the config and built with
:func:`build_intervention`; the trainer talks to every one through the same hooks (see
``interventions.base``), so nothing else in training knows which one is active.

========================  ===================================================================
``zero``                  zeros (the baseline recipe)
``random_noise``          iid N(0, sigma^2) per selected element
``fitted_noise``          N(mu, sigma^2) per layer and head, EMA-fitted to final states (eq. 5-6)
``state_passing``         the previous step's final state of the same batch row, zeroed w.p. p_zero
``tbtt``                  the previous chunk's final state of the same stream (contiguous sampler)
========================  ===================================================================

``intervention.components`` picks the state components an intervention sets: ``ssm`` (default,
the recurrent state h of eq. 4) or ``all`` (also the convolution window and token shifts).
Interventions act in training only; evaluation always starts from the zero state.
"""

from __future__ import annotations

from typing import Mapping

from lengthgen.interventions.base import Intervention
from lengthgen.interventions.fitted_noise import FittedNoise
from lengthgen.interventions.random_noise import RandomNoise
from lengthgen.interventions.state_passing import StatePassing
from lengthgen.interventions.tbtt import TBTT
from lengthgen.interventions.zero import Zero

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.name: cls for cls in (Zero, RandomNoise, FittedNoise, StatePassing, TBTT)
}


def build_intervention(cfg: Mapping | None = None, seed: int = 0) -> Intervention:
    """The intervention described by a config's ``intervention`` section (defaults: zero, ssm)."""
    cfg = dict(cfg or {})
    name = cfg.get("name", "zero")
    if name not in INTERVENTIONS:
        raise ValueError(f"unknown intervention.name {name!r}; valid: {', '.join(INTERVENTIONS)}")
    components = cfg.get("components", "ssm")
    if name == "random_noise":
        return RandomNoise(components, seed, sigma=cfg.get("sigma", 0.1))
    if name == "fitted_noise":
        return FittedNoise(components, seed, beta=cfg.get("beta", 0.1))
    if name == "state_passing":
        return StatePassing(components, seed, p_zero=cfg.get("p_zero", 0.1))
    return INTERVENTIONS[name](components, seed)


__all__ = ["Intervention", "INTERVENTIONS", "build_intervention",
           "Zero", "RandomNoise", "FittedNoise", "StatePassing", "TBTT"]
