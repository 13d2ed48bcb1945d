"""Corpora: local folders of txt/jsonl/parquet, the HF datasets path, the stdlib corpus id."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lengthgen.data import corpora
from lengthgen.data.corpora import CorpusError, HFCorpus, LocalCorpus, StdlibCorpus, build_corpus


def write_folder(root):
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("first text document\n")
    (root / "b" / "c.jsonl").write_text(
        json.dumps({"text": "json one", "meta": 1}) + "\n\n" + json.dumps({"text": "json two"}) + "\n")
    with gzip.open(root / "b" / "d.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "gz one"}) + "\n")
    pq.write_table(pa.table({"text": ["pq one", None, "pq two"], "n": [1, 2, 3]}), root / "e.parquet")
    (root / "ignored.csv").write_text("x,y\n")


def test_local_folder_reads_every_format_in_sorted_order(tmp_path):
    write_folder(tmp_path / "corpus")
    c = LocalCorpus(tmp_path / "corpus")
    assert c.files == ["a.txt", "b/c.jsonl", "b/d.jsonl.gz", "e.parquet"]
    assert list(c) == ["first text document\n", "json one", "json two", "gz one", "pq one", "pq two"]
    assert list(c) == list(c)  # re-iterable
    assert c.id.startswith("local-corpus-")


def test_local_folder_id_follows_content_listing(tmp_path):
    write_folder(tmp_path / "corpus")
    before = LocalCorpus(tmp_path / "corpus").id
    (tmp_path / "corpus" / "z.txt").write_text("more")
    assert LocalCorpus(tmp_path / "corpus").id != before


def test_local_folder_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        LocalCorpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no"):
        LocalCorpus(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jsonl").write_text(json.dumps({"content": "hi"}) + "\n")
    with pytest.raises(CorpusError, match=r"no text field 'text'.*content.*data.corpus.text_field"):
        list(LocalCorpus(tmp_path / "bad"))
    assert list(LocalCorpus(tmp_path / "bad", text_field="content")) == ["hi"]
    with pytest.raises(CorpusError, match="data.corpus.path"):
        build_corpus({"kind": "local", "path": None})


def test_hf_datasets_path_on_local_files(tmp_path):
    folder = tmp_path / "hfdata"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(5)))
    for streaming in (True, False):
        c = HFCorpus(str(folder), split="train", text_field="body", streaming=streaming)
        assert list(c) == [f"doc {i}" for i in range(5)]
        assert c.id == "hf-hfdata-train"
    with pytest.raises(CorpusError, match="no text field 'text'"):
        list(HFCorpus(str(folder), split="train"))


def test_hf_missing_offline_says_how_to_provide_it():
    c = build_corpus({"kind": "hf", "name": "nobody-xyz/no-such-dataset", "split": "train", "max_documents": 5})
    assert c.id == "hf-nobody-xyz_no-such-dataset-train-d5"
    with pytest.raises(CorpusError, match="data.corpus.kind=local, data.corpus.path=DIR"):
        next(iter(c))


def test_stdlib_corpus_id_tracks_the_file_list(monkeypatch):
    files = [("a.py", 10), ("pkg/b.py", 20)]
    monkeypatch.setattr(corpora, "stdlib_files", lambda root: list(files))
    first = StdlibCorpus().id
    assert first == StdlibCorpus().id and first.startswith("stdlib-py")
    files.append(("pkg/c.py", 5))
    assert StdlibCorpus().id != first
    files[-1] = ("pkg/c.py", 6)
    assert len({first, StdlibCorpus().id}) == 2


def test_stdlib_corpus_reads_real_sources():
    c = StdlibCorpus()
    assert len(c.files) > 100
    assert not any("site-packages" in f for f, _ in c.files)
    assert c.files == sorted(c.files)
    first = next(iter(c))
    label, rel = c.files[0][0].split("/", 1)
    assert label == "stdlib" and first == (c.roots["stdlib"] / rel).read_text(errors="replace")


def test_stdlib_corpus_with_site_packages(tmp_path, monkeypatch):
    import sysconfig

    std, site = tmp_path / "std", tmp_path / "site"
    for folder, names in ((std, ["os.py", "json/__init__.py"]), (site, ["pkg/mod.py", "pkg/__pycache__/x.py"])):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"# {name}\n")
    paths = {"stdlib": str(std), "purelib": str(site), "platlib": str(site)}
    monkeypatch.setattr(sysconfig, "get_paths", lambda: paths)
    plain = build_corpus({"kind": "stdlib"})
    both = build_corpus({"kind": "stdlib", "site_packages": True, "max_tokens": 100})
    assert list(plain) == ["# json/__init__.py\n", "# os.py\n"]
    assert list(both) == list(plain) + ["# pkg/mod.py\n"]  # platlib == purelib is read once
    assert plain.id.startswith("stdlib-py") and both.id.startswith("stdlib-site-py") and both.id.endswith("-t100")


def test_local_corpus_text_suffixes(tmp_path):
    from lengthgen.data.corpora import build_corpus

    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "b.txt").write_text("hello")
    (tmp_path / "c.md").write_text("ignored")
    plain = build_corpus({"kind": "local", "path": str(tmp_path)})
    code = build_corpus({"kind": "local", "path": str(tmp_path), "text_suffixes": [".py"]})
    assert list(plain) == ["hello"]
    assert list(code) == ["print(1)\n", "hello"]
    assert plain.id != code.id
