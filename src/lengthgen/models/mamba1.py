"""Mamba-1 language model: mamba-ssm's ``Mamba`` mixer in the ``MambaLMHeadModel`` layout.

Per block: ``x + out_proj(ssm(silu(conv(in_x))) * silu(z))`` with ``[in_x, z] = in_proj(rmsnorm(x))``,
a depthwise causal conv (width ``d_conv``, with bias), the input-dependent ``dt, B, C`` from
``x_proj``, ``dt = softplus(dt_proj(dt))`` and a diagonal ``A = -exp(A_log)`` per channel.
State per layer: ``ssm`` (b, d_inner, d_state) and ``conv`` (b, d_inner, d_conv - 1).
Parameter names match mamba-ssm's, so ``state-spaces/mamba-*`` checkpoints load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lengthgen.models.base import LanguageModel, ModelConfig, ResidualBlock
from lengthgen.models.layers import full_precision, init_dt_bias, no_reinit, no_weight_decay
from lengthgen.ops import causal_conv1d, selective_scan

ARCH = "mamba1"


@dataclass
class Config(ModelConfig):
    """Mamba-1 hyperparameters (names and defaults of mamba-ssm's ``Mamba``)."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Any = "auto"  # "auto" = ceil(d_model / 16), or an int
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"  # "random" (uniform) or "constant" dt_proj.weight
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.dt_rank == "auto" or (isinstance(self.dt_rank, int) and not isinstance(self.dt_rank, bool) and self.dt_rank > 0)):
            raise ValueError(f"mamba1 dt_rank must be 'auto' or a positive integer, got {self.dt_rank!r}")
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"mamba1 dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        for name in ("d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"mamba1 {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"mamba1 needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else self.dt_rank


_PAPER = dict(vocab_size=50277, pad_vocab_size_multiple=16, d_state=16)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, vocab_size=256, d_state=16),
    "mamba1-130m": dict(d_model=768, n_layers=24, **_PAPER),
    "mamba1-350m": dict(d_model=1024, n_layers=48, **_PAPER),
}
PRESET_LR: dict[str, float] = {"tiny": 1e-3, "mamba1-130m": 6e-4, "mamba1-350m": 3e-4}


class Mamba1Mixer(nn.Module):
    """mamba-ssm's ``Mamba`` with the state explicit: ``(x, {ssm, conv}) -> (y, {ssm, conv})``."""

    def __init__(self, c: Config):
        super().__init__()
        d_inner, dt_rank = c.d_inner, c.resolved_dt_rank
        self.d_state, self.dt_rank = c.d_state, dt_rank
        self.backend = "auto"
        self.in_proj = nn.Linear(c.d_model, 2 * d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, c.d_conv, groups=d_inner, padding=c.d_conv - 1, bias=c.conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        std = dt_rank**-0.5 * c.dt_scale
        if c.dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(d_inner, c.dt_min, c.dt_max, c.dt_init_floor))
        no_reinit(self.dt_proj.bias)
        A = torch.arange(1, c.d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # S4D-real
        self.A_log = no_weight_decay(nn.Parameter(torch.log(A)))
        self.D = no_weight_decay(nn.Parameter(torch.ones(d_inner)))
        self.out_proj = nn.Linear(d_inner, c.d_model, bias=c.bias)

    def forward(self, hidden: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, l) each
        x, conv = causal_conv1d(x, self.conv1d.weight[:, 0], self.conv1d.bias, state.get("conv"), "silu", backend=self.backend)
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias added in the scan, in fp32
        y, ssm = selective_scan(
            x,
            delta,
            -torch.exp(full_precision(self.A_log)),
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=full_precision(self.D),
            delta_bias=full_precision(self.dt_proj.bias),
            delta_softplus=True,
            initial_state=state.get("ssm"),
            backend=self.backend,
        )
        y = y * F.silu(z)
        return self.out_proj(y.transpose(1, 2)), {"ssm": ssm, "conv": conv}

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        d_inner, width = self.conv1d.weight.shape[0], self.conv1d.weight.shape[-1]
        return {
            "ssm": torch.zeros(batch_size, d_inner, self.d_state, device=device, dtype=dtype),
            "conv": torch.zeros(batch_size, d_inner, width - 1, device=device, dtype=dtype),
        }


class Model(LanguageModel):
    arch = ARCH
    config_class = Config

    def make_block(self, layer_idx: int) -> nn.Module:
        c = self.config
        return ResidualBlock(c.d_model, Mamba1Mixer(c), c.norm_eps)


def from_mamba_ssm_cfg(ssm_cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """mamba-ssm ``ssm_cfg`` (for ``Mamba``) -> our Config fields; the names are the same."""
    return dict(ssm_cfg)


def load_official(folder: str | Path) -> Model:
    """A ``state-spaces/mamba-*`` folder (mamba-ssm layout) as a Mamba-1 model."""
    from lengthgen.models.checkpoint import load_mamba_ssm

    model = load_mamba_ssm(folder)
    if not isinstance(model, Model):
        raise ValueError(f"{folder} holds a {model.arch} model, not {ARCH}")
    return model
