"""The tiny CPU training setup the train tests share: a one-layer Mamba-2 on the byte tokens of a
few stdlib documents (prepared once per session by the ``train_data_root`` fixture in conftest)."""

from lengthgen.config import resolve
from lengthgen.data import prepare


def tiny_config(data_root, intervention: dict | None = None, **train) -> dict:
    """A config (before ``resolve``) over the data in ``data_root``; ``train`` keys override the
    small defaults below, ``intervention`` is the config's intervention section."""
    cfg = {
        "seed": 0,
        "model": {"arch": "mamba2", "preset": "tiny",
                  "overrides": {"d_model": 32, "n_layers": 1, "d_state": 8, "headdim": 8, "chunk_size": 16}},
        "data": {"root": str(data_root), "tokenizer": {"kind": "byte"},
                 "corpus": {"kind": "stdlib", "max_documents": 8}, "val_fraction": 0.2},
        "train": {"context": 32, "batch_tokens": 128, "micro_batch": 2, "lr": 3e-3, "precision": "fp32",
                  "device": "cpu", "progress": False, **train},
    }
    if intervention is not None:
        cfg["intervention"] = intervention
    return cfg


def prepare_tiny_data(root) -> None:
    """Tokenize the corpus of :func:`tiny_config` into shards under ``root``."""
    prepare(resolve(tiny_config(root)))
