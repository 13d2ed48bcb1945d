"""Exact resume: ``kill -9`` at a random moment, rerun, and the losses are the uninterrupted run's
bit for bit (CPU, float32), for the zero initial state and every stateful intervention."""

import os
import signal
import subprocess
import sys
import time

import _train_helpers
import pytest
import torch
import yaml

from lengthgen.config import load_config
from lengthgen.train import RunDir, read_metrics, run_training

STEPS = 12


def tiny_config(train_data_root, intervention):
    components = "all" if intervention == "tbtt" else "ssm"
    return _train_helpers.tiny_config(train_data_root, {"name": intervention, "components": components},
                                      steps=STEPS, checkpoint_every=3)


@pytest.fixture
def one_thread():
    """The same intra-op thread count as the OMP_NUM_THREADS=1 subprocess (same reduction order)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def metric_lines(path):
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def pretrain_until(cfg_path, out, lines):
    """``lengthgen pretrain`` in a one-thread subprocess, returned once ``lines`` steps are logged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lengthgen.cli", "pretrain", "--config", str(cfg_path),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while metric_lines(out / "metrics.jsonl") < lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    return proc


@pytest.mark.parametrize("intervention", ["zero", "state_passing", "fitted_noise", "tbtt"])
def test_kill9_then_rerun_reproduces_the_losses(intervention, train_data_root, tmp_path, one_thread):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(train_data_root, intervention)))
    cfg = load_config(cfg_path)
    run_training(cfg, tmp_path / "ref", log=lambda *a: None)
    reference = read_metrics(tmp_path / "ref" / "metrics.jsonl")

    out = tmp_path / "killed"
    proc = pretrain_until(cfg_path, out, lines=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not (out / "final").exists()
    killed_at = metric_lines(out / "metrics.jsonl")
    checkpoint = RunDir(out).latest()
    assert checkpoint is not None and killed_at < STEPS

    run_training(cfg, out, log=lambda *a: None)              # the rerun continues from `checkpoint`
    resumed = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [r[key] for r in resumed] == [r[key] for r in reference], key


@pytest.mark.parametrize("intervention,signum", [("state_passing", signal.SIGTERM), ("zero", signal.SIGUSR1)])
def test_stop_signal_checkpoints_the_step_then_the_rerun_resumes_exactly(intervention, signum, train_data_root,
                                                                         tmp_path, one_thread):
    """SIGTERM (``timeout``, SLURM's time limit) or SIGUSR1 mid-run: the step in flight finishes, a
    checkpoint of exactly that step is written, the CLI exits with 128 + the signal, and the rerun
    gives the uninterrupted run's losses bit for bit."""
    cfg_path = tmp_path / "cfg.yaml"
    config = tiny_config(train_data_root, intervention)
    config["train"]["checkpoint_every"] = 1000  # only the stop writes a checkpoint before the end
    cfg_path.write_text(yaml.safe_dump(config))
    cfg = load_config(cfg_path)
    run_training(cfg, tmp_path / "ref", log=lambda *a: None)
    reference = read_metrics(tmp_path / "ref" / "metrics.jsonl")

    out = tmp_path / "stopped"
    proc = pretrain_until(cfg_path, out, lines=3)
    proc.send_signal(signum)
    proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert proc.returncode == 128 + signum, err
    stopped_at = metric_lines(out / "metrics.jsonl")
    assert 3 <= stopped_at < STEPS and not (out / "final").exists()
    assert f"stopped by {signal.Signals(signum).name} after step {stopped_at} of {STEPS}" in err
    assert "run the same command again" in err and "Traceback" not in err
    assert RunDir(out).latest().name == f"step_{stopped_at:08d}"

    run_training(cfg, out, log=lambda *a: None)
    resumed = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [r[key] for r in resumed] == [r[key] for r in reference], key


def test_stop_signals_are_restored_after_training():
    from lengthgen.train.stop import STOP_SIGNALS, StopSignals

    before = [signal.getsignal(s) for s in STOP_SIGNALS]
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)   # a second signal does not replace the first
        assert stop.signum == signal.SIGUSR1
    assert [signal.getsignal(s) for s in STOP_SIGNALS] == before
