"""BABILong: generator answers verified by the solver, facts hidden in filler, matching, loader, stage."""

import json
import random

import pandas as pd
import pytest
import torch
import yaml

from lengthgen.cli import main
from lengthgen.data import ByteTokenizer
from lengthgen.models import build_model, save_model
from lengthgen.results import read_result
from lengthgen.tasks import babi, babilong

TOK = ByteTokenizer()
DOCS = [f"Document {i} talks about weather. It was sunny on day {i}! Nobody knew why.\nThe end." for i in range(400)]


@pytest.mark.parametrize("task", babi.TASKS)
def test_generator_answers_agree_with_the_solver(task):
    rng = random.Random(0)
    for _ in range(200):
        s = babi.generate(task, rng)
        assert babi.solve(" ".join(s.facts), s.question) == s.answer
        assert s.answer in babi.ANSWER_LABELS[task]
    a = [babi.generate(task, random.Random(5)) for _ in range(3)]
    assert a == [babi.generate(task, random.Random(5)) for _ in range(3)]


def test_supporting_facts_matter():
    s = babi.BabiSample("qa2", ("Mary went to the kitchen.", "Mary took the apple.", "Mary moved to the garden."),
                        "Where is the apple?", "garden")
    assert babi.solve(" ".join(s.facts), s.question) == "garden"
    assert babi.solve("Mary went to the kitchen. Mary took the apple. Mary dropped the apple. Mary moved to the "
                      "garden.", "Where is the apple?") == "kitchen"
    assert babi.solve("The kitchen is north of the garden.", "What is the garden south of?") == "kitchen"
    with pytest.raises(ValueError, match="not a qa1-qa5 question"):
        babi.solve("", "Why?")
    with pytest.raises(ValueError, match="do not answer"):
        babi.solve("John went to the office.", "Where is Mary?")


def test_hidden_facts_keep_order_and_answer():
    rows = babilong.generate_samples("qa3", "1k", 4, babilong.sentences(DOCS), TOK, seed=1)
    assert rows == babilong.generate_samples("qa3", "1k", 4, babilong.sentences(DOCS), TOK, seed=1)
    for r in rows:
        assert 1024 <= len(TOK.encode(r["input"])) < 1024 + 100
        assert babi.solve(r["input"], r["question"]) == r["target"]
        facts = [f for f in babi.parse_facts(r["input"])]
        assert len(facts) >= 2 and "weather" in r["input"]
    assert babilong.parse_length("0k") == 0 and babilong.parse_length("128k") == 131072
    with pytest.raises(ValueError, match="ran out"):
        babilong.generate_samples("qa1", "4k", 1, babilong.sentences(DOCS[:2]), TOK, seed=0)


def test_answer_matching():
    q = "Where is Mary?"
    assert babilong.is_correct("kitchen", " Kitchen. Then the garden", q, "qa1")
    assert not babilong.is_correct("kitchen", " kitchen or garden", q, "qa1")
    assert not babilong.is_correct("kitchen", " garden", q, "qa1")
    assert babilong.is_correct("apple", " Fred gave the apple", "What did Fred give to Bill?", "qa5")  # Fred: in q
    assert not babilong.is_correct("kitchen", "\n<example>kitchen", q, "qa1")


def test_prompt_layout():
    p = babilong.format_prompt("qa1", "CONTEXT", "Where is Mary?", few_shot=False)
    assert p.endswith("<context>\nCONTEXT\n</context>\nQuestion: Where is Mary?\nAnswer:")
    assert "<example>" in babilong.format_prompt("qa1", "C", "Where is Mary?") and "<example>" not in p


def write_babilong_folder(root):
    rows = [{"input": "Mary went to the kitchen. It rained.", "question": "Where is Mary?", "target": "kitchen"},
            {"input": "John moved to the garden.", "question": "Where is John?", "target": "garden"}]
    (root / "0k").mkdir(parents=True)
    (root / "0k" / "qa1.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pd.DataFrame(rows).to_parquet(root / "0k" / "qa2.parquet")
    (root / "1k").mkdir()
    (root / "1k" / "qa1.jsonl").write_text("")
    (root / "1k" / "qa2.jsonl").write_text(json.dumps({"input": "x", "question": "y"}) + "\n")
    return rows


def test_load_hf_from_a_local_folder(tmp_path):
    rows = write_babilong_folder(tmp_path / "bl")
    assert babilong.load_hf(str(tmp_path / "bl"), "0k", "qa1") == rows
    assert babilong.load_hf(str(tmp_path / "bl"), "0k", "qa2", limit=1) == rows[:1]
    from lengthgen.data.errors import DataError

    with pytest.raises(DataError, match="qa3.*source=generated"):
        babilong.load_hf(str(tmp_path / "bl"), "0k", "qa3")
    with pytest.raises(DataError, match="target"):
        babilong.load_hf(str(tmp_path / "bl"), "1k", "qa2")
    with pytest.raises(ValueError, match="is empty"):
        babilong.load_hf(str(tmp_path / "bl"), "1k", "qa1")


def test_stage_generated_hf_and_finetuned(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, d in enumerate(DOCS):
        (corpus / f"{i:03d}.txt").write_text(d)
    write_babilong_folder(tmp_path / "bl")
    torch.manual_seed(0)
    save_model(build_model("mamba2", preset="tiny", vocab_size=257), tmp_path / "m")
    cfg = {"seed": 0, "eval": {"device": "cpu", "chunk_size": 512},
           "data": {"corpus": {"kind": "local", "path": str(corpus)}},
           "train": {"precision": "fp32", "device": "cpu", "progress": False, "checkpoint_every": 1000},
           "tasks": {"babilong": {"lengths": ["0k"], "tasks": ["qa1", "qa4"], "samples": 1, "max_new_tokens": 2,
                                  "dataset": str(tmp_path / "bl"),
                                  "finetune": {"steps": 2, "context": 500, "batch_size": 2, "lr": 1e-3}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    base = ["task-babilong", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "m")]
    out = tmp_path / "bl.json"
    assert main(base + ["--out", str(out)]) == 0
    data = read_result(out, "task-babilong")["data"]
    assert [(a["task"], a["length"], a["n"]) for a in data["accuracy"]] == [("qa1", "0k", 1), ("qa4", "0k", 1)]
    for r in data["samples"]:
        assert r["correct"] == babilong.is_correct(r["target"], r["output"], r["question"], r["task"])
    assert main(base + ["--out", str(out), "--set", "tasks.babilong.source=hf", "--set", "tasks.babilong.tasks=[qa1]",
                        "--set", "tasks.babilong.samples=2"]) == 0
    data = read_result(out)["data"]
    assert data["source"] == "hf" and [s["target"] for s in data["samples"]] == ["kitchen", "garden"]
    assert main(base + ["--out", str(out), "--set", "tasks.babilong.few_shot=false",
                        "--set", "tasks.babilong.finetune.protocol=standard"]) == 0
    assert read_result(out)["data"]["protocol"] == "standard" and (tmp_path / "bl.json.finetune" / "final").is_dir()
