"""Token shards: EOS between documents, split by document, manifest, no-op rerun, corruption, stage."""

import json

import numpy as np
import pytest

from lengthgen.cli import main
from lengthgen.config import resolve
from lengthgen.data import DataError, ShuffledWindows, open_dataset, prepare
from lengthgen.data.shards import TokenArray, is_val_document, token_dtype

DOCS = [f"document number {i}: " + "word " * (i % 7 + 1) for i in range(60)]


def make_cfg(tmp_path, **data):
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for i, text in enumerate(DOCS):
            (corpus / f"{i:03d}.txt").write_text(text)
        (corpus / "zzz_empty.txt").write_text("")
    base = {"root": str(tmp_path / "data"), "corpus": {"kind": "local", "path": str(corpus)},
            "val_fraction": 0.2, "shard_tokens": 1024}
    for key, value in data.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return resolve({"data": base})


def byte_documents(tokens):
    """The documents of a byte-token stream, checking each one is followed by EOS (256)."""
    tokens = np.asarray(tokens)
    assert tokens[-1] == 256
    pieces = np.split(tokens, np.where(tokens == 256)[0] + 1)[:-1]
    return [bytes(p[:-1].astype(np.uint8)).decode() for p in pieces]


def test_prepare_byte_splits_by_document_with_eos(tmp_path):
    cfg = make_cfg(tmp_path)
    folder = prepare(cfg)
    assert folder.name.startswith("local-corpus-") and folder.name.endswith("-byte")
    ds = open_dataset(cfg)
    m = ds.manifest
    assert m["dtype"] == "uint16" and m["vocab_size"] == 257 and m["skipped_empty_documents"] == 1
    # shards are exactly the concatenated byte stream, small shards cut across documents
    assert len(m["splits"]["train"]["shards"]) > 1
    assert all(s["tokens"] <= 1024 for s in m["splits"]["train"]["shards"])
    assert len(ds.train) == m["splits"]["train"]["tokens"] and np.asarray(ds.train).max() == 256
    train_docs, val_docs = byte_documents(ds.train), byte_documents(ds.val)
    assert sorted(train_docs + val_docs) == sorted(DOCS)
    assert not set(train_docs) & set(val_docs) and val_docs
    assert val_docs == [d for d in DOCS if is_val_document(d, 0.2)]
    assert (m["splits"]["train"]["documents"], m["splits"]["val"]["documents"]) == (len(train_docs), len(val_docs))


def test_rerun_is_a_noop_and_changed_settings_rebuild(tmp_path):
    cfg = make_cfg(tmp_path)
    folder = prepare(cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    messages = []
    assert prepare(cfg, log=messages.append) == folder
    assert messages[0].startswith("up to date")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    cfg2 = make_cfg(tmp_path, shard_tokens=100000)
    prepare(cfg2)
    assert sorted(p.name for p in folder.glob("*.bin")) == ["train_00000.bin", "val_00000.bin"]  # stale removed
    assert json.loads((folder / "manifest.json").read_text())["config"]["shard_tokens"] == 100000


def test_truncated_or_corrupted_shard_is_an_error_naming_it(tmp_path):
    cfg = make_cfg(tmp_path)
    folder = prepare(cfg)
    shard = folder / "train_00001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-2])
    with pytest.raises(DataError, match=r"train_00001.bin has .* bytes.*rerun `lengthgen prepare-data`"):
        open_dataset(cfg)
    shard.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(DataError, match=r"train_00001.bin does not match its sha256.*prepare-data"):
        open_dataset(cfg)
    open_dataset(cfg, verify="size")  # sizes alone cannot see a flipped byte
    messages = []
    prepare(cfg, log=messages.append)  # a rerun repairs it
    assert not messages[0].startswith("up to date")
    assert shard.read_bytes() == data
    (folder / "val_00000.bin").unlink()
    with pytest.raises(DataError, match="val_00000.bin is missing"):
        open_dataset(cfg)


def test_open_before_prepare_and_empty_corpus(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(DataError, match="run `lengthgen prepare-data"):
        open_dataset(cfg)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("")
    with pytest.raises(DataError, match="no non-empty documents"):
        prepare(make_cfg(tmp_path, corpus={"path": str(tmp_path / "blank")}))
    with pytest.raises(DataError, match="raise data.val_fraction"):
        prepare(make_cfg(tmp_path, corpus={"max_documents": 1}, val_fraction=0.001))


def test_limits_and_context_longer_than_data(tmp_path):
    cfg = make_cfg(tmp_path, corpus={"max_tokens": 500})
    folder = prepare(cfg)
    assert folder.name.endswith("-t500-byte")
    ds = open_dataset(cfg)
    assert len(ds.train) + len(ds.val) == 500
    with pytest.raises(DataError, match="fewer than the global batch"):
        ShuffledWindows(ds.train, context=1000, batch_size=2)
    cfg = make_cfg(tmp_path, corpus={"max_documents": 10})
    prepare(cfg)
    m = open_dataset(cfg, verify="full").manifest["splits"]
    assert m["train"]["documents"] + m["val"]["documents"] == 10


def test_bpe_prepare_is_deterministic_and_reloads(tmp_path):
    cfg = make_cfg(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300})
    folder = prepare(cfg)
    assert folder.name.endswith("-bpe300") and (folder / "tokenizer.json").is_file()
    ds = open_dataset(cfg)
    tok = ds.tokenizer
    assert ds.vocab_size == tok.vocab_size <= 300 and ds.eos_id == tok.eos_id == 0
    first_doc = np.asarray(ds.train)[: int(np.argmax(np.asarray(ds.train) == 0))]
    assert tok.decode(first_doc) in DOCS
    again = prepare(make_cfg(tmp_path / "again", tokenizer={"kind": "bpe", "vocab_size": 300}))
    assert (again / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    sums = lambda f: [s["sha256"] for s in json.loads((f / "manifest.json").read_text())["splits"]["train"]["shards"]]
    assert sums(again) == sums(folder)


def test_dtype_by_vocab_size():
    assert token_dtype(257) == np.uint16 and token_dtype(50277) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(128256) == np.uint32


def test_token_array_slices_across_parts():
    parts = [np.arange(0, 5), np.arange(5, 12), np.arange(12, 13), np.arange(13, 20)]
    t, ref = TokenArray(parts), np.arange(20)
    assert len(t) == 20 and t[7] == 7 and t[-1] == 19
    for a in range(0, 21):
        for b in range(a, 21):
            assert np.array_equal(t[a:b], ref[a:b])
    assert np.array_equal(t[-6:], ref[-6:]) and np.array_equal(np.asarray(t), ref)
    with pytest.raises(IndexError):
        t[20]


def test_prepare_data_stage(tmp_path, capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"{i}.txt").write_text(f"text {i} " * 5)
    args = ["prepare-data", "--set", f"data.root={tmp_path / 'data'}", "--set", "data.corpus.kind=local",
            "--set", f"data.corpus.path={corpus}", "--set", "data.val_fraction=0.25"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith("manifest.json") and json.loads(open(out[-1]).read())["format"] == "lengthgen.data/1"
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(args[:-4] + ["--set", f"data.corpus.path={tmp_path / 'nope'}"]) == 2   # a user error
    assert "does not exist" in capsys.readouterr().err
