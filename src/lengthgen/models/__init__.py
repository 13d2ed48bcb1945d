"""The four recurrent language models, their presets and checkpoint formats.

```python
from lengthgen.models import build_model, ARCHS, load_model, save_model
model = build_model("mamba2", preset="tiny", d_model=64, seed=0)   # kwargs override the preset
logits, state = model(input_ids)                 # (batch, length, model.vocab_size), RecurrentState
logits, state = model(next_ids, state=state)     # continue from a state
model.zero_state(batch_size)                     # RecurrentState of zeros
save_model(model, "folder"); load_model("folder" or "state-spaces/mamba2-130m")
```

Architecture module protocol
----------------------------
Each name in ``ARCHS`` maps (``registry._ARCH_MODULES``) to a module imported on first use that
defines:

``ARCH: str``
    the arch name (``"gla"``).
``Config``
    a dataclass subclassing :class:`lengthgen.models.base.ModelConfig` (which gives ``d_model``,
    ``n_layers``, ``vocab_size``, ``pad_vocab_size_multiple``, ``tie_embeddings``, ``norm_eps``,
    ``initializer_range``, ``rescale_prenorm_residual``, ``to_dict``/``from_dict``/``replace``
    with unknown-key errors, and type checks in ``__post_init__``). Every field has a default;
    validate arch-specific fields in ``__post_init__`` (call ``super().__post_init__()`` first).
``PRESETS: dict[str, dict]``
    preset name -> ``Config`` kwargs; must include ``"tiny"`` (CPU tests) and the paper's
    Table 2 rows, named ``"<arch>-<size>"`` (``"gla-70m"``).
``PRESET_LR: dict[str, float]``
    preset name -> peak learning rate (paper Table 2; ``tiny`` too). Read it via
    ``preset_lr(arch, preset)``.
``Model``
    subclass of :class:`lengthgen.models.base.LanguageModel` with ``arch = ARCH``,
    ``config_class = Config`` and ``make_block(layer_idx) -> nn.Module``. A block's
    ``forward(hidden, layer_state: dict[str, Tensor]) -> (hidden, new_layer_state)`` includes its
    residual connections, and ``zero_state(batch_size, device, dtype) -> dict[str, Tensor]``
    names the components (``ssm``, ``conv``, ``shift_tm``, ``shift_cm``; see ``models/state.py``).
    :class:`lengthgen.models.base.ResidualBlock` (pre-RMSNorm, mixer, optional MLP) covers the
    usual case; then the mixer maps ``(x, layer_state) -> (y, new_layer_state)`` and has
    ``zero_state``. Parameters live under ``backbone.embedding``, ``backbone.layers.{i}``,
    ``backbone.norm_f``, ``lm_head``. Override ``reset_parameters`` for a different init (call
    ``self.tie_weights()`` at its end) and set ``residuals_per_layer = 2`` when blocks have an MLP.
``load_official(folder: str | Path) -> Model``
    read the arch's official hub layout from a local folder (``config.json`` + weights), mapping
    its parameter names onto ours; missing or unexpected keys are errors naming them.
    ``load_model`` calls it for a ``config.json`` whose ``model_type`` is the arch name (fla-hub)
    or, for Mamba, a mamba-ssm config.
"""

from __future__ import annotations

from typing import Any

from lengthgen.models.base import LanguageModel, ModelConfig
from lengthgen.models.checkpoint import load_model, resolve_model_path, save_model
from lengthgen.models.registry import ARCHS, arch_module, build_model, make_config, preset_lr, presets
from lengthgen.models.state import RecurrentState

__all__ = [
    "ARCHS",
    "PRESETS",
    "LanguageModel",
    "ModelConfig",
    "RecurrentState",
    "arch_module",
    "build_model",
    "load_model",
    "make_config",
    "preset_lr",
    "presets",
    "resolve_model_path",
    "save_model",
]


def __getattr__(name: str) -> Any:
    """``PRESETS`` ({arch: {preset: kwargs}}) is computed on access, so importing this package
    does not import every architecture."""
    if name == "PRESETS":
        return {arch: presets(arch) for arch in ARCHS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
