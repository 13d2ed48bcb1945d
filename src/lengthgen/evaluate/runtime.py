"""What the evaluation and task stages share: device and precision, loading the model under
evaluation, finding the training context it was trained with, and validation sequences."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
import yaml

PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}
RUN_CONFIG = "config.yaml"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use eval.device=cpu or auto)")
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


def load_eval_model(source: str, device: torch.device, precision: str):
    """The model to evaluate, ready on ``device``: ``lengthgen.models.load_model(source)`` (a model
    folder or a hub name), or ``hf:NAME_OR_PATH`` for a Hugging Face causal LM behind
    :class:`lengthgen.evaluate.hf_adapter.HFCausalLM` (e.g. a Transformer baseline)."""
    if source.startswith(HF_PREFIX):
        from .hf_adapter import HFCausalLM

        return prepare_model(HFCausalLM.from_pretrained(source[len(HF_PREFIX):]), device, precision)
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
    cfg = yaml.safe_load(found.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"{found} does not hold a config mapping")
    return cfg


def train_context(cfg: Mapping[str, Any], model_path: str | Path) -> tuple[int, str]:
    """(T, where it came from): ``eval.train_context`` when set, else the run's ``train.context``.

    A model without a run folder (a hub checkpoint) needs ``--set eval.train_context=T``.
    """
    explicit = cfg.get("eval", {}).get("train_context")
    if explicit is not None:
        return int(explicit), "eval.train_context"
    run = read_run_config(model_path)
    context = ((run or {}).get("train") or {}).get("context")
    if context is None:
        raise ValueError(f"the training context of {model_path} is unknown (no run config.yaml with train.context "
                         "beside it): pass --set eval.train_context=T")
    return int(context), str(find_run_config(model_path).name)


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
        raise ValueError(f"the model at {model_path} was trained with tokenizer {theirs} but this evaluation's "
                         f"data uses {ours}: pass the run's config (--config {find_run_config(model_path)})")


def validation_batches(cfg: Mapping[str, Any], length: int, num_sequences: int, batch_size: int,
                       vocab_size: int) -> Iterator[torch.Tensor]:
    """Batches (<= batch_size, length + 1) of validation token ids from ``cfg``'s prepared data."""
    from lengthgen.data import ValidationSequences, open_dataset

    ds = open_dataset(cfg)
    if ds.vocab_size > vocab_size:
        raise ValueError(f"the data's tokenizer has {ds.vocab_size} tokens but the model only {vocab_size}: "
                         "evaluate with the tokenizer the model was trained with (data.tokenizer)")
    if len(ds.val) == 0:
        raise ValueError("the validation split is empty: raise data.val_fraction and run prepare-data again")
    yield from ValidationSequences(ds.val, length=length, num_sequences=num_sequences, batch_size=batch_size)


def tokenizer(cfg: Mapping[str, Any]):
    """The tokenizer of ``cfg["data"]["tokenizer"]``: built directly (byte, hf) or, for a trained BPE,
    read from the prepared dataset."""
    from lengthgen.data import build_tokenizer, open_dataset

    if cfg["data"]["tokenizer"]["kind"] == "bpe":
        return open_dataset(cfg).tokenizer
    return build_tokenizer(cfg["data"]["tokenizer"])
