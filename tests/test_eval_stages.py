"""The eval-ppl, eval-effrem and eval-state-stats stages end to end on a tiny prepared corpus."""

import pytest
import torch
import yaml

from lengthgen.cli import main
from lengthgen.config import resolve
from lengthgen.data import ValidationSequences, open_dataset, prepare
from lengthgen.evaluate import length_generalization, positionwise_loss, state_statistics
from lengthgen.models import build_model, save_model
from lengthgen.results import read_table

DOCS = [f"note {i}: the quick brown fox jumps over the lazy dog {'and runs ' * (i % 5)}" for i in range(80)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalstage")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(DOCS):
        (corpus / f"{i:03d}.txt").write_text(text)
    run_cfg = {"data": {"root": str(root / "data"), "corpus": {"kind": "local", "path": str(corpus)},
                        "val_fraction": 0.25, "shard_tokens": 4096},
               "train": {"context": 8},
               "eval": {"length": 40, "num_sequences": 3, "batch_size": 2, "chunk_size": 16, "device": "cpu",
                        "verdict": {"window": 2},
                        "effrem": {"length": 24, "num_sequences": 3, "cut_points": [0, 5, 20, 23], "chunk_size": 8,
                                   "group_size": 3},
                        "state_stats": {"length": 20, "num_sequences": 3, "stride": 6}}}
    cfg = resolve(run_cfg)
    prepare(cfg)
    torch.manual_seed(0)
    model = build_model("mamba2", preset="tiny", vocab_size=257)
    run = root / "run"
    save_model(model, run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    config_file = root / "eval.yaml"
    config_file.write_text(yaml.safe_dump(run_cfg))
    return {"cfg": cfg, "config": str(config_file), "model_dir": str(run / "final"), "model": model.eval(),
            "root": root}


def val_batch(cfg, length, n):
    return torch.cat(list(ValidationSequences(open_dataset(cfg).val, length=length, num_sequences=n, batch_size=n)))


def test_eval_ppl_stage(setup, tmp_path):
    out = tmp_path / "ppl.parquet"
    assert main(["eval-ppl", "--config", setup["config"], "--model", setup["model_dir"], "--out", str(out)]) == 0
    frame, header = read_table(out, "eval-ppl")
    ids = val_batch(setup["cfg"], 40, 3)
    expected = positionwise_loss(setup["model"], ids, 40).mean(0)
    assert list(frame.columns) == ["position", "loss"] and frame["position"].tolist() == list(range(40))
    torch.testing.assert_close(torch.tensor(frame["loss"].values, dtype=torch.float64), expected.double(),
                               rtol=1e-5, atol=1e-5)
    data = header["data"]
    assert data["train_context"] == 8 and data["train_context_source"] == "config.yaml"
    assert data["num_sequences"] == 3 and data["perplexity"] == pytest.approx(float(expected.mean().exp()), rel=1e-5)
    assert [(b["lo"], b["hi"]) for b in data["buckets"]] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32),
                                                               (32, 40)]
    v = data["verdict"]
    assert v["train_context"] == 8 and v["window"] == 2 and 0 <= v["t_star"] < 8
    assert v["loss_far"] == pytest.approx(float(expected[32:].mean()), rel=1e-5)
    # bootstrap intervals over the 3 sequences: the same as the verdict computed from the per-sequence losses
    per_seq = positionwise_loss(setup["model"], ids, 40).double()
    ref = length_generalization(None, 8, window=2, losses=per_seq, seed=setup["cfg"]["seed"])
    assert v["num_sequences"] == 3 and v["num_bootstrap"] == 1000 and v["ci_level"] == 0.95
    for key in ("p_star_ci", "loss_far_ci", "far_gap_ci"):
        assert v[key] == pytest.approx(list(getattr(ref, key)), abs=1e-4)
    assert v["fails_far"] == (v["far_gap_ci"][0] >= v["far_margin"])
    far = data["buckets"][-1]
    assert far["ci_lo"] <= far["loss"] <= far["ci_hi"] and far["ci_lo"] < far["ci_hi"]
    # each sequence's far-bucket loss, and the id of the windows they were read from
    assert data["sequence_loss_far"] == pytest.approx(per_seq[:, 32:].mean(1).tolist(), abs=1e-5)
    assert sum(data["sequence_loss_far"]) / 3 == pytest.approx(v["loss_far"], abs=1e-5)
    from lengthgen.evaluate.runtime import validation_windows_id
    assert data["windows"] == validation_windows_id(setup["cfg"], 40, 3) != validation_windows_id(setup["cfg"], 40, 2)
    assert header["provenance"]["config_hash"]
    assert data["eval_seconds"] > 0
    assert data["tokens_per_s"] == pytest.approx(3 * 41 / data["eval_seconds"])


