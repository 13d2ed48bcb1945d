"""SwiGLU followed by a linear map, ``(silu(gate) * up) @ weight^T + bias``, as one op.

The reference is plain torch. On CUDA the op is fla's ``swiglu_linear``
(``fla.modules.activations``), the kernel of fla's ``GatedMLP``: one Triton kernel for
``silu(gate) * up``, which it recomputes in the backward pass instead of keeping it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import use_kernel


def swiglu_linear_reference(gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.linear(F.silu(gate) * up, weight, bias)


def swiglu_linear(gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None = None,
                  backend: str = "auto") -> Tensor:
    """``gate``, ``up``: (..., hidden); ``weight``: (out, hidden); ``bias``: (out,) or None."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu_linear: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
    if weight.dim() != 2 or weight.shape[1] != gate.shape[-1]:
        raise ValueError(f"swiglu_linear: weight must be (out, {gate.shape[-1]}), got {tuple(weight.shape)}")
    if use_kernel(backend, "fla_swiglu", gate, up, weight, bias):
        from fla.modules.activations import swiglu_linear as fla_swiglu_linear

        return fla_swiglu_linear(gate, up, weight, bias)
    return swiglu_linear_reference(gate, up, weight, bias)
