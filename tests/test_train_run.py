"""The pretrain / posttrain stages and the Trainer API on a tiny CPU model: run folder, no-op
rerun, config mismatch, bad input, divergence, a full disk, post-training, gradient accumulation."""

import errno
import json

import _train_helpers
import pytest
import torch
import yaml

from lengthgen import cli
from lengthgen.config import ConfigError, load_config, resolve
from lengthgen.data import ContiguousStreams, ShuffledWindows, open_dataset
from lengthgen.interventions import TBTT
from lengthgen.models import build_model, load_model
from lengthgen.provenance import REQUIRED
from lengthgen.train import Batch, RunDir, Trainer, read_metrics, run_training
from lengthgen.train.checkpoint import identity_hash


def tiny_config(train_data_root, **train):
    return _train_helpers.tiny_config(train_data_root, **{"steps": 6, "checkpoint_every": 2, **train})


@pytest.fixture
def config_file(tmp_path, train_data_root):
    def make(**train):
        path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(tiny_config(train_data_root, **train)))
        return path
    return make


def stage(name, cfg, out, *sets, init=None):
    argv = [name, "--config", str(cfg), "--out", str(out)] + (["--init", str(init)] if init else [])
    for s in sets:
        argv += ["--set", s]
    return cli.main(argv)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, train_data_root):
    """One finished 6-step pretraining run, shared by the tests below."""
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(train_data_root, milestones=[256, "0.002x"], keep_checkpoints=2)))
    assert stage("pretrain", cfg, d / "run") == 0
    return cfg, d / "run"


def test_run_folder_layout(reference):
    cfg, run = reference
    names = sorted(p.name for p in run.iterdir())
    assert names == ["checkpoints", "config.yaml", "final", "metrics.jsonl", "milestones", "provenance.json"]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all({"step", "loss", "lr", "tokens", "tokens_per_s"} <= set(r) for r in rows)
    assert [r["tokens"] for r in rows] == [128 * s for s in range(1, 7)]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["lr"] == pytest.approx(1e-5)                 # cosine ends at min_lr
    # keep_checkpoints=2 keeps the newest two and the milestones' (step 2); latest names the last
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["latest", "step_00000002", "step_00000004", "step_00000006"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    # milestones: 256 tokens -> step 2; 0.002x = 0.04 tokens per parameter: step 6
    model = load_model(run / "final")
    assert (run / "milestones" / "256" / "config.json").exists() and (run / "milestones" / "0.002x").is_dir()
    ckpt = load_model(run / "checkpoints" / "step_00000006")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ckpt.state_dict().values()))
    prov = json.loads((run / "provenance.json").read_text())
    assert set(REQUIRED) <= set(prov) and prov["stage"] == "pretrain"
    assert "study" not in yaml.safe_load((run / "config.yaml").read_text())   # a run's config, not the study's
    resolved = load_config(run / "config.yaml")                  # the saved config is complete and valid
    assert identity_hash(resolved) == identity_hash(load_config(cfg))
    trainer_state = RunDir.load_trainer_state(run / "checkpoints" / "step_00000006")
    assert {"optimizer", "rng", "batches", "intervention", "step"} <= set(trainer_state)
    assert {"torch", "numpy", "python"} <= set(trainer_state["rng"])


def test_rerun_is_noop_and_other_config_is_refused(reference, capsys):
    cfg, run = reference
    before = (run / "metrics.jsonl").read_bytes(), (run / "final" / "model.safetensors").stat().st_mtime_ns
    assert stage("pretrain", cfg, run) == 0
    assert "already finished" in capsys.readouterr().out
    assert ((run / "metrics.jsonl").read_bytes(), (run / "final" / "model.safetensors").stat().st_mtime_ns) == before
    # a workflow that deleted a rerun job's outputs (final/, milestones/) gets them back from checkpoints
    (run / "final" / "model.safetensors").unlink()
    (run / "milestones" / "256" / "model.safetensors").unlink()
    assert stage("pretrain", cfg, run) == 0
    assert (run / "metrics.jsonl").read_bytes() == before[0]
    assert torch.equal(load_model(run / "final").lm_head.weight,
                       load_model(run / "checkpoints" / "step_00000006").lm_head.weight)
    assert torch.equal(load_model(run / "milestones" / "256").lm_head.weight,
                       load_model(run / "checkpoints" / "step_00000002").lm_head.weight)
    assert stage("pretrain", cfg, run, "study.name=another-study") == 0   # the study grid is not the run's
    assert "already finished" in capsys.readouterr().out
    assert stage("pretrain", cfg, run, "train.steps=8") == 2            # a foreign run folder: a user error
    err = capsys.readouterr().err
    assert "different config" in err and "differing keys: train.steps)" in err


