"""Passkey prompts: deterministic per seed, built to a token budget, answer recoverable; the stage."""

import random

import pytest
import torch
import yaml

from lengthgen.cli import main
from lengthgen.data import ByteTokenizer
from lengthgen.models import build_model, save_model
from lengthgen.results import read_result
from lengthgen.tasks import passkey

TOK = ByteTokenizer()


def test_generator_is_deterministic_and_fits_the_budget():
    a = passkey.generate_samples(TOK, [400, 900], [0.0, 0.5, 1.0], 2, seed=3)
    b = passkey.generate_samples(TOK, [400, 900], [0.0, 0.5, 1.0], 2, seed=3)
    c = passkey.generate_samples(TOK, [400, 900], [0.0, 0.5, 1.0], 2, seed=4)
    assert a == b and [s.key for s in a] != [s.key for s in c]
    for s in a:
        assert 10000 <= s.key <= 99999 and passkey.key_in_text(s.text) == s.key
        assert s.ids == TOK.encode(s.text) and len(s.ids) <= s.target_tokens
        fillers = s.text.count(passkey.FILLER)
        assert len(TOK.encode(passkey.passkey_text(s.key, fillers + 1, s.depth))) > s.target_tokens   # maximal
        assert s.text.startswith(passkey.INSTRUCTION) and s.text.endswith(passkey.QUESTION)


def test_depth_places_the_key():
    text = passkey.passkey_text(12345, 10, 0.3)
    before = text[:text.index("The pass key is 12345")]
    assert before.count(passkey.FILLER) == 3 and text.count(passkey.FILLER) == 10
    assert passkey.passkey_text(12345, 10, 1.0).split("\n")[-2] == ""                 # nothing after the key
    with pytest.raises(ValueError, match="depth"):
        passkey.passkey_text(1, 3, 1.5)
    with pytest.raises(ValueError, match="too short"):
        passkey.build_sample(TOK, 50, 0.5, 12345)


def test_answer_parsing_and_finetune_rows():
    assert passkey.parse_answer(" 40213. Remember") == 40213 and passkey.parse_answer(" the sky") is None
    tokens, mask = passkey.finetune_example(TOK, 500, random.Random(0))
    assert len(tokens) == len(mask) == 501
    answer = TOK.decode([t for t, m in zip(tokens, mask) if m])
    assert answer == f" {passkey.key_in_text(TOK.decode(tokens))}."


def test_evaluate_rows():
    torch.manual_seed(0)
    model = build_model("mamba2", preset="tiny", vocab_size=257).eval()
    samples = passkey.generate_samples(TOK, [260], [0.5], 2, seed=0)
    rows = passkey.evaluate(model, TOK, samples, max_new_tokens=3, chunk_size=100)
    assert [r["key"] for r in rows] == [s.key for s in samples]
    assert all(r["correct"] == (r["answer"] == r["key"]) and r["num_tokens"] <= 260 for r in rows)


def test_stage_zero_shot_and_fitted_noise_finetuning(tmp_path):
    torch.manual_seed(0)
    save_model(build_model("mamba2", preset="tiny", vocab_size=257), tmp_path / "m")
    cfg = {"seed": 1, "eval": {"device": "cpu", "chunk_size": 128},
           "train": {"precision": "fp32", "device": "cpu", "progress": False, "checkpoint_every": 1000},
           "tasks": {"passkey": {"lengths": [260], "depths": [0.0, 1.0], "samples": 1, "max_new_tokens": 3,
                                 "finetune": {"steps": 2, "context": 260, "batch_size": 2, "lr": 1e-3}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "pk.json"
    assert main(["task-passkey", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "m"),
                 "--out", str(out)]) == 0
    data = read_result(out, "task-passkey")["data"]
    assert data["protocol"] == "none" and len(data["samples"]) == 2
    assert sorted((a["length"], a["depth"]) for a in data["accuracy"]) == [(260, 0.0), (260, 1.0)]
    assert main(["task-passkey", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "m"),
                 "--out", str(out), "--set", "tasks.passkey.finetune.protocol=fitted_noise"]) == 0
    assert read_result(out)["data"]["protocol"] == "fitted_noise"
    assert (tmp_path / "pk.json.finetune" / "final").is_dir()


def test_stage_length_too_short_for_the_prompt_is_a_config_error(tmp_path, capsys):
    minimum = len(TOK.encode(passkey.passkey_text(12345, 0, 0.5)))
    with pytest.raises(passkey.PromptTooShort) as e:
        passkey.build_sample(TOK, minimum - 1, 0.5, 12345)
    assert (e.value.target_tokens, e.value.minimum) == (minimum - 1, minimum)
    assert passkey.build_sample(TOK, minimum, 0.5, 12345).ids == TOK.encode(passkey.passkey_text(12345, 0, 0.5))
    cfg = {"tasks": {"passkey": {"lengths": [400, 96], "depths": [0.5], "samples": 1}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # the model folder does not exist: the length is checked before the model is read
    assert main(["task-passkey", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "none"),
                 "--out", str(tmp_path / "pk.json")]) == 2
    err = capsys.readouterr().err
    assert "tasks.passkey.lengths" in err and f"at least {minimum}" in err and "96" in err
    assert not (tmp_path / "pk.json").exists()


def test_finetune_context_too_short_is_a_config_error(tmp_path, capsys):
    cfg = {"tasks": {"passkey": {"lengths": [400], "depths": [0.5], "samples": 1,
                                 "finetune": {"protocol": "standard", "context": 96}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    # checked before the model is read (the folder does not exist) and before any training
    assert main(["task-passkey", "--config", str(tmp_path / "c.yaml"), "--model", str(tmp_path / "none"),
                 "--out", str(tmp_path / "pk.json")]) == 2
    err = capsys.readouterr().err
    assert "tasks.passkey.finetune.context=96" in err and "raise tasks.passkey.finetune.context" in err
    assert not (tmp_path / "pk.json").exists() and not (tmp_path / "pk.json.finetune").exists()
