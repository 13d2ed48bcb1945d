"""Small building blocks shared by the language models: norms and the upstream-style init.

The norms are ``ops.rms_norm`` (float32 compute, float64 stays float64, the input dtype out), so
bf16 training and float64 tests use the same code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lengthgen.ops.norm import add_rms_norm, compute_dtype, rms_norm


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019): ``x / rms(x) * weight``, no bias (paper Table 2 recipe).

    ``ops.rms_norm``: lengthgen's Triton kernel on CUDA, the torch reference elsewhere."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps, backend=self.backend)

    def add(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        """``(self(residual + x), residual + x)`` in one op (``ops.norm.add_rms_norm``)."""
        return add_rms_norm(x, residual, self.weight, self.eps, backend=self.backend)


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: ``rmsnorm(x * silu(z))`` per group of ``group_size`` channels.

    Matches mamba-ssm's ``layernorm_gated.RMSNorm`` with ``norm_before_gate=False`` (the Mamba-2
    default); ``norm_before_gate=True`` gives ``rmsnorm(x) * silu(z)`` instead.
    """

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, norm_before_gate: bool = False):
        super().__init__()
        if dim % group_size:
            raise ValueError(f"GatedRMSNorm: dim {dim} is not a multiple of group_size {group_size}")
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))
        self.backend = "auto"

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps, z=z, group_size=self.group_size,
                        norm_before_gate=self.norm_before_gate, backend=self.backend)


def inverse_softplus(x: Tensor) -> Tensor:
    """The y with softplus(y) == x (for x > 0), computed stably."""
    return x + torch.log(-torch.expm1(-x))


def init_dt_bias(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """A bias whose softplus is log-uniform in [dt_min, dt_max] (floored), as in Mamba-1/2."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return inverse_softplus(dt.clamp(min=dt_init_floor))


def no_reinit(p: nn.Parameter) -> nn.Parameter:
    """Mark a bias whose special init must survive :func:`init_lm_weights` (e.g. Mamba-1 dt_proj.bias)."""
    p._no_reinit = True
    return p


def no_weight_decay(p: nn.Parameter) -> nn.Parameter:
    """Mark a parameter the optimizer should not decay (A_log, D, dt biases), like upstream."""
    p._no_weight_decay = True
    return p


RESIDUAL_OUT_NAMES = ("out_proj.weight", "fc2.weight")


def init_lm_weights(
    model: nn.Module,
    n_layers: int,
    initializer_range: float = 0.02,
    rescale_prenorm_residual: bool = True,
    n_residuals_per_layer: int = 1,
) -> None:
    """mamba-ssm's LM init (after GPT-2): zero linear biases (unless marked ``_no_reinit``),
    normal(0, initializer_range) embeddings, and the residual output projections
    (``out_proj``/``fc2``) re-drawn kaiming-uniform and scaled by 1/sqrt(n_residuals * n_layers).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            if not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=initializer_range)
        if rescale_prenorm_residual:
            for child_name, child in module.named_children():
                if isinstance(child, nn.Linear) and f"{child_name}.weight" in RESIDUAL_OUT_NAMES:
                    nn.init.kaiming_uniform_(child.weight, a=math.sqrt(5))
                    with torch.no_grad():
                        child.weight /= math.sqrt(n_residuals_per_layer * n_layers)


def full_precision(t: Tensor) -> Tensor:
    """``t`` in float32, or float64 if it already is: for the decay/skip parameters (A_log, D,
    dt biases), which mamba-ssm keeps out of low precision so exp(A_log) never overflows."""
    return t if t.dtype == torch.float64 else t.float()


def linear_padded(x: Tensor, layer: nn.Linear, multiple: int = 8) -> Tensor:
    """``layer(x)`` with its output features padded to a multiple of ``multiple`` by zero rows of the
    weight: (..., out_features + pad), the pad's outputs zero. Rows of 8 bf16 values (16 bytes) let
    cuBLAS take its sm90 kernels; at an odd width such as m2-m's in_proj (1,030 outputs) every
    product of the layer, forward and backward, falls back to 2-element-aligned sm80 ones. The
    caller splits the pad off; the parameter (and a checkpoint's shape) is unchanged."""
    pad = (-layer.out_features) % multiple
    if pad == 0:
        return layer(x)
    bias = None if layer.bias is None else F.pad(layer.bias, (0, pad))
    return F.linear(x, F.pad(layer.weight, (0, 0, 0, pad)), bias)
