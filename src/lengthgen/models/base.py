"""The language-model skeleton every architecture shares.

``token embedding -> n_layers residual blocks -> final RMSNorm -> lm_head`` (tied to the embedding
by default), with parameter names in mamba-ssm's ``MambaLMHeadModel`` layout
(``backbone.embedding``, ``backbone.layers.{i}``, ``backbone.norm_f``, ``lm_head``) so official
Mamba checkpoints load by name. An architecture supplies a config dataclass and ``make_block``; a
block maps ``(hidden, layer_state) -> (hidden, new_layer_state)`` and knows its zero state. The
model threads an explicit :class:`RecurrentState` through the blocks: running a sequence whole or
split with the state carried gives the same logits and final state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from lengthgen.models.layers import RMSNorm, init_lm_weights
from lengthgen.models.state import RecurrentState

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class ModelConfig:
    """Fields every architecture has. Subclasses add theirs (all fields need defaults).

    ``vocab_size`` is the tokenizer's; the embedding and logits have ``padded_vocab_size`` rows
    (rounded up to ``pad_vocab_size_multiple``, as mamba-ssm does for GPU-friendly shapes).
    """

    d_model: int = 64
    n_layers: int = 2
    vocab_size: int = 256
    pad_vocab_size_multiple: int = 16
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, tuple) and isinstance(value, list):  # JSON gives lists
                value = tuple(value)
                setattr(self, f.name, value)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{type(self).__name__}.{f.name} must be true or false, got {value!r}")
            if type(default) is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{type(self).__name__}.{f.name} must be an integer, got {value!r}")
            if type(default) is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{type(self).__name__}.{f.name} must be a number, got {value!r}")
        for name in ("d_model", "n_layers", "vocab_size", "pad_vocab_size_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return -(-self.vocab_size // m) * m

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        cls._check_keys(d)
        return cls(**d)

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with ``overrides`` applied; an unknown key is an error listing the valid ones."""
        self._check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    @classmethod
    def _check_keys(cls, d: Mapping[str, Any]) -> None:
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown {cls.__module__.rsplit('.', 1)[-1]} config key(s) {unknown}; "
                f"valid keys: {', '.join(cls.field_names())}"
            )


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``x + mixer(norm(x))``, then ``x + mlp(norm2(x))`` if an MLP is given.

    The mixer maps ``(x, layer_state) -> (y, new_layer_state)`` and has
    ``zero_state(batch_size, device, dtype) -> dict[str, Tensor]``.
    """

    def __init__(self, d_model: int, mixer: nn.Module, eps: float, mlp: nn.Module | None = None):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = mixer
        if mlp is not None:
            self.norm2 = RMSNorm(d_model, eps)
            self.mlp = mlp
        else:
            self.mlp = None

    def forward(self, hidden: Tensor, state: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        y, new_state = self.mixer(self.norm(hidden), state)
        hidden = hidden + y
        if self.mlp is not None:
            hidden = hidden + self.mlp(self.norm2(hidden))
        return hidden, new_state

    def zero_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        return self.mixer.zero_state(batch_size, device, dtype)


class Backbone(nn.Module):
    """Embedding, blocks and final norm (named as in mamba-ssm's ``MixerModel``)."""

    def __init__(self, config: ModelConfig, blocks: list[nn.Module]):
        super().__init__()
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(blocks)
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)


