"""Mamba-2 language model: mamba-ssm's ``Mamba2`` mixer in the ``MambaLMHeadModel`` layout.

Per block: ``[z, xBC, dt] = in_proj(rmsnorm(x))``; ``xBC = silu(conv(xBC))`` split into
``x`` (heads of size ``headdim``), ``B``, ``C`` (``ngroups`` groups of ``d_state``); the SSD scan
with a scalar decay ``A = -exp(A_log)`` per head and ``dt = softplus(dt + dt_bias)``; then
``out_proj(gated_rmsnorm(y, z))`` (``norm_before_gate=False``). State per layer: ``ssm``
(b, nheads, headdim, d_state) and ``conv`` (b, d_inner + 2 * ngroups * d_state, d_conv - 1).
Parameter names match mamba-ssm's, so ``state-spaces/mamba2-*`` checkpoints load by name.

Paper Table 2 lists ``n_heads / d_head`` with ``n_heads * d_head = d_model``; the SSM runs on
``d_inner = expand * d_model`` channels, so a preset has ``expand * n_heads`` heads of ``d_head``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lengthgen.models.base import LanguageModel, ModelConfig, ResidualBlock
from lengthgen.models.layers import GatedRMSNorm, full_precision, init_dt_bias, linear_padded, no_weight_decay
from lengthgen.ops import causal_conv1d, ssd_scan

ARCH = "mamba2"
GATED_NORM_EPS = 1e-5  # fixed in mamba-ssm's Mamba2


@dataclass
class Config(ModelConfig):
    """Mamba-2 hyperparameters (names and defaults of mamba-ssm's ``Mamba2``)."""

    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    A_init_range: tuple = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_init: Any = None  # None = PyTorch's default conv init, else uniform(-conv_init, conv_init)
    conv_bias: bool = True
    bias: bool = False
    norm_before_gate: bool = False
    chunk_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_state", "d_conv", "expand", "headdim", "ngroups", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"mamba2 {name} must be >= 1, got {getattr(self, name)}")
        if self.d_inner % self.headdim:
            raise ValueError(f"mamba2: d_inner = expand * d_model = {self.d_inner} is not a multiple of headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"mamba2: nheads {self.nheads} is not a multiple of ngroups {self.ngroups}")
        lo, hi = self.A_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"mamba2 A_init_range must satisfy 0 < low <= high, got {self.A_init_range}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"mamba2 needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state


_PAPER = dict(vocab_size=50277, pad_vocab_size_multiple=16, d_state=128, headdim=64)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, vocab_size=256, d_state=16, headdim=16, chunk_size=32),
    "mamba2-45m": dict(_PAPER, d_model=512, n_layers=12),
    "mamba2-85m": dict(_PAPER, d_model=768, n_layers=12),
    "mamba2-130m": dict(_PAPER, d_model=768, n_layers=24),
    "mamba2-350m": dict(_PAPER, d_model=1024, n_layers=48),
    "mamba2-780m": dict(_PAPER, d_model=1536, n_layers=48, headdim=96),
    "mamba2-1.3b": dict(_PAPER, d_model=2048, n_layers=48),
}
PRESET_LR: dict[str, float] = {
    "tiny": 1e-3,
    "mamba2-45m": 1e-3,
    "mamba2-85m": 1e-3,
    "mamba2-130m": 6e-4,
    "mamba2-350m": 3e-4,
    "mamba2-780m": 2.5e-4,
    "mamba2-1.3b": 2e-4,
}


