"""Tokenizers behind one small interface: byte-level, any Hugging Face tokenizer, trained BPE.

Every tokenizer has ``encode(text) -> list[int]``, ``encode_batch(texts) -> list[np.ndarray]``
(the fast path used when preparing shards), ``decode(ids) -> str`` (end-of-text tokens are
dropped), ``vocab_size``, ``eos_id`` (written between documents) and ``id``, a short string
naming it in manifests and folder names.

- ``byte``: the UTF-8 bytes (ids 0-255) plus EOS (256); needs nothing, the offline default.
- ``hf``: a ``tokenizer.json`` from the Hugging Face hub (``EleutherAI/gpt-neox-20b`` in the
  paper) or from a local folder; both go through the same loader.
- ``bpe``: a byte-level BPE trained on the corpus's training documents with the ``tokenizers``
  library and saved as ``tokenizer.json`` beside the shards (deterministic for the same inputs).
  Byte-level models may carry too little information per token to show the paper's failure at
  small scale; BPE tokens give the state more to remember.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import DataError

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eos|>")
BPE_EOS = "<|endoftext|>"


class TokenizerError(DataError):
    """A tokenizer that cannot be built or loaded; the message names the fix."""


class ByteTokenizer:
    """UTF-8 bytes as tokens 0-255, EOS = 256 (vocabulary 257)."""

    id = "byte"
    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id}


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (a ``tokenizer.json``) with the interface above."""

    def __init__(self, tokenizer, id: str, kind: str, eos_token: str | None = None, source: str | None = None):
        self.tok, self.id, self.kind, self.source = tokenizer, id, kind, source
        candidates = ([eos_token] if eos_token else []) + list(EOS_CANDIDATES)
        eos = next((t for t in candidates if tokenizer.token_to_id(t) is not None), None)
        if eos is None:
            raise TokenizerError(
                f"tokenizer {source or id} has no end-of-text token (looked for {', '.join(candidates)}); "
                "documents need one between them: add it as a special token to tokenizer.json, or set "
                "eos_token in a tokenizer_config.json beside it")
        self.eos_token, self.eos_id = eos, tokenizer.token_to_id(eos)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Iterable[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64)
                for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "source": self.source, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id, "eos_token": self.eos_token}


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def slug(text: str) -> str:
    """A folder-name-safe version of ``text`` (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "x"


def _offline_help(name: str) -> str:
    return (f"on a machine with network run `huggingface-cli download {name} tokenizer.json "
            f"tokenizer_config.json --local-dir DIR` (or `hf download ...`), copy DIR here and set "
            f"data.tokenizer.name=DIR")


def _resolve_files(name: str) -> tuple[Path, Path | None]:
    """The ``tokenizer.json`` (and optional ``tokenizer_config.json``) for a local path or hub name."""
    local = Path(name).expanduser()
    if local.exists():
        file = local / "tokenizer.json" if local.is_dir() else local
        if not file.is_file():
            raise TokenizerError(f"tokenizer folder {local} has no tokenizer.json; "
                                 "point data.tokenizer.name at a folder holding one (or at the file)")
        config = file.parent / "tokenizer_config.json"
        return file, config if config.is_file() else None
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TokenizerError(f"tokenizer path {name} does not exist; set data.tokenizer.name to a folder "
                             "holding tokenizer.json or to a hub name such as EleutherAI/gpt-neox-20b")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub comes with the hub extra
        raise TokenizerError(f"loading {name} from the hub needs huggingface_hub (pip install "
                             f"'lengthgen[hub]'); or {_offline_help(name)}") from e
    try:
        file = Path(hf_hub_download(name, "tokenizer.json"))
    except Exception as e:  # offline and not cached, unknown repo, no tokenizer.json, ...
        raise TokenizerError(f"cannot get tokenizer.json of {name!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); {_offline_help(name)}") from e
    try:
        config = Path(hf_hub_download(name, "tokenizer_config.json"))
    except (EntryNotFoundError, OSError, ValueError):
        config = None
    return file, config


def _eos_from_config(path: Path | None) -> str | None:
    if path is None:
        return None
    eos = json.loads(path.read_text()).get("eos_token")
    return eos.get("content") if isinstance(eos, dict) else eos


def load_hf_tokenizer(name: str) -> HFTokenizer:
    """A Hugging Face tokenizer by hub name or local folder (the same code path for both).

    Its id is the name's last part plus the first 8 hex digits of the tokenizer.json's sha256, so
    the same tokenizer from the hub or a local copy of it names the same data folder only when the
    content is identical.
    """
    from tokenizers import Tokenizer

    file, config = _resolve_files(name)
    label = file.parent.name if Path(name).expanduser().exists() else name.rstrip("/").split("/")[-1]
    tid = f"{slug(label)}-{sha256_file(file)[:8]}"
    return HFTokenizer(Tokenizer.from_file(str(file)), id=tid, kind="hf",
                       eos_token=_eos_from_config(config), source=name)


def bpe_id(vocab_size: int) -> str:
    return f"bpe{vocab_size}"


def train_bpe(documents: Iterable[str], vocab_size: int, path: str | Path) -> HFTokenizer:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``documents``; save it to ``path``.

    ``<|endoftext|>`` is token 0. The ``tokenizers`` trainer is deterministic for the same
    documents in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ..io import write_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    seen = [0]

    def counted():
        for text in documents:
            seen[0] += 1
            yield text

    tok.train_from_iterator(counted(), trainer)
    if not seen[0]:
        raise TokenizerError("BPE training saw no documents: the corpus (train split) is empty; "
                             "point data.corpus at some text")
    write_text(path, tok.to_str())
    return load_bpe(path, vocab_size)


def load_bpe(path: str | Path, vocab_size: int) -> HFTokenizer:
    """A BPE tokenizer saved by :func:`train_bpe`."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"trained tokenizer {path} is missing; rerun `lengthgen prepare-data`")
    return HFTokenizer(Tokenizer.from_file(str(path)), id=bpe_id(vocab_size), kind="bpe",
                       eos_token=BPE_EOS, source=path.name)


def build_tokenizer(tok_cfg: dict):
    """The tokenizer of a ``data.tokenizer`` config section that needs no corpus (byte, hf)."""
    kind = tok_cfg.get("kind", "byte")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "hf":
        if not tok_cfg.get("name"):
            raise TokenizerError("data.tokenizer.kind=hf needs data.tokenizer.name (a hub name such as "
                                 "EleutherAI/gpt-neox-20b, or a local folder holding tokenizer.json)")
        return load_hf_tokenizer(tok_cfg["name"])
    raise TokenizerError(f"data.tokenizer.kind={kind!r} is trained on a corpus: use prepare() / open_dataset()")
