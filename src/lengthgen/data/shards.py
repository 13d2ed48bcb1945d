"""Token shards on disk: ``prepare(cfg)`` writes them, ``open_dataset(cfg)`` maps them back.

A prepared dataset is a folder ``<data.root>/<corpus id>-<tokenizer id>/`` holding

- ``train_00000.bin``, ``train_00001.bin``, ..., ``val_00000.bin``, ...: raw little-endian token
  ids (``uint16`` when the vocabulary fits, else ``uint32``), at most ``data.shard_tokens`` each.
  Each split is one stream of documents, each followed by the tokenizer's EOS, cut into shards;
- ``tokenizer.json`` for a BPE tokenizer trained on the training documents;
- ``manifest.json``, written atomically last (so a folder without one is unfinished): corpus and
  tokenizer ids, vocabulary size, dtype, per-split document and token counts, and per shard its
  token count, byte size and sha256, plus the data config that produced it.

Documents go to validation by a hash of their content (``val_fraction`` of them, on average), so
the splits never share a document, and identical documents land in the same split.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..io import write_json
from .corpora import build_corpus
from .errors import DataError
from .tokenizers import ByteTokenizer, bpe_id, build_tokenizer, load_bpe, load_hf_tokenizer, sha256_file, train_bpe

FORMAT = "lengthgen.data/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
FULL_VERIFY_MAX_BYTES = 2 << 30
ENCODE_BATCH = 256


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id (``< vocab_size``) fits in 16 bits, else ``uint32``; little-endian."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def is_val_document(text: str, val_fraction: float) -> bool:
    """Deterministic split by content: the first 8 bytes of sha256(text) as a fraction of 2**64."""
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8", errors="replace")).digest()[:8], "big")
    return h < val_fraction * 2.0**64


def data_settings(data_cfg: dict) -> dict:
    """The part of a ``data`` section that decides the shards' content (recorded in the manifest)."""
    corpus = {k: v for k, v in data_cfg["corpus"].items() if k != "streaming"}
    tok = dict(data_cfg["tokenizer"])
    if tok.get("kind") != "bpe":
        tok = {k: v for k, v in tok.items() if k not in ("vocab_size", "train_bytes")}
    return {"corpus": corpus, "tokenizer": tok, "val_fraction": data_cfg["val_fraction"],
            "shard_tokens": data_cfg["shard_tokens"]}


def _tokenizer_id(tok_cfg: dict) -> str:
    return bpe_id(tok_cfg["vocab_size"]) if tok_cfg.get("kind") == "bpe" else build_tokenizer(tok_cfg).id


def dataset_dir(cfg: dict) -> Path:
    """``<data.root>/<corpus id>-<tokenizer id>`` for a resolved config."""
    data = cfg["data"]
    return Path(data["root"]) / f"{build_corpus(data['corpus']).id}-{_tokenizer_id(data['tokenizer'])}"


# ----------------------------------------------------------------------------- reading