def test_eval_ppl_needs_a_train_context(setup, tmp_path, capsys):
    bare = tmp_path / "bare"
    save_model(setup["model"], bare)
    assert main(["eval-ppl", "--config", setup["config"], "--model", str(bare), "--out",
                 str(tmp_path / "x.parquet")]) == 2
    assert "--set eval.train_context=T" in capsys.readouterr().err
    assert main(["eval-ppl", "--config", setup["config"], "--model", str(bare), "--out", str(tmp_path / "x.parquet"),
                 "--set", "eval.train_context=4"]) == 0
    assert read_table(tmp_path / "x.parquet")[1]["data"]["train_context_source"] == "eval.train_context"


def test_eval_ppl_errors(setup, tmp_path, capsys):
    """Bad input is one line on stderr and exit status 2 (tests/test_cli_errors.py has the rest)."""
    out = str(tmp_path / "x.parquet")

    def err(*sets):
        argv = ["eval-ppl", "--config", setup["config"], "--model", setup["model_dir"], "--out", out]
        assert main(argv + [a for s in sets for a in ("--set", s)]) == 2
        return capsys.readouterr().err

    assert "eval.length / eval.num_sequences: the validation split" in err("eval.length=100000")
    assert "eval.lenght" in err("eval.lenght=10")                   # a config error names the key
    assert "eval.length=8 does not reach past the training context T=8" in err("eval.length=8")
    assert "tokenizer" in err("data.tokenizer.kind=bpe")
    assert not (tmp_path / "x.parquet").exists()


def test_eval_effrem_stage(setup, tmp_path, capsys):
    out = tmp_path / "effrem.parquet"
    assert main(["eval-effrem", "--config", setup["config"], "--model", setup["model_dir"], "--out", str(out)]) == 0
    frame, header = read_table(out, "eval-effrem")
    assert header["data"]["T"] == 24 and header["data"]["num_sequences"] == 3
    assert sorted(set(frame["distance"])) == ["cosine", "js", "tv"]
    assert frame[frame.cut_point == 0]["effrem"].abs().max() < 1e-6
    ids = val_batch(setup["cfg"], 23, 3)
    with torch.no_grad():
        p = torch.softmax(setup["model"](ids)[0][:, -1].double(), -1)
        q = torch.softmax(setup["model"](ids[:, 20:])[0][:, -1].double(), -1)
    tv = float((0.5 * (p - q).abs().sum(-1)).mean())
    row = frame[(frame.distance == "tv") & (frame.cut_point == 20)]
    assert float(row["effrem"].iloc[0]) == pytest.approx(tv, rel=1e-4, abs=1e-6)
    assert main(["eval-effrem", "--config", setup["config"], "--model", setup["model_dir"], "--out", str(out),
                 "--set", "eval.effrem.cut_points=[0,24]"]) == 2
    assert "eval.effrem.cut_points (eval.effrem.length=24): cut points [24] out of range" in capsys.readouterr().err


def test_eval_state_stats_stage(setup, tmp_path):
    out = tmp_path / "stats.parquet"
    assert main(["eval-state-stats", "--config", setup["config"], "--model", setup["model_dir"], "--out",
                 str(out)]) == 0
    frame, header = read_table(out, "eval-state-stats")
    assert sorted(set(frame["position"])) == [5, 11, 17, 19]
    model = setup["model"]
    heads = model.zero_state(1).layers[0]["ssm"].shape[1]
    assert len(frame) == 4 * (1 + model.config.n_layers * (1 + heads))
    ids = val_batch(setup["cfg"], 20, 3)[:, :20]
    direct = state_statistics(model, ids, 6)
    whole = frame[(frame.layer == -1)].sort_values("position")["std"].to_numpy()
    torch.testing.assert_close(torch.tensor(whole), direct["whole_std"].mean(0), rtol=1e-5, atol=1e-7)


def test_eval_ppl_of_a_model_that_gives_nan_is_one_line_and_exit_1(setup, tmp_path, capsys):
    """NaN logits are a failed evaluation of valid input: one line naming the fix, exit 1, no result."""
    import shutil
    from pathlib import Path

    from lengthgen.models import load_model, save_model

    run = tmp_path / "nanrun"
    shutil.copytree(Path(setup["model_dir"]).parent, run)
    model = load_model(str(run / "final"))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, run / "final")
    out = tmp_path / "nan.parquet"
    assert main(["eval-ppl", "--config", setup["config"], "--model", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss" in err[0] and "eval.precision=fp32" in err[0]
    assert "Traceback" not in err[0] and not out.exists()
