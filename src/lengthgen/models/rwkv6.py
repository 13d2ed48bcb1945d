"""RWKV-6 "Finch" (Peng et al., 2024) language model, parameter-for-parameter fla 0.6.0.

The math and the parameter names follow fla's ``RWKV6ForCausalLM`` with its defaults, so an fla
state_dict or an fla-hub checkpoint loads by name (``model.*`` -> ``backbone.*`` as for GLA):

    layers.{i}.pre_norm (layer 0 only, ``norm_first``), attn_norm, ffn_norm    LayerNorm with bias
    layers.{i}.attn.{x_proj.0.mu, x_proj.0.linear, x_proj.2, x_bias,          time mix
                     r_proj.linear, w_proj.linear.lora.{0,2}, k_proj.linear,
                     v_proj.linear, g_proj.linear, bonus, g_norm, o_proj}
    layers.{i}.ffn.{key.mu, key.linear, value, receptance.mu, receptance.linear}   channel mix

Time mix of block input x_t (the attn_norm output), with delta_t = x_{t-1} - x_t (token shift):
    [mu_r, mu_w, mu_k, mu_v, mu_g] = x_bias + x_proj.2(tanh(x_proj.0.linear(x_t + mu * delta_t)))
    r, k, v, g = *_proj(x_t + mu_* delta_t);  w = -exp(lora_w(x_t + mu_w delta_t))  (log decay)
    o_t = r_t (S_{t-1} + diag(u) k_t^T v_t),  S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t  (``ops.rwkv6_scan``)
    out = o_proj(GroupNorm_heads(o) * swish(g))
Channel mix of its input y_t (the ffn_norm output): ``sigmoid(receptance) * value(relu(key)^2)``,
both lerped with y_{t-1} - y_t.  The interpolations ``x_t + mu * delta_t`` run through
``ops.token_shift_lerp``, one call (one Triton kernel on CUDA, delta never stored) for the time
mix's first, one for its five data-dependent ones and one for the channel mix's two; the linears
take its outputs.  The state of a layer is ``ssm`` (B, H, K, V) and the two token shifts, exactly
the tensors fla shifts: ``shift_tm`` = the last attn_norm output, ``shift_cm`` = the last ffn_norm
output (each (B, d_model)); a zero shift is fla's zero padding at the start.

Preset ``rwkv6-70m``: the paper trains an RWKV-6 "70m" (Figure 10) without listing its shape.  We
take the GLA-70m row of Table 2 (6 layers, d_model 512, 4 heads) with fla's RWKV-6 defaults
(expand_k 0.5, expand_v 1, hidden_ratio 3.5, LoRA ranks 32/64) and untied embeddings over the
padded GPT-NeoX vocabulary: 71.6M parameters, and the GLA-70m learning rate 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lengthgen.models.base import LanguageModel, ModelConfig
from lengthgen.models.fla_shared import (
    FlaHeads, build_fla_config, fla_config_values, load_fla_folder, skeleton_key_from_fla,
)  # fmt: skip
from lengthgen.ops import add_layer_norm, layer_norm, rwkv6_scan, squared_relu, token_shift_lerp

ARCH = "rwkv6"


@dataclass
class Config(FlaHeads, ModelConfig):
    """RWKV-6 hyperparameters: fla's ``RWKV6Config`` names and defaults for the RWKV-specific
    fields. ``intermediate_size=None`` is fla's rule: int(d_model * hidden_ratio) rounded up to 32."""

    tie_embeddings: bool = False
    num_heads: int = 4
    expand_k: float = 0.5
    expand_v: float = 1.0
    hidden_ratio: float = 3.5
    intermediate_size: Any = None
    proj_low_rank_dim: int = 32
    gate_low_rank_dim: int = 64
    norm_first: bool = True
    norm_bias: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_heads", "proj_low_rank_dim", "gate_low_rank_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"rwkv6 {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_ratio <= 0:
            raise ValueError(f"rwkv6 hidden_ratio must be > 0, got {self.hidden_ratio}")
        self.check_heads(ARCH)

    @property
    def ffn_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 32 * -(-int(self.d_model * self.hidden_ratio) // 32)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, vocab_size=256, num_heads=2, proj_low_rank_dim=8, gate_low_rank_dim=16),
    "rwkv6-70m": dict(d_model=512, n_layers=6, num_heads=4, vocab_size=50277, pad_vocab_size_multiple=16),
}
PRESET_LR: dict[str, float] = {"tiny": 1e-3, "rwkv6-70m": 1e-3}


class LayerNorm(nn.Module):
    """LayerNorm with optional bias, computed in float32 (float64 stays float64); ``ops.layer_norm``:
    lengthgen's Triton norm on CUDA (as fla fuses its norms), the torch reference elsewhere."""

    def __init__(self, dim: int, eps: float, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, backend=self.backend)

    def add(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        """``(self(residual + x) in x's dtype, residual + x)`` in one op (``ops.add_layer_norm``)."""
        return add_layer_norm(x, residual, self.weight, self.bias, self.eps, backend=self.backend)


class GroupNorm(nn.Module):
    """LayerNorm within each of ``groups`` equal slices of the last dim (one per head), with a
    weight and bias over the whole dim (fla's ``GroupNorm``); ``forward(x, z)`` multiplies the
    result by ``silu(z)`` in the same op (RWKV-6's output gate)."""

    def __init__(self, groups: int, dim: int, eps: float):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.backend = "auto"

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, z=z, group_size=x.shape[-1] // self.groups,
                          backend=self.backend)


