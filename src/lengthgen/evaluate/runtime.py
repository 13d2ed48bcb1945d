"""What the evaluation and task stages share: device and precision, loading the model under
evaluation, finding the training context it was trained with, and validation sequences.

Bad input (a missing or corrupted model, a CUDA device without CUDA, a length the data cannot
hold) is a :class:`lengthgen.errors.UserError` naming the path or config key and the fix."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from lengthgen.config import ConfigError, read_yaml
from lengthgen.errors import ModelError

PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}
RUN_CONFIG = "config.yaml"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use eval.device=cpu or auto)")
    return dev


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA for ``precision="bf16"``; a no-op context otherwise."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronized_time(device: torch.device) -> float:
    """A wall-clock reading after the device's queued work has finished (for throughput)."""
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def prepare_model(model: torch.nn.Module, device: torch.device, precision: str) -> torch.nn.Module:
    """Move ``model`` to ``device`` in the parameter dtype of ``precision``, in eval mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return model.to(device=device, dtype=PRECISIONS[precision]).eval()


HF_PREFIX = "hf:"


def model_source(source: str) -> str:
    """``--model`` resolved: a run folder means its ``final/`` model, a missing local folder is a
    :class:`~lengthgen.errors.ModelError` (:func:`lengthgen.models.resolve_model_path`); an
    ``hf:`` source and a hub name are returned as they are."""
    if str(source).startswith(HF_PREFIX):
        return str(source)
    from lengthgen.models import resolve_model_path

    return resolve_model_path(source)


def load_eval_model(source: str, device: torch.device, precision: str):
    """The model to evaluate, ready on ``device``: ``lengthgen.models.load_model(source)`` (a model
    folder or a hub name), or ``hf:NAME_OR_PATH`` for a Hugging Face causal LM behind
    :class:`lengthgen.evaluate.hf_adapter.HFCausalLM` (e.g. a Transformer baseline)."""
    if source.startswith(HF_PREFIX):
        from .hf_adapter import HFCausalLM

        name = source[len(HF_PREFIX):]
        try:
            model = HFCausalLM.from_pretrained(name)
        except OSError as e:  # transformers: a missing folder, file or hub repository
            raise ModelError(f"could not load the Hugging Face model {name} ({type(e).__name__}: {e}): pass a "
                             "local folder with config.json and weights, or a hub name reachable from here") from None
        return prepare_model(model, device, precision)
    from lengthgen.models import load_model

    return prepare_model(load_model(source), device, precision)


def find_run_config(model_path: str | Path, max_up: int = 3) -> Path | None:
    """The ``config.yaml`` of the run a local model folder belongs to: the folder itself or one of its
    parents up to ``max_up`` levels (``RUN/final``, ``RUN/checkpoints/step_X``, ``RUN/milestones/N``)."""
    path = Path(model_path)
    if not path.exists():
        return None
    path = path.resolve()
    for folder in [path, *path.parents][:max_up + 1]:
        if (folder / RUN_CONFIG).is_file():
            return folder / RUN_CONFIG
    return None


def read_run_config(model_path: str | Path) -> dict | None:
    found = find_run_config(model_path)
    if found is None:
        return None
    cfg = read_yaml(found, "run config")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{found} does not hold a config mapping: restore the run's config.yaml, or pass "
                          "--set eval.train_context=T and a --config with the run's tokenizer")
    return cfg


def train_context(cfg: Mapping[str, Any], model_path: str | Path) -> tuple[int, str]:
    """(T, where it came from) for eval-ppl: ``eval.train_context`` when set, else the run's
    ``train.context``; checked against ``eval.length`` before anything is evaluated (the verdict
    needs positions beyond T).

    A model without a run folder (a hub checkpoint) needs ``--set eval.train_context=T``. The model
    path is resolved first, so a missing folder is reported as missing.
    """
    model_path = model_source(str(model_path))
    ev = cfg.get("eval", {})
    explicit = ev.get("train_context")
    if explicit is not None:
        T, where = int(explicit), "eval.train_context"
    else:
        run = None if model_path.startswith(HF_PREFIX) else read_run_config(model_path)
        context = ((run or {}).get("train") or {}).get("context")
        if context is None:
            raise ConfigError(f"the training context of {model_path} is unknown (no run config.yaml with "
                              "train.context beside it): pass --set eval.train_context=T")
        T, where = int(context), str(find_run_config(model_path).name)
    length = ev.get("length")
    if length is not None and length <= T:
        raise ConfigError(f"eval.length={length} does not reach past the training context T={T} (from {where}): "
                          f"set eval.length to more than {T} (the verdict compares positions beyond T)")
    return T, where


def check_tokenizer_matches(cfg: Mapping[str, Any], model_path: str | Path) -> None:
    """Error when the model's run was trained with another tokenizer than the evaluation data uses."""
    run = read_run_config(model_path)
    if run is None:
        return
    keys = ("kind", "name", "vocab_size")
    ours = {k: ((cfg.get("data") or {}).get("tokenizer") or {}).get(k) for k in keys}
    theirs = {k: ((run.get("data") or {}).get("tokenizer") or {}).get(k) for k in keys}
    if theirs["kind"] is None:
        return
    if ours["kind"] == "byte" and theirs["kind"] == "byte":
        return
    if ours != theirs:
        raise ConfigError(f"the model at {model_path} was trained with tokenizer {theirs} but this evaluation's "
                          f"data uses {ours}: pass the run's config (--config {find_run_config(model_path)})")


