import json

import pandas as pd
import pytest

from lengthgen import io
from lengthgen.config import resolve
from lengthgen.provenance import provenance
from lengthgen.results import ResultError, read_result, read_table, write_result, write_table


def test_provenance_has_required_fields():
    cfg = resolve({}, ["seed=7"])
    p = provenance(cfg)
    assert p["seed"] == 7 and len(p["config_hash"]) == 16
    assert p["hardware"]["device"] in ("cpu", "cuda")
    assert "torch" in p["versions"] and "commit" in p["git"]


def test_json_result_roundtrip_and_validation(tmp_path):
    prov = provenance(resolve({}))
    path = write_result(tmp_path / "r.json", "ppl", {"loss": [1.0, 2.0]}, prov)
    r = read_result(path, kind="ppl")
    assert r["data"]["loss"] == [1.0, 2.0]
    with pytest.raises(ResultError, match="kind"):
        read_result(path, kind="effrem")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "lengthgen.result/1", "kind": "ppl", "provenance": {}, "data": {}}))
    with pytest.raises(ResultError, match="provenance lacks"):
        read_result(bad)
    with pytest.raises(ResultError, match="missing"):
        read_result(tmp_path / "absent.json")


def test_write_refuses_incomplete_provenance(tmp_path):
    with pytest.raises(ResultError):
        write_result(tmp_path / "x.json", "ppl", {}, {"seed": 0})


def test_parquet_result_roundtrip(tmp_path):
    prov = provenance(resolve({}))
    df = pd.DataFrame({"position": [0, 1, 2], "loss": [3.0, 2.5, 2.0]})
    write_table(tmp_path / "t.parquet", "ppl_curve", df, prov, data={"T": 64})
    back, header = read_table(tmp_path / "t.parquet", kind="ppl_curve")
    assert back.equals(df) and header["data"]["T"] == 64


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    io.write_json(target, {"v": 1})

    class Boom(OSError):
        pass

    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "partial')
            raise Boom("No space left on device")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_uses_umask_permissions(tmp_path):
    import os

    io.write_json(tmp_path / "p.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o666 & ~mask