def test_unknown_key_and_bad_precision(config_file, tmp_path, capsys):
    assert stage("pretrain", config_file(), tmp_path / "r", "train.stpes=3") == 2
    assert "train.stpes" in capsys.readouterr().err
    assert stage("pretrain", config_file(precision="bf16"), tmp_path / "r2") == 2
    assert "train.precision=bf16 needs CUDA" in capsys.readouterr().err


def test_missing_data_says_how_to_prepare_it(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "no-data")))
    assert stage("pretrain", cfg, tmp_path / "r") == 2
    assert "lengthgen prepare-data" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()                         # nothing written on bad input


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(config_file, tmp_path, capsys):
    out = tmp_path / "nan"
    assert stage("pretrain", config_file(lr=1e30, checkpoint_every=1, warmup_frac=0.0), out) == 1
    err = capsys.readouterr().err
    assert "diverged at step" in err
    step = int(err.split("diverged at step ")[1].split(":")[0])
    assert step >= 2
    latest = RunDir(out).latest()
    assert latest.name == f"step_{step - 1:08d}"
    assert len(read_metrics(out / "metrics.jsonl")) == step - 1
    load_model(latest)                                          # the kept checkpoint is complete
    assert not (out / "final").exists()


def test_stop_signal_in_the_last_step_finishes_the_run_then_stops(config_file, tmp_path, capsys, monkeypatch):
    """A signal caught during the last step: the run is complete (final/ written, its checkpoint the
    last), the stage exits 143 before anything after training, and the rerun has nothing to do."""
    import signal

    from lengthgen.train import Trainer

    monkeypatch.setattr(Trainer, "_stop_signal", lambda self, stop: signal.SIGTERM if self.step == self.steps else 0)
    out = tmp_path / "last"
    assert stage("pretrain", config_file(), out) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM after step 6 of 6" in capsys.readouterr().err
    assert (out / "final").is_dir() and RunDir(out).latest().name == "step_00000006"
    monkeypatch.undo()
    assert stage("pretrain", config_file(), out) == 0
    assert "already finished" in capsys.readouterr().out


