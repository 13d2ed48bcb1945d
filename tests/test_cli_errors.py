"""The error contract of the command line (issue 17): bad input to any stage is one line on stderr,
``lengthgen <stage>: <message naming the path or key and the fix>``, exit status 2, no traceback,
and nothing is written; a bug still raises."""

import shutil

import _train_helpers
import pytest
import yaml

from lengthgen import cli
from lengthgen.errors import ModelError, UserError
from lengthgen.models import load_model, resolve_model_path

EVAL = ["eval.length=48", "eval.num_sequences=1", "eval.batch_size=1", "eval.chunk_size=16", "eval.device=cpu"]


def write_config(path, data_root, **train):
    path.write_text(yaml.safe_dump(_train_helpers.tiny_config(data_root, **{"steps": 2, "checkpoint_every": 2,
                                                                             **train})))
    return path


def main(stage, *args, sets=()):
    argv = [stage, *map(str, args)]
    for s in sets:
        argv += ["--set", s]
    return cli.main(argv)


def user_error(capsys, stage, *names):
    """stderr of a failed stage: one line for ``stage`` that names each of ``names``, no traceback."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"lengthgen {stage}: "), err
    for name in names:
        assert str(name) in err, (name, err)
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory, train_data_root):
    """A finished 2-step pretraining run and its config file."""
    d = tmp_path_factory.mktemp("cli-errors")
    cfg = write_config(d / "cfg.yaml", train_data_root)
    assert main("pretrain", "--config", cfg, "--out", d / "run") == 0
    return cfg, d / "run"


def test_missing_model_folder_is_named(run, tmp_path, capsys):
    cfg, _ = run
    missing, out = tmp_path / "no-such-model", tmp_path / "x.parquet"
    assert main("eval-ppl", "--config", cfg, "--model", missing, "--out", out, sets=EVAL) == 2
    err = user_error(capsys, "eval-ppl", missing, "does not exist")
    assert "eval.train_context" not in err                      # the folder is missing, not the context
    assert not out.exists()


def test_truncated_weights_name_the_file_and_the_fix(run, tmp_path, capsys):
    cfg, ref = run
    broken = tmp_path / "run"
    shutil.copytree(ref, broken)
    weights = broken / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "x.parquet"
    assert main("eval-ppl", "--config", cfg, "--model", broken / "final", "--out", out, sets=EVAL) == 2
    user_error(capsys, "eval-ppl", weights, "truncated or corrupted", "rerun the stage")
    assert not out.exists()
    # the same file as posttrain's --init: nothing is created in --out
    post = tmp_path / "post"
    assert main("posttrain", "--config", cfg, "--init", broken, "--out", post) == 2
    user_error(capsys, "posttrain", weights)
    assert not post.exists()
    with pytest.raises(ModelError, match="truncated or corrupted"):   # the library raises the same error
        load_model(broken / "final")


def test_a_run_folder_is_accepted_wherever_a_model_is(run, tmp_path, capsys):
    cfg, ref = run
    assert resolve_model_path(ref) == str(ref / "final")
    assert resolve_model_path(ref / "final") == str(ref / "final")
    out = tmp_path / "ppl.parquet"
    assert main("eval-ppl", "--config", cfg, "--model", ref, "--out", out, sets=EVAL) == 0
    assert out.exists()
    assert main("eval-state-stats", "--config", cfg, "--model", ref, "--out", tmp_path / "s.parquet",
                sets=EVAL + ["eval.state_stats.length=16", "eval.state_stats.num_sequences=1",
                             "eval.state_stats.stride=8"]) == 0
    load_model(ref)                                               # model.init_from takes one too
    assert main("pretrain", "--config", cfg, "--out", tmp_path / "from-run",
                sets=[f"model.init_from={ref}", "train.steps=1", "train.checkpoint_every=1"]) == 0


def test_impossible_eval_length_is_a_config_error(run, tmp_path, capsys):
    cfg, ref = run
    out = tmp_path / "x.parquet"
    assert main("eval-ppl", "--config", cfg, "--model", ref, "--out", out,
                sets=EVAL + ["eval.length=100000000"]) == 2
    user_error(capsys, "eval-ppl", "eval.length", "100000000", "too few")
    assert main("eval-ppl", "--config", cfg, "--model", ref, "--out", out, sets=EVAL + ["eval.length=32"]) == 2
    user_error(capsys, "eval-ppl", "eval.length=32", "training context T=32")
    assert not out.exists()


def test_yaml_syntax_error_names_the_file_and_line(run, tmp_path, capsys):
    _, ref = run
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ntrain:\n  steps: [1, 2\n")
    assert main("eval-ppl", "--config", bad, "--model", ref, "--out", tmp_path / "x.parquet") == 2
    user_error(capsys, "eval-ppl", bad, "line 4", "not valid YAML")
    assert main("pretrain", "--config", bad, "--out", tmp_path / "r") == 2
    user_error(capsys, "pretrain", bad)
    assert not (tmp_path / "r").exists()
    assert main("pretrain", "--config", ref.parent / "cfg.yaml", "--out", tmp_path / "r", sets=["train.steps=[1,"]) == 2
    user_error(capsys, "pretrain", "train.steps=[1,", "not valid YAML")


@pytest.mark.parametrize("damage", ["truncated shard", "invalid manifest"])
def test_bad_data_leaves_no_run_folder(train_data_root, tmp_path, capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(train_data_root, data)
    (folder,) = [p for p in data.iterdir() if p.is_dir()]
    if damage == "truncated shard":
        shard = sorted(folder.glob("train_*.bin"))[0]
        shard.write_bytes(shard.read_bytes()[:100])
        named = shard
    else:
        (folder / "manifest.json").write_text("{not json")
        named = folder / "manifest.json"
    out = tmp_path / "run"
    assert main("pretrain", "--config", write_config(tmp_path / "cfg.yaml", data), "--out", out) == 2
    user_error(capsys, "pretrain", named, "lengthgen prepare-data")
    assert not out.exists()                                     # no config.yaml / provenance.json half-run


def test_config_errors_checked_before_the_run_folder(train_data_root, tmp_path, capsys):
    cfg = write_config(tmp_path / "cfg.yaml", train_data_root)
    out = tmp_path / "run"
    assert main("pretrain", "--config", cfg, "--out", out, sets=["train.min_lr=1.0"]) == 2   # a Trainer check
    user_error(capsys, "pretrain", "train.min_lr")
    assert main("pretrain", "--config", cfg, "--out", out, sets=["train.stpes=3", "train.lr=x"]) == 2
    user_error(capsys, "pretrain", "train.stpes", "train.lr")   # several schema errors, one line
    assert main("pretrain", "--config", cfg, "--out", out, sets=[f"model.init_from={tmp_path / 'nope'}"]) == 2
    user_error(capsys, "pretrain", tmp_path / "nope")
    assert not out.exists()


def test_task_stage_checks_the_model_before_work(run, tmp_path, capsys):
    cfg, _ = run
    work = tmp_path / "work"
    assert main("task-passkey", "--config", cfg, "--model", tmp_path / "nope", "--out", tmp_path / "pk.json",
                "--work", work, sets=["tasks.passkey.finetune.protocol=standard", "tasks.passkey.lengths=[256]",
                                      "tasks.passkey.samples=1", "tasks.passkey.depths=[0.5]"]) == 2
    user_error(capsys, "task-passkey", tmp_path / "nope")
    assert not work.exists() and not (tmp_path / "pk.json").exists()


def test_bad_out_and_unfinished_run(run, tmp_path, capsys):
    cfg, ref = run
    assert main("eval-ppl", "--config", cfg, "--model", ref, "--out", tmp_path / "x.csv", sets=EVAL) == 2
    user_error(capsys, "eval-ppl", "--out", "x.csv.parquet")
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    assert main("eval-ppl", "--config", cfg, "--model", unfinished, "--out", tmp_path / "x.parquet", sets=EVAL) == 2
    user_error(capsys, "eval-ppl", unfinished, "has not finished")


def test_a_bug_keeps_its_traceback(monkeypatch):
    from lengthgen.stages import prepare_data

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(prepare_data, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["prepare-data"])
    assert issubclass(ModelError, UserError) and issubclass(ModelError, ValueError)
