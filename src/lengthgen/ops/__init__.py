"""The recurrences, each with an initial state in and a final state out (docs/architecture.md, section 1).

Every op takes ``initial_state`` (None = zeros) and ``backend`` ("auto", "torch" or "kernel") and
returns ``(output, final_state)``; the plain torch references are exact in float64.
"""

from lengthgen.ops._backend import BACKENDS
from lengthgen.ops.activations import squared_relu
from lengthgen.ops.conv import causal_conv1d
from lengthgen.ops.cross_entropy import cross_entropy_sum
from lengthgen.ops.gla import gla_scan
from lengthgen.ops.initial_state import initial_state_contribution
from lengthgen.ops.norm import add_layer_norm, add_rms_norm, layer_norm, rms_norm
from lengthgen.ops.rwkv6 import rwkv6_scan
from lengthgen.ops.selective_scan import selective_scan
from lengthgen.ops.ssd import ssd_scan
from lengthgen.ops.swiglu import swiglu_linear
from lengthgen.ops.token_mix import token_shift_lerp

__all__ = [
    "BACKENDS",
    "add_layer_norm",
    "add_rms_norm",
    "causal_conv1d",
    "cross_entropy_sum",
    "gla_scan",
    "initial_state_contribution",
    "layer_norm",
    "rms_norm",
    "rwkv6_scan",
    "selective_scan",
    "ssd_scan",
    "squared_relu",
    "swiglu_linear",
    "token_shift_lerp",
]
