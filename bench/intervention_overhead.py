"""Section ``interventions``: the cost of the initial-state interventions in a training step.

Each intervention runs through the trainer's own step (``Trainer._train_step``: the intervention's
``initial_state`` before the forward, ``observe`` after it, ``end_step`` after the optimizer), on
the same model and batch. Steps of the interventions are interleaved in rounds so drifts of the
clock or temperature hit all of them alike; the per-step time is the median over all rounds.
``overhead[name] = step_time[name] / step_time[zero] - 1``.

Two shapes of mamba2-45m. ``mamba2`` (the ratio): 32 x 2048 tokens per micro-batch, where the GPU
sets the step time, as in any run that fills the GPU. ``mamba2_host_bound``: 8 x 2048 tokens, where
the GPU waits for Python to launch the kernels (mamba2-45m forward + backward: ~90 ms of host time
for ~40 ms of GPU work, ``profile`` section); there an intervention's cost is its host time, and the
step time drifts by up to 15% between runs on the same code, more than the 3% goal.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import Options, SectionFile, free_memory, guarded, sync, synthetic_ids

NAME = "interventions"
INTERVENTIONS = ("zero", "state_passing", "fitted_noise", "tbtt")


class FixedBatches:
    """A resumable batch source yielding one fixed (rows, T + 1) batch; no row ever resets
    (``reset_rows``), so TBTT always carries its state, its costliest case."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids
        self.reset_rows = torch.zeros(ids.shape[0], dtype=torch.bool)

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        return self.ids

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


def train_config(name: str, rows: int, context: int, options: Options) -> dict:
    from lengthgen.config import resolve

    return resolve({
        "train": {"context": context, "batch_tokens": rows * context, "micro_batch": rows, "steps": 10**9,
                  "lr": 1e-4, "precision": "bf16" if options.is_cuda else "fp32", "device": options.device,
                  "progress": False, "checkpoint_every": 10**9},
        "intervention": {"name": name},
    })


def shapes(options: Options) -> dict[str, tuple[int, int]]:
    """(rows, context) per result key: the GPU-bound shape (the ratio's) and the host-bound one."""
    return {"mamba2": options.pick((32, 2048), (16, 2048), (4, 64)),
            "mamba2_host_bound": options.pick((8, 2048), (8, 1024), (2, 64))}


def make_trainers(options: Options, tmp: Path, rows: int, context: int) -> tuple[dict, dict]:
    """One ``Trainer`` per intervention sharing one model and one fixed batch; and the shape."""
    from lengthgen.interventions import build_intervention
    from lengthgen.models import build_model
    from lengthgen.train import Trainer

    preset = options.preset("mamba2-45m")
    model = build_model("mamba2", preset, seed=0)
    ids = synthetic_ids(rows, context + 1, model.config.vocab_size, "cpu")
    trainers = {}
    for name in INTERVENTIONS:
        cfg = train_config(name, rows, context, options)
        trainers[name] = Trainer(model, FixedBatches(ids), cfg, tmp / name,
                                 build_intervention(cfg["intervention"], seed=0), log=lambda *a, **k: None)
    return trainers, {"model": preset, "rows": rows, "context": context}


def step_times(options: Options, tmp: Path, rows: int, context: int) -> dict:
    trainers, shape = make_trainers(options, tmp, rows, context)
    rounds, per_round = options.pick((10, 5), (4, 3), (1, 2))
    steps = {name: 0 for name in INTERVENTIONS}
    times: dict[str, list[float]] = {name: [] for name in INTERVENTIONS}

    def run_steps(name: str, n: int) -> list[float]:
        # a step reads its loss back (one synchronisation) but leaves its optimizer kernels queued,
        # so the device is drained before a round: no intervention is billed for another one's tail
        sync(options.torch_device)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            trainers[name]._train_step(steps[name])
            out.append(time.perf_counter() - t0)
            steps[name] += 1
        return out

    for name in INTERVENTIONS:  # warm-up: the first steps compile kernels and fill the passed states
        run_steps(name, 2)
    for _ in range(rounds):
        for name in INTERVENTIONS:
            times[name].extend(run_steps(name, per_round))
    for t in trainers.values():
        t.metrics.close()
    median = {name: statistics.median(v) for name, v in times.items()}
    return {**shape, "steps_timed": len(times["zero"]),
            "step_seconds": median, "step_seconds_all": times,
            "overhead": {name: median[name] / median["zero"] - 1 for name in INTERVENTIONS if name != "zero"}}


def run(options: Options, section: SectionFile, args=None) -> None:
    for key, (rows, context) in shapes(options).items():
        with tempfile.TemporaryDirectory() as tmp:
            section.record(key, guarded(lambda: step_times(options, Path(tmp), rows, context)))
        free_memory()