def check_token_ids(input_ids: Tensor, vocab_size: int, token_range: bool = True) -> None:
    """A (batch, length) integer tensor, and (``token_range``) every id in ``[0, vocab_size)``.
    The range check reads the ids on the host: one device synchronisation."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a (batch, length) tensor of token ids, got {shape}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    if token_range and input_ids.numel():
        lo, hi = _id_range(input_ids)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {vocab_size}) for this model, got range [{lo}, {hi}]: "
                "does the tokenizer match the model's vocab_size?"
            )


def _id_range(ids: Tensor) -> tuple[int, int]:
    """(min, max) of a token-id tensor: on the device one pass and one sync; on the host through
    numpy, single-threaded (torch's CPU reductions start its thread pool, which costs milliseconds
    per call when several training jobs share a machine's cores)."""
    if ids.device.type == "cpu":
        a = ids.numpy()
        return int(a.min()), int(a.max())
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()
    return int(lo), int(hi)


def _capturing(t: Tensor) -> bool:
    return isinstance(t, Tensor) and t.is_cuda and torch.cuda.is_current_stream_capturing()


class LanguageModel(nn.Module):
    """Base class of the four language models. Subclasses set ``arch``, ``config_class`` and
    implement ``make_block(layer_idx)``; they may override ``reset_parameters`` (init) and
    ``residuals_per_layer`` (2 when blocks have an MLP, for the residual rescale).
    """

    arch: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    residuals_per_layer: ClassVar[int] = 1

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.backbone = Backbone(config, [self.make_block(i) for i in range(config.n_layers)])
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def make_block(self, layer_idx: int) -> nn.Module:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """mamba-ssm's LM init, then tie the head to the embedding if configured."""
        c = self.config
        init_lm_weights(self, c.n_layers, c.initializer_range, c.rescale_prenorm_residual, self.residuals_per_layer)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """Rows of the embedding = size of the logits' last dim (the padded vocabulary)."""
        return self.config.padded_vocab_size

    @property
    def param_dtype(self) -> torch.dtype:
        return self.backbone.embedding.weight.dtype

    @property
    def state_dtype(self) -> torch.dtype:
        """float32 for low-precision parameters, else the parameter dtype (float64 stays exact)."""
        return torch.float32 if self.param_dtype in LOW_PRECISION else self.param_dtype

    def set_backend(self, backend: str) -> "LanguageModel":
        """Pick the ops backend (``auto``, ``torch``, ``kernel``; see ``lengthgen.ops``) of every mixer."""
        for module in self.modules():
            if module is not self and hasattr(module, "backend"):
                module.backend = backend
        return self

    def num_parameters(self) -> int:
        """Unique parameters: a tied embedding/head counts once, padded vocabulary rows included."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ state
    def zero_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> RecurrentState:
        device = self.backbone.embedding.weight.device if device is None else torch.device(device)
        dtype = self.state_dtype if dtype is None else dtype
        return RecurrentState.from_layers(
            self.arch, [block.zero_state(batch_size, device, dtype) for block in self.backbone.layers]
        )

    def _check_state(self, state: RecurrentState, batch_size: int, device: torch.device) -> RecurrentState:
        if not isinstance(state, RecurrentState):
            raise TypeError(f"state must be a RecurrentState (from model.zero_state or a forward), got {type(state).__name__}")
        state.check_compatible(self.zero_state(batch_size, device="meta"))
        return state.to(device=device, dtype=self.state_dtype)

    # ------------------------------------------------------------------ forward
    def check_input_ids(self, input_ids: Tensor, token_range: bool = True) -> None:
        """:func:`check_token_ids` against this model's ``vocab_size``."""
        check_token_ids(input_ids, self.vocab_size, token_range)

    def forward(self, input_ids: Tensor, state: RecurrentState | None = None) -> tuple[Tensor, RecurrentState]:
        """Logits ``(batch, length, vocab_size)`` and the final state, starting from ``state``
        (zeros when None). A state of another arch, depth or batch size is a ValueError.

        With ``state=None`` the layers get no state tensors at all: the kernels then start from zero
        without reading a zero state or computing its gradient (less memory traffic: the study's m2-m
        at 1,024 rows has 200 MB of float32 SSM state per layer). The results equal those from
        ``zero_state`` bit for bit on the torch references (tests/test_models.py); tests/gpu checks the
        kernels against it.

        While a CUDA graph is being captured (``lengthgen.evaluate.graphs``) the token range is not
        checked, since that needs a synchronisation: the caller checks the whole input first."""
        self.check_input_ids(input_ids, token_range=not _capturing(input_ids))
        batch, length = input_ids.shape
        device = input_ids.device
        if state is not None:
            state = self._check_state(state, batch, device)
        hidden = self.backbone.embedding(input_ids)
        if length == 0:
            final = state if state is not None else self.zero_state(batch, device)
            return self.lm_head(self.backbone.norm_f(hidden)), final
        sdt = self.state_dtype
        new_layers = []
        layer_states = state.layers if state is not None else [{}] * len(self.backbone.layers)
        for block, layer_state in zip(self.backbone.layers, layer_states):
            hidden, new = block(hidden, layer_state)
            new_layers.append({k: v.to(sdt) for k, v in new.items()})
        logits = self.lm_head(self.backbone.norm_f(hidden))
        return logits, RecurrentState.from_layers(self.arch, new_layers)
