"""One schema for every result file.

A result is JSON ``{"schema": "lengthgen.result/1", "kind": KIND, "provenance": {...}, "data": {...}}``
or Parquet with the same header stored in the file's key-value metadata under ``lengthgen``.
Readers validate what they load: a file without provenance or of the wrong kind is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from . import io
from .provenance import REQUIRED

SCHEMA = "lengthgen.result/1"


class ResultError(ValueError):
    pass


def _header(kind: str, provenance: Mapping) -> dict:
    missing = [k for k in REQUIRED if k not in provenance]
    if missing:
        raise ResultError(f"result {kind!r}: provenance lacks {missing}")
    return {"schema": SCHEMA, "kind": kind, "provenance": dict(provenance)}


def write_result(path: str | Path, kind: str, data: Mapping[str, Any], provenance: Mapping) -> Path:
    path = Path(path)
    io.write_json(path, {**_header(kind, provenance), "data": dict(data)})
    return path


def _check(obj: Mapping, path: Path, kind: str | None) -> None:
    if not isinstance(obj, Mapping) or obj.get("schema") != SCHEMA:
        raise ResultError(f"{path}: not a lengthgen result (schema {SCHEMA!r} expected)")
    if kind is not None and obj.get("kind") != kind:
        raise ResultError(f"{path}: result kind {obj.get('kind')!r}, expected {kind!r}")
    prov = obj.get("provenance") or {}
    missing = [k for k in REQUIRED if k not in prov]
    if missing:
        raise ResultError(f"{path}: provenance lacks {missing}")


def read_result(path: str | Path, kind: str | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise ResultError(f"{path}: result file missing (run the stage that produces it, or `snakemake all`)")
    if path.suffix == ".parquet":
        return read_table(path, kind)[1]
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON ({e})") from e
    _check(obj, path, kind)
    return obj


def write_table(path: str | Path, kind: str, frame, provenance: Mapping, data: Mapping | None = None) -> Path:
    """A pandas DataFrame as Parquet with the result header in the file metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    header = {**_header(kind, provenance), "data": dict(data or {})}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"lengthgen"] = json.dumps(header, sort_keys=True, default=io._json_default).encode()
    table = table.replace_schema_metadata(meta)
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(path: str | Path, kind: str | None = None):
    """(DataFrame, header) of a Parquet result."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ResultError(f"{path}: result file missing (run the stage that produces it, or `snakemake all`)")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"lengthgen")
    if raw is None:
        raise ResultError(f"{path}: Parquet file without a lengthgen header")
    header = json.loads(raw)
    _check(header, path, kind)
    return table.to_pandas(), header