def validation_batches(cfg: Mapping[str, Any], length: int, num_sequences: int, batch_size: int,
                       vocab_size: int, keys: str = "eval.length / eval.num_sequences") -> Iterator[torch.Tensor]:
    """Batches (<= batch_size, length + 1) of validation token ids from ``cfg``'s prepared data.

    The data and the sizes are checked when this is called, not when iteration starts; a length or
    count the validation split cannot hold is a DataError prefixed with ``keys`` (the config keys
    that set them)."""
    from lengthgen.data import DataError, SamplerError, ValidationSequences, open_dataset

    ds = open_dataset(cfg)
    if ds.vocab_size > vocab_size:
        raise ConfigError(f"the data's tokenizer has {ds.vocab_size} tokens but the model only {vocab_size}: "
                          "evaluate with the tokenizer the model was trained with (data.tokenizer)")
    if len(ds.val) == 0:
        raise DataError("the validation split is empty: raise data.val_fraction and run prepare-data again")
    try:
        return iter(ValidationSequences(ds.val, length=length, num_sequences=num_sequences, batch_size=batch_size))
    except SamplerError as e:
        raise SamplerError(f"{keys}: {e}") from None


def validation_windows_id(cfg: Mapping[str, Any], length: int, num_sequences: int) -> str:
    """Names the validation windows :func:`validation_batches` reads: the prepared data's corpus id
    and validation shards (their checksums) with the window length and count. Two evaluations with
    the same id scored the same sequences in the same order, so their per-sequence losses pair."""
    import hashlib
    import json

    from lengthgen.data import open_dataset

    m = open_dataset(cfg, verify="size").manifest  # validation_batches verified the shards' contents already
    key = {"corpus": m["corpus"].get("id"), "val": [s.get("sha256") for s in m["splits"]["val"]["shards"]],
           "length": int(length), "num_sequences": int(num_sequences)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def tokenizer(cfg: Mapping[str, Any]):
    """The tokenizer of ``cfg["data"]["tokenizer"]``: built directly (byte, hf) or, for a trained BPE,
    read from the prepared dataset."""
    from lengthgen.data import build_tokenizer, open_dataset

    if cfg["data"]["tokenizer"]["kind"] == "bpe":
        return open_dataset(cfg).tokenizer
    return build_tokenizer(cfg["data"]["tokenizer"])
