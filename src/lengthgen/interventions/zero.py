"""``zero``: every sequence starts from the zero state (the standard recipe, the paper's baseline)."""

from lengthgen.interventions.base import Intervention


class Zero(Intervention):
    name = "zero"
