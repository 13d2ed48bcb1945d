"""Corpora: re-iterable sources of documents (strings), each with a stable ``id``.

- ``stdlib``: the running interpreter's standard-library sources (``*.py`` under sysconfig's
  stdlib path, test suites included, site-packages excluded), one document per file, in sorted
  order. Present on any machine with Python. The id hashes the exact file list (relative paths and
  sizes), so different Pythons give different ids. ``site_packages: true`` appends the ``*.py``
  files of the interpreter's site-packages (sysconfig's purelib and platlib), also sorted: a
  larger offline corpus on machines with many packages installed (cap it with ``max_tokens``).
- ``local``: a folder of ``.txt`` (one document per file), ``.jsonl`` / ``.jsonl.gz`` /
  ``.jsonl.zst`` (one per line) and ``.parquet`` (one per row) files, searched recursively and
  read in sorted order; the id hashes relative paths and sizes.
- ``hf``: a Hugging Face dataset by name, config and split via ``datasets.load_dataset``, streamed
  or from the local cache; for offline machines download it elsewhere and use ``local``.

Document limits (``max_documents`` / ``max_tokens``) are applied while preparing, and are part
of the corpus id so a smoke-sized preparation never shares a folder with a full one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

from .errors import DataError
from .tokenizers import slug

LOCAL_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


class CorpusError(DataError):
    """A corpus that cannot be read; the message names the fix."""


def _list_hash(entries) -> str:
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()[:8]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def stdlib_files(root: Path) -> list[tuple[str, int]]:
    """``(relative posix path, size)`` of every ``*.py`` under ``root`` outside site-packages, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                p = Path(dirpath, name)
                out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return sorted(out)


class StdlibCorpus:
    """The standard-library sources of the running Python, one document per file."""

    kind = "stdlib"

    def __init__(self, site_packages: bool = False):
        paths = sysconfig.get_paths()
        self.roots = {"stdlib": Path(paths["stdlib"])}
        if site_packages:
            for i, key in enumerate(dict.fromkeys(str(Path(paths[k])) for k in ("purelib", "platlib"))):
                self.roots[f"site{i}"] = Path(key)
        self.files = [(f"{label}/{rel}", size) for label, root in self.roots.items()
                      for rel, size in stdlib_files(root)]
        if not self.files:
            raise CorpusError(f"no *.py files under the standard library ({self.roots['stdlib']}); "
                              "use data.corpus.kind=local with a folder of text")
        version = f"py{sys.version_info.major}.{sys.version_info.minor}"
        name = "stdlib-site" if site_packages else "stdlib"
        # plain stdlib ids hash paths relative to the stdlib, as before site_packages existed
        listed = self.files if site_packages else [(rel.split("/", 1)[1], size) for rel, size in self.files]
        self.id = f"{name}-{version}-{_list_hash(listed)}"

    def __iter__(self) -> Iterator[str]:
        for rel, _ in self.files:
            label, path = rel.split("/", 1)
            yield _decode((self.roots[label] / path).read_bytes())

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "python": sys.version.split()[0],
                "roots": sorted(self.roots), "files": len(self.files), "bytes": sum(s for _, s in self.files)}


def _jsonl_lines(path: Path) -> Iterator[bytes]:
    name = path.name
    if name.endswith(".jsonl.zst"):
        try:
            import zstandard
        except ImportError as e:
            raise CorpusError(f"{path} is zstd-compressed: pip install zstandard, or decompress it "
                              "(`zstd -d`)") from e
        with open(path, "rb") as f:
            yield from io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f))
    else:
        with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as f:
            yield from f


def _text_of(record, field: str, where: str) -> str:
    if not isinstance(record, dict) or field not in record:
        fields = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise CorpusError(f"{where} has no text field {field!r} (fields: {fields}); "
                          "set data.corpus.text_field")
    text = record[field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {field!r} is {type(text).__name__}, not text; "
                          "set data.corpus.text_field to a string field")
    return text