class TokenArray:
    """Several 1-D token arrays (the shards of one split) seen as one: ``len`` and ``[a:b]``."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64).tolist()
        self.dtype = parts[0].dtype if parts else np.dtype("<u2")

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[start:stop][::step]
            if stop <= start:
                return np.empty(0, dtype=self.dtype)
            first = bisect.bisect_right(self.offsets, start) - 1
            pieces = []
            while start < stop:
                lo = self.offsets[first]
                take = min(stop, self.offsets[first + 1]) - start
                pieces.append(self.parts[first][start - lo:start - lo + take])
                start, first = start + take, first + 1
            return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        i = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"token index {index} out of range for {len(self)} tokens")
        part = bisect.bisect_right(self.offsets, i) - 1
        return self.parts[part][i - self.offsets[part]]

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"no prepared data in {folder} (no {MANIFEST}): run `lengthgen prepare-data "
                        "--config <your config>` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e.msg}): rerun `lengthgen prepare-data`") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}: rerun "
                        "`lengthgen prepare-data`")
    return manifest


def verify_files(folder: Path, manifest: dict, verify: str = "auto") -> None:
    """Check every shard (and a trained tokenizer.json) against the manifest.

    ``verify``: ``size`` checks byte sizes; ``full`` also sha256; ``auto`` is ``full`` up to
    2 GiB of shards and ``size`` above.
    """
    if verify not in ("auto", "full", "size"):
        raise DataError(f"verify must be auto, full or size, not {verify!r}")
    files = [s for split in SPLITS for s in manifest["splits"][split]["shards"]]
    if manifest.get("tokenizer_file"):
        files.append(manifest["tokenizer_file"])
    total = sum(f["bytes"] for f in files)
    full = verify == "full" or (verify == "auto" and total <= FULL_VERIFY_MAX_BYTES)
    for f in files:
        path = folder / f["file"]
        if not path.is_file():
            raise DataError(f"{path} is missing: rerun `lengthgen prepare-data` to rebuild {folder.name}")
        size = path.stat().st_size
        if size != f["bytes"]:
            raise DataError(f"{path} has {size} bytes, the manifest says {f['bytes']} (truncated or "
                            f"overwritten): rerun `lengthgen prepare-data` to rebuild it")
        if full and sha256_file(path) != f["sha256"]:
            raise DataError(f"{path} does not match its sha256 in the manifest (corrupted): rerun "
                            "`lengthgen prepare-data` to rebuild it")


class TokenDataset:
    """A prepared dataset: ``train`` and ``val`` token arrays (memory-mapped) and its manifest."""

    def __init__(self, folder: str | Path, verify: str = "auto"):
        self.path = Path(folder)
        self.manifest = _read_manifest(self.path)
        verify_files(self.path, self.manifest, verify)
        dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.vocab_size = self.manifest["tokenizer"]["vocab_size"]
        self.eos_id = self.manifest["tokenizer"]["eos_id"]
        arrays = {}
        for split in SPLITS:
            parts = [np.memmap(self.path / s["file"], dtype=dtype, mode="r", shape=(s["tokens"],))
                     for s in self.manifest["splits"][split]["shards"]]
            arrays[split] = TokenArray(parts)
        self.train, self.val = arrays["train"], arrays["val"]

    @property
    def tokenizer(self):
        """The tokenizer that produced the shards (checked against the manifest's id)."""
        info = self.manifest["tokenizer"]
        if info["kind"] == "byte":
            tok = ByteTokenizer()
        elif info["kind"] == "bpe":
            tok = load_bpe(self.path / self.manifest["tokenizer_file"]["file"], info["vocab_size"])
        else:
            tok = load_hf_tokenizer(info["source"])
        if tok.id != info["id"]:
            raise DataError(f"tokenizer {info.get('source') or tok.id} is now {tok.id}, but the shards in "
                            f"{self.path} were made with {info['id']}: rerun `lengthgen prepare-data`")
        return tok

    def __repr__(self) -> str:
        return f"TokenDataset({self.path.name}: {len(self.train)} train / {len(self.val)} val tokens)"


def open_dataset(cfg: dict, verify: str | None = None) -> TokenDataset:
    """The prepared dataset of a resolved config (``verify`` defaults to ``data.verify``)."""
    return TokenDataset(dataset_dir(cfg), verify or cfg["data"].get("verify", "auto"))


# ----------------------------------------------------------------------------- writing


class _ShardWriter:
    """Writes one split as shards of at most ``shard_tokens`` tokens, hashing as it goes."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.file, self.hash, self.count = None, None, 0
        self.documents = 0

    def _open(self) -> None:
        name = f"{self.split}_{len(self.shards):05d}.bin"
        self.file, self.hash, self.count = open(self.folder / name, "wb"), hashlib.sha256(), 0
        self.shards.append({"file": name})

    def _close(self) -> None:
        self.file.close()
        self.shards[-1].update(tokens=self.count, bytes=self.count * self.dtype.itemsize,
                               sha256=self.hash.hexdigest())
        self.file = None

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self.file is None:
                self._open()
            take = min(len(ids), self.shard_tokens - self.count)
            block = ids[:take].tobytes()
            self.file.write(block)
            self.hash.update(block)
            self.count, ids = self.count + take, ids[take:]
            if self.count == self.shard_tokens:
                self._close()

    def finish(self) -> dict:
        if self.file is not None:
            self._close()
        return {"documents": self.documents, "tokens": sum(s["tokens"] for s in self.shards),
                "shards": self.shards}


def _limited(corpus, max_documents: int | None, skipped: list) -> Iterator[str]:
    """Non-empty documents of ``corpus``, at most ``max_documents``; counts empty ones in ``skipped``."""
    n = 0
    for text in corpus:
        if max_documents is not None and n >= max_documents:
            return
        if not text:
            skipped[0] += 1
            continue
        n += 1
        yield text


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _bpe_training_text(corpus, data: dict) -> Iterator[str]:
    budget = data["tokenizer"].get("train_bytes")
    used = 0
    for text in _limited(corpus, data["corpus"].get("max_documents"), [0]):
        if is_val_document(text, data["val_fraction"]):
            continue
        yield text
        used += len(text.encode("utf-8", errors="replace"))
        if budget is not None and used >= budget:
            return


def _up_to_date(folder: Path, settings: dict, corpus_id: str, verify: str) -> bool:
    try:
        manifest = _read_manifest(folder)
        if manifest.get("config") != settings or manifest["corpus"]["id"] != corpus_id:
            return False
        verify_files(folder, manifest, verify)
    except (DataError, KeyError, TypeError):
        return False
    return True


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on ``folder`` so concurrent preparations (e.g. DDP ranks) take turns."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:  # "a": taking the lock leaves the folder untouched
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(cfg: dict, log: Callable[[str], None] | None = None) -> Path:
    """Tokenize the config's corpus into shards; return the dataset folder.

    Does nothing (logs "up to date") when the folder's manifest matches the data settings and
    its files verify; otherwise rebuilds the folder from scratch.
    """
    log = log or (lambda msg: None)
    data = cfg["data"]
    settings = data_settings(data)
    corpus = build_corpus(data["corpus"])
    folder = Path(data["root"]) / f"{corpus.id}-{_tokenizer_id(data['tokenizer'])}"
    verify = data.get("verify", "auto")
    with _locked(folder):
        if _up_to_date(folder, settings, corpus.id, verify):
            log(f"up to date: {folder / MANIFEST}")
            return folder
        (folder / MANIFEST).unlink(missing_ok=True)
        log(f"preparing {folder} ...")
        tokenizer_file = None
        if data["tokenizer"]["kind"] == "bpe":
            tok_path = folder / "tokenizer.json"
            tokenizer = train_bpe(_bpe_training_text(corpus, data), data["tokenizer"]["vocab_size"], tok_path)
            tokenizer_file = {"file": tok_path.name, "bytes": tok_path.stat().st_size,
                              "sha256": sha256_file(tok_path)}
        else:
            tokenizer = build_tokenizer(data["tokenizer"])
        splits, skipped = _write_splits(folder, corpus, tokenizer, data)
        manifest = {
            "format": FORMAT,
            "corpus": corpus.describe(),
            "tokenizer": tokenizer.describe(),
            "tokenizer_file": tokenizer_file,
            "vocab_size": tokenizer.vocab_size,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "splits": splits,
            "skipped_empty_documents": skipped,
            "config": settings,
        }
        keep = {s["file"] for split in splits.values() for s in split["shards"]}
        for stale in folder.glob("*.bin"):
            if stale.name not in keep:
                stale.unlink()
        write_json(folder / MANIFEST, manifest)
        log(f"wrote {splits['train']['tokens']} train / {splits['val']['tokens']} val tokens "
            f"({splits['train']['documents']} / {splits['val']['documents']} documents)")
    return folder


def _write_splits(folder: Path, corpus, tokenizer, data: dict) -> tuple[dict, int]:
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {s: _ShardWriter(folder, s, dtype, data["shard_tokens"]) for s in SPLITS}
    max_tokens = data["corpus"].get("max_tokens")
    total, skipped = 0, [0]
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    docs = _limited(corpus, data["corpus"].get("max_documents"), skipped)
    for batch in _batched(docs, ENCODE_BATCH):
        for text, ids in zip(batch, tokenizer.encode_batch(batch)):
            ids = np.concatenate([ids.astype(np.int64, copy=False), eos])
            if ids.max() >= tokenizer.vocab_size:
                raise DataError(f"tokenizer {tokenizer.id} produced id {ids.max()} >= its vocab_size "
                                f"{tokenizer.vocab_size}; the tokenizer file is inconsistent")
            if max_tokens is not None:
                ids = ids[:max_tokens - total]
            writer = writers["val" if is_val_document(text, data["val_fraction"]) else "train"]
            writer.write(ids)
            writer.documents += 1
            total += len(ids)
            if max_tokens is not None and total >= max_tokens:
                break
        if max_tokens is not None and total >= max_tokens:
            break
    splits = {s: w.finish() for s, w in writers.items()}
    if splits["train"]["documents"] + splits["val"]["documents"] == 0:
        raise DataError(f"corpus {corpus.id} has no non-empty documents ({skipped[0]} empty): point "
                        "data.corpus at a folder or dataset with text")
    for split, hint in (("train", "lower data.val_fraction or"), ("val", "raise data.val_fraction or")):
        if splits[split]["tokens"] == 0:
            raise DataError(f"no document went to the {split} split of {folder.name} "
                            f"({splits['train']['documents'] + splits['val']['documents']} documents in "
                            f"all): {hint} give the corpus more documents (data.corpus.max_documents / "
                            "max_tokens, or a bigger corpus)")
    return splits, skipped[0]