class Mamba2Mixer(nn.Module):
    """mamba-ssm's ``Mamba2`` with the state explicit: ``(x, {ssm, conv}) -> (y, {ssm, conv})``."""

    def __init__(self, c: Config):
        super().__init__()
        self.d_inner, self.nheads, self.headdim = c.d_inner, c.nheads, c.headdim
        self.ngroups, self.d_state, self.chunk_size = c.ngroups, c.d_state, c.chunk_size
        self.backend = "auto"
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner + 2 * c.ngroups * c.d_state + c.nheads, bias=c.bias)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.d_conv, groups=c.conv_dim, padding=c.d_conv - 1, bias=c.conv_bias)
        if c.conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -c.conv_init, c.conv_init)
        self.dt_bias = no_weight_decay(nn.Parameter(init_dt_bias(c.nheads, c.dt_min, c.dt_max, c.dt_init_floor)))
        A = torch.empty(c.nheads).uniform_(*c.A_init_range)
        self.A_log = no_weight_decay(nn.Parameter(torch.log(A)))
        self.D = no_weight_decay(nn.Parameter(torch.ones(c.nheads)))
        self.norm = GatedRMSNorm(c.d_inner, c.d_inner // c.ngroups, GATED_NORM_EPS, c.norm_before_gate)
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.bias)

    def forward(self, hidden: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        gn = self.ngroups * self.d_state
        zxbcdt = linear_padded(hidden, self.in_proj)
        # dt and the pad are one piece, so that the backward's concatenation of the pieces' gradients
        # has widths of multiples of 8 at m2-m (384, 640, 8; not 6 and 2): 16-byte rows
        z, xBC, dt = zxbcdt.split([self.d_inner, self.d_inner + 2 * gn, zxbcdt.shape[-1] - 2 * self.d_inner - 2 * gn],
                                  dim=-1)
        dt = dt[..., :self.nheads]
        xBC, conv = causal_conv1d(
            xBC.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, state.get("conv"), "silu", backend=self.backend
        )
        x, B, C = xBC.transpose(1, 2).split([self.d_inner, gn, gn], dim=-1)
        y, ssm = ssd_scan(
            x.unflatten(-1, (self.nheads, self.headdim)),
            dt,
            -torch.exp(full_precision(self.A_log)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
            D=full_precision(self.D),
            dt_bias=full_precision(self.dt_bias),
            dt_softplus=True,
            initial_state=state.get("ssm"),
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return self.out_proj(self.norm(y.flatten(-2), z)), {"ssm": ssm, "conv": conv}

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        conv_dim, width = self.conv1d.weight.shape[0], self.conv1d.weight.shape[-1]
        return {
            "ssm": torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=dtype),
            "conv": torch.zeros(batch_size, conv_dim, width - 1, device=device, dtype=dtype),
        }


class Model(LanguageModel):
    arch = ARCH
    config_class = Config

    def make_block(self, layer_idx: int) -> nn.Module:
        c = self.config
        return ResidualBlock(c.d_model, Mamba2Mixer(c), c.norm_eps)


def from_mamba_ssm_cfg(ssm_cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """mamba-ssm ``ssm_cfg`` (for ``Mamba2``) -> our Config fields. Options our mixer does not
    implement must have their default value, else the error names them."""
    cfg = dict(ssm_cfg)
    fixed = {"rmsnorm": True, "D_has_hdim": False, "d_ssm": None}
    for key, value in fixed.items():
        if key in cfg and cfg.pop(key) != value:
            raise ValueError(f"{source}: ssm_cfg.{key} = {ssm_cfg[key]!r} is not supported (only {value!r})")
    if "dt_limit" in cfg:
        lo, hi = cfg.pop("dt_limit")
        if lo != 0.0 or not math.isinf(hi):
            raise ValueError(f"{source}: ssm_cfg.dt_limit = {ssm_cfg['dt_limit']!r} is not supported (only (0.0, inf))")
    return cfg


def load_official(folder: str | Path) -> Model:
    """A ``state-spaces/mamba2-*`` folder (mamba-ssm layout) as a Mamba-2 model."""
    from lengthgen.models.checkpoint import load_mamba_ssm

    model = load_mamba_ssm(folder)
    if not isinstance(model, Model):
        raise ValueError(f"{folder} holds a {model.arch} model, not {ARCH}")
    return model