class LoRA(nn.Module):
    """``lora.2(tanh(lora.0(x)))`` (fla's ``LoRA``; the second linear has a bias)."""

    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        self.lora = nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Tanh(), nn.Linear(rank, d_out, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.lora(x)


class LerpLinear(nn.Module):
    """The parameters of fla's ``LerpLinear``, ``linear(x + delta * mu)`` with a learned static
    ``mu``: the blocks interpolate with ``ops.token_shift_lerp`` and then call ``linear``."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.mu = nn.Parameter(torch.zeros(d_in))


class DDLerpLinear(nn.Module):
    """The parameters of fla's ``DDLerpLinear``, ``linear(x + delta * mu)`` with a data-dependent
    ``mu``: the time mix interpolates all five at once (``ops.token_shift_lerp``), then ``linear``."""

    def __init__(self, d_in: int, d_out: int, low_rank_dim: int | None = None):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False) if low_rank_dim is None else LoRA(d_in, d_out, low_rank_dim)


class RWKV6TimeMix(nn.Module):
    """fla's ``RWKV6Attention`` (chunk mode) with the state explicit:
    ``(x, {ssm, shift_tm}) -> (y, {ssm, shift_tm})``."""

    def __init__(self, c: Config):
        super().__init__()
        d, r = c.d_model, c.proj_low_rank_dim
        self.num_heads, self.rank = c.num_heads, r
        self.head_k_dim, self.head_v_dim = c.key_dim // c.num_heads, c.value_dim // c.num_heads
        self.backend = "auto"
        self.x_proj = nn.Sequential(LerpLinear(d, 5 * r), nn.Tanh(), nn.Linear(5 * r, d, bias=False))
        self.x_bias = nn.Parameter(torch.zeros(5, d))
        self.r_proj = DDLerpLinear(d, c.key_dim)
        self.w_proj = DDLerpLinear(d, c.key_dim, low_rank_dim=c.gate_low_rank_dim)
        self.k_proj = DDLerpLinear(d, c.key_dim)
        self.v_proj = DDLerpLinear(d, c.value_dim)
        self.g_proj = DDLerpLinear(d, c.value_dim)
        self.bonus = nn.Parameter(torch.zeros(c.num_heads, self.head_k_dim))
        self.g_norm = GroupNorm(c.num_heads, c.value_dim, c.norm_eps)
        self.o_proj = nn.Linear(c.value_dim, d, bias=False)

    def forward(self, x: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        b, t, d = x.shape
        prev = state.get("shift_tm")
        (xx,) = token_shift_lerp(x, prev, self.x_proj[0].mu.unsqueeze(0), backend=self.backend)
        lowrank = self.x_proj[1](self.x_proj[0].linear(xx)).view(b, t, 5, self.rank)
        mix = torch.einsum("btnr,dnr->btnd", lowrank, self.x_proj[2].weight.view(d, 5, self.rank))
        xr, xw, xk, xv, xg = token_shift_lerp(x, prev, mix, self.x_bias, backend=self.backend)
        heads_k = (b, t, self.num_heads, self.head_k_dim)
        r = self.r_proj.linear(xr).view(heads_k)
        w = -torch.exp(self.w_proj.linear(xw)).view(heads_k)
        k = self.k_proj.linear(xk).view(heads_k)
        v = self.v_proj.linear(xv).view(b, t, self.num_heads, self.head_v_dim)
        g = self.g_proj.linear(xg)
        o, ssm = rwkv6_scan(r, k, v, w, self.bonus, scale=1.0, initial_state=state.get("ssm"), backend=self.backend)
        o = self.g_norm(o.reshape(b, t, -1), z=g)  # group norm times silu(g), one op
        return self.o_proj(o), {"ssm": ssm, "shift_tm": x[:, -1]}


class RWKV6ChannelMix(nn.Module):
    """fla's ``RWKV6FeedForward``: ``sigmoid(receptance) * value(relu(key)^2)`` with token shift."""

    def __init__(self, c: Config):
        super().__init__()
        self.key = LerpLinear(c.d_model, c.ffn_size)
        self.value = nn.Linear(c.ffn_size, c.d_model, bias=False)
        self.receptance = LerpLinear(c.d_model, c.d_model)
        self.backend = "auto"

    def forward(self, x: Tensor, previous: Tensor | None) -> tuple[Tensor, Tensor]:
        xk, xr = token_shift_lerp(x, previous, torch.stack([self.key.mu, self.receptance.mu]), backend=self.backend)
        value = self.value(squared_relu(self.key.linear(xk), backend=self.backend))
        return torch.sigmoid(self.receptance.linear(xr)) * value, x[:, -1]


class RWKV6Block(nn.Module):
    """fla's ``RWKV6Block``: (layer 0: ``x = pre_norm(x)``) ``x + attn(attn_norm(x))``, then
    ``x + ffn(ffn_norm(x))``; the first add is fused into ffn_norm (``LayerNorm.add``), whose output
    then has the attention output's dtype, as in fla's block (``fuse_norm``)."""

    def __init__(self, c: Config, layer_idx: int):
        super().__init__()
        self.d_model = c.d_model
        self.pre_norm = LayerNorm(c.d_model, c.norm_eps, c.norm_bias) if c.norm_first and layer_idx == 0 else None
        self.attn_norm = LayerNorm(c.d_model, c.norm_eps, c.norm_bias)
        self.attn = RWKV6TimeMix(c)
        self.ffn_norm = LayerNorm(c.d_model, c.norm_eps, c.norm_bias)
        self.ffn = RWKV6ChannelMix(c)

    def forward(self, hidden: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.pre_norm is not None:
            hidden = self.pre_norm(hidden)
        y, new_state = self.attn(self.attn_norm(hidden), state)
        normed, hidden = self.ffn_norm.add(y, hidden)  # hidden + y and its norm in one op, as fla fuses them
        y, new_state["shift_cm"] = self.ffn(normed, state.get("shift_cm"))
        return hidden + y, new_state

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        a = self.attn
        return {
            "ssm": torch.zeros(batch_size, a.num_heads, a.head_k_dim, a.head_v_dim, device=device, dtype=dtype),
            "shift_tm": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
            "shift_cm": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
        }


class Model(LanguageModel):
    arch = ARCH
    config_class = Config
    residuals_per_layer = 2

    def __init__(self, config: Config):
        super().__init__(config)
        # RWKV-6 ends with a LayerNorm (fla's ``model.norm``), not the skeleton's RMSNorm.
        self.backbone.norm_f = LayerNorm(config.d_model, config.norm_eps, config.norm_bias)

    def make_block(self, layer_idx: int) -> nn.Module:
        return RWKV6Block(self.config, layer_idx)

    def reset_parameters(self) -> None:
        """fla 0.6.0's layer init: time-mix linears xavier-uniform (gain 2^-2.5), LoRA first linear
        zero and second orthogonal (gain 0.1), every other linear and the embedding normal(0,
        initializer_range), biases, ``mu``, ``x_bias`` and ``bonus`` zero, norms unit."""
        c = self.config
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=c.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.backbone.layers:
            for module in block.attn.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight, gain=2**-2.5)
            for module in block.attn.modules():
                if isinstance(module, LoRA):
                    first, second = module.lora[0].weight, module.lora[2].weight
                    nn.init.zeros_(first)
                    if not second.is_meta:  # a QR has no meta kernel; meta builds are filled later
                        nn.init.orthogonal_(second, gain=0.1 * max(1.0, (second.shape[1] / second.shape[0]) ** 0.5))
            for name, p in block.named_parameters():
                if name.endswith((".mu", "x_bias", "bonus")):
                    nn.init.zeros_(p)
        self.tie_weights()


# ---------------------------------------------------------------------------- fla / fla-hub
# fla's RWKV6Config defaults for the keys we read (a config.json may omit any of them).
_FLA_DEFAULTS: dict[str, Any] = dict(
    hidden_size=2048, num_hidden_layers=24, vocab_size=32000, num_heads=4, expand_k=0.5, expand_v=1.0,
    hidden_ratio=3.5, intermediate_size=None, proj_low_rank_dim=32, gate_low_rank_dim=64, norm_first=True,
    norm_bias=True, norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.02,
)  # fmt: skip
_FLA_UNSUPPORTED: dict[str, Any] = dict(hidden_act="sqrelu", attn=None)


def config_from_fla(cfg: Mapping[str, Any], source: str = "config.json") -> Config:
    """fla's ``RWKV6Config`` (a config.json dict) -> our Config; unsupported options are errors."""
    c = fla_config_values(cfg, source, ARCH, "RWKV-6", _FLA_DEFAULTS, _FLA_UNSUPPORTED)
    return build_fla_config(
        Config, c, source, hidden_ratio=float(c["hidden_ratio"] if c["hidden_ratio"] is not None else 3.5),
        proj_low_rank_dim=c["proj_low_rank_dim"], gate_low_rank_dim=c["gate_low_rank_dim"],
        norm_first=c["norm_first"], norm_bias=c["norm_bias"],
    )  # fmt: skip


def from_fla_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fla ``RWKV6ForCausalLM`` parameter names -> ours (only the LM skeleton differs)."""
    return {skeleton_key_from_fla(k): v for k, v in sd.items()}


def load_official(folder: str | Path) -> Model:
    """A folder in the fla-hub layout (``config.json`` with ``model_type: rwkv6`` and
    ``model.safetensors`` or ``pytorch_model.bin``) as our Model."""
    return load_fla_folder(folder, ARCH, config_from_fla, from_fla_state_dict)
