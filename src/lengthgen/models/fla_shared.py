"""What the GLA and RWKV-6 ports of fla share: the key/value head split of their configs and the
fla-hub checkpoint layout (``config.json`` translation, LM skeleton names, folder loading).

Both fla configs size their heads the same way (key width ``d_model * expand_k``, value width
``d_model * expand_v``, split over ``num_heads``) and both hub layouts name the LM skeleton
``model.embeddings`` / ``model.layers`` / ``model.norm``; the arch modules keep only what differs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import Tensor

from lengthgen.models.base import LanguageModel, ModelConfig


def check_head_split(arch: str, d_model: int, expand: float, num_heads: int, what: str) -> int:
    """``d_model * expand`` as an integer divisible by ``num_heads`` (fla asserts the same)."""
    dim = d_model * expand
    if not math.isclose(dim, round(dim)) or round(dim) % num_heads:
        raise ValueError(
            f"{arch}: d_model * {what} = {d_model} * {expand} = {dim} must be an integer divisible by "
            f"num_heads = {num_heads}; change {what}, d_model or num_heads"
        )
    return round(dim)


class FlaHeads:
    """Mixin for an fla config dataclass with ``num_heads``, ``expand_k``, ``expand_v`` and
    ``intermediate_size`` fields: their checks and the key/value widths."""

    def check_heads(self, arch: str) -> None:
        size = self.intermediate_size
        if not (size is None or (type(size) is int and size > 0)):
            raise ValueError(f"{arch} intermediate_size must be null (fla's rule) or a positive integer, got {size!r}")
        check_head_split(arch, self.d_model, self.expand_k, self.num_heads, "expand_k")
        check_head_split(arch, self.d_model, self.expand_v, self.num_heads, "expand_v")

    @property
    def key_dim(self) -> int:
        return round(self.d_model * self.expand_k)

    @property
    def value_dim(self) -> int:
        return round(self.d_model * self.expand_v)


# ---------------------------------------------------------------------------- fla-hub config.json
def fla_config_values(
    cfg: Mapping[str, Any],
    source: str,
    arch: str,
    label: str,
    defaults: Mapping[str, Any],
    unsupported: Mapping[str, Any],
) -> dict[str, Any]:
    """An fla ``config.json`` dict's values for the keys of ``defaults`` (fla's default where the
    file omits one), after checking its ``model_type`` is ``arch`` and that every option in
    ``unsupported`` has the one value lengthgen's ``label`` model implements."""
    if cfg.get("model_type") != arch:
        raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, not {arch!r}")
    for key, supported in unsupported.items():
        if cfg.get(key, supported) != supported:
            raise ValueError(f"{source}: {key}={cfg[key]!r} is not supported by lengthgen's {label} (only {supported!r})")
    return {**defaults, **{k: cfg[k] for k in defaults if k in cfg}}


def build_fla_config(config_class: type[ModelConfig], c: Mapping[str, Any], source: str, **arch_fields: Any) -> Any:
    """``config_class`` from the fields both fla configs name alike (``c`` as returned by
    :func:`fla_config_values`) plus ``arch_fields``; an invalid value is an error naming ``source``."""
    fields = dict(
        d_model=c["hidden_size"], n_layers=c["num_hidden_layers"], vocab_size=c["vocab_size"],
        pad_vocab_size_multiple=1, tie_embeddings=c["tie_word_embeddings"], norm_eps=c["norm_eps"],
        initializer_range=c["initializer_range"], num_heads=c["num_heads"], expand_k=c["expand_k"],
        expand_v=c["expand_v"], intermediate_size=c["intermediate_size"], **arch_fields,
    )  # fmt: skip
    try:
        return config_class.from_dict(fields)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


# ---------------------------------------------------------------------------- fla-hub weights
def skeleton_key_from_fla(key: str) -> str:
    """fla's LM skeleton names (``model.embeddings``, ``model.layers``, ``model.norm``) -> ours."""
    for theirs, ours in (("model.embeddings.", "backbone.embedding."), ("model.layers.", "backbone.layers."),
                         ("model.norm.", "backbone.norm_f.")):  # fmt: skip
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def load_fla_folder(
    folder: str | Path,
    arch: str,
    config_from_fla: Callable[[Mapping[str, Any], str], ModelConfig],
    from_fla_state_dict: Callable[[Mapping[str, Tensor]], dict[str, Tensor]],
) -> LanguageModel:
    """Read an fla-hub folder, translate its config and parameter names with the arch's two
    functions, and build the model; key errors also say how the names were translated."""
    from lengthgen.models.checkpoint import CONFIG_FILE, model_from_state_dict, read_json, read_weights

    folder = Path(folder)
    config = config_from_fla(read_json(folder / CONFIG_FILE), str(folder / CONFIG_FILE))
    state_dict, source = read_weights(folder)
    try:
        return model_from_state_dict(arch, config, from_fla_state_dict(state_dict), source)
    except ValueError as e:
        raise ValueError(
            f"{e} (keys are shown under lengthgen's names: fla's model.embeddings / model.layers / "
            f"model.norm are backbone.embedding / backbone.layers / backbone.norm_f)"
        ) from None
