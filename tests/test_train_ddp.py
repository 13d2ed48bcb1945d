"""``torchrun --nproc_per_node 2`` (gloo, CPU) trains the same run as one process with the same
global batch: losses agree to 1e-9 relative in float64 (only the order of the gradient sums
differs), including state passing (its passed states and zeroing are per global batch row) and
fitted noise (its statistics are all-reduced). A checkpoint of the 2-process run (gathered from
both ranks by rank 0) continues in one process."""

import os
import shutil
import subprocess
import sys

import _train_helpers
import pytest
import yaml

from lengthgen.config import load_config
from lengthgen.train import RunDir, read_metrics, run_training

TOLERANCE = 1e-9


def tiny_config(train_data_root, intervention, steps):
    return _train_helpers.tiny_config(train_data_root, {"name": intervention}, batch_tokens=256, steps=steps,
                                      precision="fp64", checkpoint_every=3)


def torchrun(cfg_path, out, *sets):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lengthgen.cli", "pretrain", "--config", str(cfg_path), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("intervention", ["state_passing", "fitted_noise"])
def test_two_gloo_processes_match_one(intervention, train_data_root, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(train_data_root, intervention, steps=6)))
    cfg = load_config(cfg_path)
    run_training(cfg, tmp_path / "one", log=lambda *a: None)
    one = [r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")]

    # 2 ranks x 2 micro-batches of 2 rows = the single process's 4 micro-batches of 2 rows
    out = tmp_path / "two"
    torchrun(cfg_path, out)
    two = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in two] == list(range(1, 7))
    assert [r["loss"] for r in two] == pytest.approx(one, rel=TOLERANCE)
    state = RunDir.load_trainer_state(RunDir(out).latest())
    assert state["world_size"] == 2
    if intervention == "state_passing":
        assert sorted(state["intervention"]["passed"]) == [0, 2, 4, 6]   # every slot of both ranks

    # roll the 2-process run back to its step-3 checkpoint and finish it in this one process
    (out / "checkpoints" / "latest").write_text("step_00000003\n")
    shutil.rmtree(out / "final")
    run_training(cfg, out, log=lambda *a: None)
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl")] == pytest.approx(one, rel=TOLERANCE)


def test_sigterm_to_torchrun_stops_both_ranks_after_the_same_step(train_data_root, tmp_path):
    """torchrun forwards SIGTERM to its workers; the ranks agree on the step to stop after, rank 0
    writes that step's checkpoint (both ranks' passed states), and the rerun finishes the run as one
    uninterrupted process would."""
    import signal
    import time

    steps = 40
    cfg_path = tmp_path / "cfg.yaml"
    config = tiny_config(train_data_root, "state_passing", steps=steps)
    config["train"]["checkpoint_every"] = 1000
    cfg_path.write_text(yaml.safe_dump(config))
    cfg = load_config(cfg_path)
    run_training(cfg, tmp_path / "one", log=lambda *a: None)
    one = [r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")]

    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lengthgen.cli", "pretrain", "--config", str(cfg_path), "--out", str(out)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 240
    while (not metrics.exists() or metrics.read_text().count("\n") < 2) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=240)[1]
    assert proc.returncode != 0 and not (out / "final").exists()
    stopped_at = metrics.read_text().count("\n")
    assert 2 <= stopped_at < steps, err[-3000:]
    assert f"stopped by SIGTERM after step {stopped_at} of {steps}" in err, err[-3000:]
    assert RunDir(out).latest().name == f"step_{stopped_at:08d}"
    assert RunDir.load_trainer_state(RunDir(out).latest())["world_size"] == 2

    torchrun(cfg_path, out)
    assert [r["loss"] for r in read_metrics(out / "metrics.jsonl")] == pytest.approx(one, rel=TOLERANCE)
