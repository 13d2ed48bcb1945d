"""Gated Linear Attention (Yang et al., 2024) language model, parameter-for-parameter fla 0.6.0.

The math and the parameter names follow fla's ``GLAForCausalLM`` with its defaults
(``fuse_norm=True``, ``use_short_conv=False``, ``use_output_gate=True``, ``hidden_act="swish"``),
so an fla state_dict or an fla-hub checkpoint loads by name:

    model.embeddings, model.layers.{i}.attn_norm,
    model.layers.{i}.attn.{q_proj,k_proj,v_proj,g_proj,gk_proj.0,gk_proj.1,o_proj,g_norm_swish_gate},
    model.layers.{i}.mlp_norm, model.layers.{i}.mlp.{gate_proj,up_proj,down_proj}, model.norm, lm_head

(fla names the per-head output norm ``g_norm_swish_gate`` when it fuses the swish gate, its
default, and ``g_norm`` otherwise; ``load_official`` accepts both.)

One layer, per head h (key dim K = d_model * expand_k / H, value dim V = d_model * expand_v / H):
    gk_t = logsigmoid(gk_proj(x_t)) / gate_logit_normalizer          (log decay, <= 0)
    S_t  = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,   o_t = K^-1/2 q_t S_t  (``ops.gla_scan``)
    out  = o_proj(RMSNorm_head(o_t) * swish(g_proj(x_t)))
followed by a SwiGLU MLP whose width is fla's rule: ``int(d * hidden_ratio * 2/3)`` rounded up to
a multiple of 256.  The recurrent state of a layer is only ``ssm`` (B, H, K, V): without the short
convolution (fla's default, and the paper's GLA) nothing else carries over from token to token.

Presets: the GLA rows of the paper's Table 2.  Its "d_head" column (128 / 182 / 256) is
d_model / n_heads, i.e. the value head dim with fla's defaults expand_k = 0.5, expand_v = 1
(182 is a typo for 768 / 4 = 192).  With those defaults, fla's MLP rule and untied input/output
embeddings (fla's default) over the GPT-NeoX vocabulary (50277 tokens, padded to 50288 rows like
the Mamba presets) the counts are 72.0M, 119.8M and 360.4M, matching the names; tied embeddings
would give 46M / 81M / 309M, so the paper's GLA models are untied.  Peak learning rates are
Table 2's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lengthgen.models.base import LanguageModel, ModelConfig
from lengthgen.models.fla_shared import (
    FlaHeads, build_fla_config, fla_config_values, load_fla_folder, skeleton_key_from_fla,
)  # fmt: skip
from lengthgen.models.layers import RMSNorm
from lengthgen.ops import gla_scan, rms_norm, swiglu_linear

ARCH = "gla"


@dataclass
class Config(FlaHeads, ModelConfig):
    """GLA hyperparameters: fla's ``GLAConfig`` names and defaults for the GLA-specific fields.

    ``gate_logit_normalizer`` and ``gate_low_rank_dim`` are fixed at fla's layer defaults in fla's
    config; they are fields here so a study can vary them.  ``intermediate_size=None`` uses fla's
    rule (see the module docstring).
    """

    tie_embeddings: bool = False
    norm_eps: float = 1e-6
    rescale_prenorm_residual: bool = False  # fla's GLA init does not rescale the residual outputs
    num_heads: int = 4
    expand_k: float = 0.5
    expand_v: float = 1.0
    hidden_ratio: int = 4
    intermediate_size: Any = None
    gate_logit_normalizer: float = 16.0
    gate_low_rank_dim: int = 16
    clamp_min: Any = None
    elementwise_affine: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("num_heads", "hidden_ratio", "gate_low_rank_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"gla {name} must be >= 1, got {getattr(self, name)}")
        if not (self.clamp_min is None or (isinstance(self.clamp_min, (int, float)) and not isinstance(self.clamp_min, bool))):
            raise ValueError(f"gla clamp_min must be null or a number, got {self.clamp_min!r}")
        if self.gate_logit_normalizer <= 0:
            raise ValueError(f"gla gate_logit_normalizer must be > 0, got {self.gate_logit_normalizer}")
        self.check_heads(ARCH)

    @property
    def mlp_size(self) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 256 * -(-int(self.d_model * self.hidden_ratio * 2 / 3) // 256)


# GPT-NeoX tokenizer (50277 tokens), padded like the Mamba presets.
_NEOX = dict(vocab_size=50277, pad_vocab_size_multiple=16)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, n_layers=2, vocab_size=256, num_heads=2),
    "gla-70m": dict(d_model=512, n_layers=6, num_heads=4, **_NEOX),
    "gla-120m": dict(d_model=768, n_layers=6, num_heads=4, **_NEOX),
    "gla-360m": dict(d_model=1024, n_layers=20, num_heads=4, **_NEOX),
}
PRESET_LR: dict[str, float] = {"tiny": 1e-3, "gla-70m": 1e-3, "gla-120m": 6e-4, "gla-360m": 3e-4}


class GatedRMSNorm(nn.Module):
    """Per-head RMSNorm times a swish gate, ``rmsnorm(x) * weight * g * sigmoid(g)``: fla's
    ``FusedRMSNormGated`` (norm first, then gate; Mamba-2's gated norm gates first)."""

    def __init__(self, hidden_size: int, eps: float, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None
        self.backend = "auto"

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        w = self.weight if self.weight is not None else x.new_ones(x.shape[-1], dtype=torch.float32)
        return rms_norm(x, w, self.eps, z=g, norm_before_gate=True, backend=self.backend)


class GatedLinearAttention(nn.Module):
    """fla's ``GatedLinearAttention`` (chunk mode, no short conv, swish output gate) with the
    state explicit: ``(x, {ssm}) -> (y, {ssm})``."""

    def __init__(self, c: Config):
        super().__init__()
        self.num_heads = c.num_heads
        self.head_k_dim, self.head_v_dim = c.key_dim // c.num_heads, c.value_dim // c.num_heads
        self.gate_logit_normalizer = c.gate_logit_normalizer
        self.clamp_min = c.clamp_min
        self.backend = "auto"
        self.q_proj = nn.Linear(c.d_model, c.key_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.key_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.value_dim, bias=False)
        self.g_proj = nn.Linear(c.d_model, c.value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(c.d_model, c.gate_low_rank_dim, bias=False),
            nn.Linear(c.gate_low_rank_dim, c.key_dim, bias=True),
        )
        self.o_proj = nn.Linear(c.value_dim, c.d_model, bias=False)
        self.g_norm_swish_gate = GatedRMSNorm(self.head_v_dim, c.norm_eps, c.elementwise_affine)

    def forward(self, x: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        b, t, _ = x.shape
        heads_k = (b, t, self.num_heads, self.head_k_dim)
        heads_v = (b, t, self.num_heads, self.head_v_dim)
        q, k = self.q_proj(x).view(heads_k), self.k_proj(x).view(heads_k)
        v = self.v_proj(x).view(heads_v)
        gk = F.logsigmoid(self.gk_proj(x)).view(heads_k) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        o, ssm = gla_scan(q, k, v, gk, initial_state=state.get("ssm"), backend=self.backend)
        o = self.g_norm_swish_gate(o, self.g_proj(x).view(heads_v))
        return self.o_proj(o.reshape(b, t, -1)), {"ssm": ssm}

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        shape = (batch_size, self.num_heads, self.head_k_dim, self.head_v_dim)
        return {"ssm": torch.zeros(shape, device=device, dtype=dtype)}


class GatedMLP(nn.Module):
    """SwiGLU MLP (fla's ``GatedMLP``): ``down_proj(silu(gate_proj(x)) * up_proj(x))``."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)
        self.backend = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return swiglu_linear(self.gate_proj(x), self.up_proj(x), self.down_proj.weight, self.down_proj.bias,
                             backend=self.backend)


class GLABlock(nn.Module):
    """fla's ``GLABlock``: ``x + attn(attn_norm(x))``, then ``x + mlp(mlp_norm(x))``."""

    def __init__(self, c: Config):
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = GatedLinearAttention(c)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = GatedMLP(c.d_model, c.mlp_size)

    def forward(self, hidden: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        y, new_state = self.attn(self.attn_norm(hidden), state)
        normed, hidden = self.mlp_norm.add(y, hidden)  # hidden + y and its norm in one op, as fla fuses them
        return hidden + self.mlp(normed), new_state

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        return self.attn.zero_state(batch_size, device, dtype)


class Model(LanguageModel):
    arch = ARCH
    config_class = Config
    residuals_per_layer = 2

    def make_block(self, layer_idx: int) -> nn.Module:
        return GLABlock(self.config)

    def reset_parameters(self) -> None:
        """fla's init: normal(0, initializer_range) linear weights and embedding, zero biases, unit
        norms; with ``rescale_prenorm_residual`` (fla's "rescale" strategy, off by default for GLA)
        ``o_proj``/``down_proj`` are redrawn kaiming-uniform and scaled by 1/sqrt(2 n_layers)."""
        c = self.config
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=c.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if c.rescale_prenorm_residual:
            for block in self.backbone.layers:
                for weight in (block.attn.o_proj.weight, block.mlp.down_proj.weight):
                    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
                    with torch.no_grad():
                        weight /= math.sqrt(self.residuals_per_layer * c.n_layers)
        self.tie_weights()


# ---------------------------------------------------------------------------- fla / fla-hub
# fla's GLAConfig defaults for the keys we read (a config.json may omit any of them).
_FLA_DEFAULTS: dict[str, Any] = dict(
    hidden_size=2048, num_hidden_layers=24, vocab_size=32000, num_heads=4, expand_k=0.5, expand_v=1.0,
    hidden_ratio=4, intermediate_size=None, norm_eps=1e-6, tie_word_embeddings=False, clamp_min=None,
    elementwise_affine=True, initializer_range=0.02, fuse_norm=True,
)  # fmt: skip
# Options this implementation does not have, with the value it implements (fla's default).
_FLA_UNSUPPORTED: dict[str, Any] = dict(
    use_short_conv=False, feature_map=None, use_output_gate=True, hidden_act="swish", use_gk=True,
    use_gv=False, attn=None, attnres_block_size=None,
)  # fmt: skip


def config_from_fla(cfg: Mapping[str, Any], source: str = "config.json") -> Config:
    """fla's ``GLAConfig`` (a config.json dict) -> our Config; unsupported options are errors."""
    c = fla_config_values(cfg, source, ARCH, "GLA", _FLA_DEFAULTS, _FLA_UNSUPPORTED)
    kv = cfg.get("num_kv_heads")
    if kv is not None and kv != c["num_heads"]:
        raise ValueError(f"{source}: grouped key/value heads (num_kv_heads={kv}) are not supported")
    return build_fla_config(
        Config, c, source, hidden_ratio=c["hidden_ratio"] if c["hidden_ratio"] is not None else 4,
        clamp_min=c["clamp_min"], elementwise_affine=c["elementwise_affine"],
    )  # fmt: skip


def from_fla_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fla ``GLAForCausalLM`` parameter names -> ours (only the LM skeleton is renamed; fla's
    unfused ``attn.g_norm`` becomes ``attn.g_norm_swish_gate``). Other keys pass through, so a
    stray key is reported as unexpected."""
    out = {}
    for key, value in sd.items():
        key = skeleton_key_from_fla(key).replace(".attn.g_norm.", ".attn.g_norm_swish_gate.")
        out[key] = value
    return out


def load_official(folder: str | Path) -> Model:
    """A folder in the fla-hub layout (``config.json`` with ``model_type: gla`` and
    ``model.safetensors`` or ``pytorch_model.bin``) as our Model."""
    return load_fla_folder(folder, ARCH, config_from_fla, from_fla_state_dict)