def test_full_disk_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    ref_cfg, ref_run = reference
    cfg = load_config(ref_cfg)
    out = tmp_path / "full"
    import lengthgen.io

    real_save, calls = lengthgen.io.torch_save, []

    def failing_save(obj, path):
        calls.append(path)
        if len(calls) == 2:                                    # the second checkpoint: disk full mid-write
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path)

    monkeypatch.setattr(lengthgen.io, "torch_save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        run_training(cfg, out, log=lambda *a: None)
    assert RunDir(out).latest().name == "step_00000002"
    assert not (out / "checkpoints" / "step_00000004").exists()
    assert not list((out / "checkpoints").glob(".*"))          # no half-written folder left
    monkeypatch.setattr(lengthgen.io, "torch_save", real_save)
    run_training(cfg, out, log=lambda *a: None)               # the rerun resumes from step 2
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl")] == \
        [r["loss"] for r in read_metrics(ref_run / "metrics.jsonl")]


def test_posttrain_from_a_run(reference, tmp_path, capsys):
    cfg, run = reference
    out = tmp_path / "sp"
    assert stage("posttrain", cfg, out, "intervention.name=state_passing", "train.steps=3",
                 "train.milestones=[]", init=run) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(run / "final") and saved["intervention"]["name"] == "state_passing"
    post = read_metrics(out / "metrics.jsonl")
    pre = read_metrics(run / "metrics.jsonl")
    assert len(post) == 3 and post[0]["loss"] < pre[0]["loss"] - 0.1   # starts from the trained weights
    trainer_state = RunDir.load_trainer_state(out / "checkpoints" / "step_00000003")
    assert sorted(trainer_state["intervention"]["passed"]) == [0, 2]    # one passed state per micro-batch slot
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    assert stage("posttrain", cfg, tmp_path / "x", init=unfinished) == 2
    assert "has not finished" in capsys.readouterr().err


def test_gradient_accumulation_and_masked_targets(train_data_root, tmp_path):
    """Trainer API with a custom batch source: accumulation over 1 or 4 micro-batches gives the same
    losses (float64), and step 1's loss is the mean CE over the scored targets only."""
    tokens = open_dataset(resolve(tiny_config(train_data_root))).train

    class Masked(ShuffledWindows):           # a copying-task-like source: the first half is not scored
        def __next__(self):
            x = super().__next__()
            targets = x[:, 1:].clone()
            targets[:, :16] = -100
            return Batch(x[:, :-1], targets)

    losses, first_batch = {}, None
    for micro in (4, 1):
        cfg = resolve(tiny_config(train_data_root, micro_batch=micro, steps=3, precision="fp64"))
        model = build_model("mamba2", "tiny", seed=0, vocab_size=256, **cfg["model"]["overrides"])
        if first_batch is None:
            first_batch = next(Masked(tokens, context=32, batch_size=4, seed=0))
            reference = model.double()
            logits, _ = reference(first_batch.inputs)
            expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         first_batch.targets.reshape(-1), ignore_index=-100)
        trainer = Trainer(model, Masked(tokens, context=32, batch_size=4, seed=0), cfg, tmp_path / f"m{micro}",
                          log=lambda *a: None)
        trainer.fit()
        losses[micro] = [r["loss"] for r in read_metrics(tmp_path / f"m{micro}" / "metrics.jsonl")]
    assert losses[4][0] == pytest.approx(expected.item(), rel=1e-12)
    assert losses[1] == pytest.approx(losses[4], rel=1e-10)


def test_tbtt_needs_the_contiguous_sampler(train_data_root, tmp_path):
    cfg = resolve(tiny_config(train_data_root))
    tokens = open_dataset(cfg).train
    model = build_model("mamba2", "tiny", seed=0, vocab_size=256, **cfg["model"]["overrides"])
    with pytest.raises(ConfigError, match="contiguous sampler"):
        Trainer(model, ShuffledWindows(tokens, 32, 4), cfg, tmp_path / "t", TBTT())
    Trainer(model, ContiguousStreams(tokens, 32, 4), cfg, tmp_path / "t", TBTT())


def test_batch_of_the_wrong_shape_is_named(train_data_root, tmp_path):
    cfg = resolve(tiny_config(train_data_root))
    tokens = open_dataset(cfg).train
    model = build_model("mamba2", "tiny", seed=0, vocab_size=256, **cfg["model"]["overrides"])
    trainer = Trainer(model, ShuffledWindows(tokens, context=16, batch_size=4), cfg, tmp_path / "w",
                      log=lambda *a: None)
    with pytest.raises(ValueError, match=r"expected \(4, 32\) \(rows per rank, train.context\)"):
        trainer.fit()


def test_host_batch_checks_match_torch_on_strided_views():
    """The graphed step's host-side checks (numpy, no torch thread pool) count and bound the same
    values as torch does, on the non-contiguous (rows, T) views a (rows, T + 1) batch gives."""
    from lengthgen.models.base import _id_range
    from lengthgen.train.trainer import IGNORE_INDEX, count_scored

    rows = torch.randint(-5, 300, (64, 33), generator=torch.Generator().manual_seed(0))
    rows[rows < 0] = IGNORE_INDEX
    inputs, targets = rows[:, :-1], rows[:, 1:]
    assert not targets.is_contiguous()
    assert count_scored(targets) == int((targets != IGNORE_INDEX).sum()) > 0
    assert _id_range(inputs) == (int(inputs.min()), int(inputs.max())) == (IGNORE_INDEX, int(inputs.max()))
    assert count_scored(torch.full((2, 3), IGNORE_INDEX)) == 0