class LocalCorpus:
    """A folder of .txt / .jsonl[.gz|.zst] / .parquet files, recursively, in sorted order.

    ``text_suffixes`` adds other suffixes read as one plain-text document per file (e.g. ``.py``
    for a source-code corpus).
    """

    kind = "local"

    def __init__(self, path: str | Path, text_field: str = "text", text_suffixes=()):
        if path is None:
            raise CorpusError("data.corpus.kind=local needs data.corpus.path (a folder of "
                              ".txt/.jsonl/.parquet files)")
        self.path, self.text_field = Path(path).expanduser(), text_field
        if not self.path.is_dir():
            raise CorpusError(f"corpus folder {self.path} does not exist; set data.corpus.path to a "
                              "folder of .txt/.jsonl/.parquet files")
        self.text_suffixes = tuple(text_suffixes or ())
        suffixes = LOCAL_SUFFIXES + self.text_suffixes
        self.files = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                            if p.is_file() and p.name.endswith(suffixes))
        if not self.files:
            raise CorpusError(f"corpus folder {self.path} holds no {'/'.join(suffixes)} files")
        entries = [[f, (self.path / f).stat().st_size] for f in self.files] + [text_field]
        entries += list(self.text_suffixes)
        self.id = f"local-{slug(self.path.resolve().name)}-{_list_hash(entries)}"

    def __iter__(self) -> Iterator[str]:
        for rel in self.files:
            path = self.path / rel
            if path.suffix == ".txt" or rel.endswith(self.text_suffixes or ("\0",)):
                yield _decode(path.read_bytes())
            elif path.suffix == ".parquet":
                yield from self._parquet(path)
            else:
                for n, line in enumerate(_jsonl_lines(path), 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise CorpusError(f"{path} line {n} is not JSON ({e.msg}); fix or remove it") from e
                        yield _text_of(record, self.text_field, f"{path} line {n}")

    def _parquet(self, path: Path) -> Iterator[str]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if self.text_field not in pf.schema_arrow.names:
            raise CorpusError(f"{path} has no text column {self.text_field!r} (columns: "
                              f"{pf.schema_arrow.names}); set data.corpus.text_field")
        for batch in pf.iter_batches(columns=[self.text_field]):
            for text in batch.column(0).to_pylist():
                if text is not None:
                    yield text

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "folder": self.path.name, "files": len(self.files),
                "text_field": self.text_field}


class HFCorpus:
    """A Hugging Face dataset split, streamed (``streaming=True``) or from the local cache."""

    kind = "hf"

    def __init__(self, name: str, config: str | None = None, split: str = "train",
                 text_field: str = "text", streaming: bool = True):
        if not name:
            raise CorpusError("data.corpus.kind=hf needs data.corpus.name (e.g. monology/pile-uncopyrighted)")
        self.name, self.config, self.split = name, config, split
        self.text_field, self.streaming = text_field, streaming
        label = Path(name).name if Path(name).expanduser().exists() else name
        parts = ["hf", slug(label)] + ([slug(config)] if config else []) + [slug(split)]
        self.id = "-".join(parts)

    def _load(self):
        try:
            import datasets
        except ImportError as e:
            raise CorpusError("data.corpus.kind=hf needs the datasets package (pip install "
                              "'lengthgen[hub]'), or use data.corpus.kind=local") from e
        try:
            return datasets.load_dataset(self.name, self.config, split=self.split, streaming=self.streaming)
        except Exception as e:  # offline and not cached, unknown name, bad config/split, ...
            first = str(e).splitlines()[0] if str(e) else ""
            raise CorpusError(
                f"cannot load dataset {self.name!r} (config {self.config}, split {self.split}): "
                f"{type(e).__name__}: {first}. Offline, download it on a machine with network "
                f"(`huggingface-cli download {self.name} --repo-type dataset --local-dir DIR`), copy DIR "
                "here and set data.corpus.kind=local, data.corpus.path=DIR (a folder of "
                "jsonl/parquet files)") from e

    def __iter__(self) -> Iterator[str]:
        for n, row in enumerate(self._load()):
            yield _text_of(row, self.text_field, f"dataset {self.name} row {n}")

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "config": self.config,
                "split": self.split, "text_field": self.text_field}


def _limits_suffix(corpus_cfg: dict) -> str:
    parts = []
    if corpus_cfg.get("max_documents"):
        parts.append(f"d{corpus_cfg['max_documents']}")
    if corpus_cfg.get("max_tokens"):
        parts.append(f"t{corpus_cfg['max_tokens']}")
    return "".join(f"-{p}" for p in parts)


def build_corpus(corpus_cfg: dict):
    """The corpus of a ``data.corpus`` config section; its ``id`` includes the document limits."""
    kind = corpus_cfg.get("kind", "stdlib")
    if kind == "stdlib":
        corpus = StdlibCorpus(site_packages=bool(corpus_cfg.get("site_packages", False)))
    elif kind == "local":
        corpus = LocalCorpus(corpus_cfg.get("path"), corpus_cfg.get("text_field", "text"),
                             corpus_cfg.get("text_suffixes", ()))
    elif kind == "hf":
        corpus = HFCorpus(corpus_cfg.get("name"), corpus_cfg.get("config"), corpus_cfg.get("split", "train"),
                          corpus_cfg.get("text_field", "text"), corpus_cfg.get("streaming", True))
    else:
        raise CorpusError(f"unknown data.corpus.kind {kind!r}; use stdlib, local or hf")
    corpus.id += _limits_suffix(corpus_cfg)
    return corpus
