"""Section ``profile``: where the time of a call goes, for the ratios that miss their goals.

* ``forward``: mamba2-130m (bf16 autocast) on one streamed chunk (batch 1, ``CHUNK`` tokens, the
  ``eval`` section's chunk) and at the training shape. ``launch_s`` is the time until the call
  returns, before any synchronisation (the host's cost of issuing the work); ``total_s`` the time
  after synchronising. ``launch_s`` close to ``total_s`` means the host, not the GPU, sets the pace.
* ``interventions``: one training step of each intervention through ``Trainer._train_step`` (the
  ``interventions`` section's model and batch).

For each, ``torch.profiler`` over one call after warm-up: the operators with the most self host
time and self device time, the number of kernel launches and of host-device synchronisations and
copies (the CUDA runtime/driver calls that block the host).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import Options, SectionFile, autocast, free_memory, guarded, sync, synthetic_ids

NAME = "profile"
TOP = 20
LAUNCH_KEYS = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
BLOCKING_KEYS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync",
                 "cudaMemcpy")


def _self_device_us(event) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def profile_table(fn, options: Options) -> dict:
    """One call of ``fn`` under ``torch.profiler``: top operators, launches, blocking calls."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if options.is_cuda else [])
    with profile(activities=activities) as prof:
        fn()
        sync(options.torch_device)
    events = prof.key_averages()

    def row(e) -> dict:
        return {"name": e.key, "count": e.count, "self_host_us": e.self_cpu_time_total,
                "self_device_us": _self_device_us(e)}

    rows = [row(e) for e in events]
    count = lambda keys: sum(r["count"] for r in rows if r["name"] in keys)  # noqa: E731
    return {"top_host": sorted(rows, key=lambda r: -r["self_host_us"])[:TOP],
            "top_device": sorted(rows, key=lambda r: -r["self_device_us"])[:TOP],
            "host_us": sum(r["self_host_us"] for r in rows),
            "device_us": sum(r["self_device_us"] for r in rows),
            "kernel_launches": count(LAUNCH_KEYS),
            "blocking_calls": {k: n for k in BLOCKING_KEYS if (n := count((k,)))}}


def launch_and_total(fn, options: Options, iters: int) -> dict:
    """Median seconds until ``fn`` returns (no synchronisation) and until the device is done."""
    launch, total = [], []
    for _ in range(iters):
        sync(options.torch_device)
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        sync(options.torch_device)
        launch.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    return {"launch_s": statistics.median(launch), "total_s": statistics.median(total), "iters": iters}


def forward_case(model, rows: int, length: int, carry_state: bool, options: Options) -> dict:
    """One forward of ``rows`` x ``length`` tokens, from a given state (a streamed chunk) or none."""
    ids = synthetic_ids(rows, length, model.config.vocab_size, options.torch_device)
    st = model.zero_state(rows) if carry_state else None

    @torch.no_grad()
    def fn():
        with autocast(options):
            model(ids, state=st)

    fn()  # warm-up (autotune)
    return {"rows": rows, "length": length, **launch_and_total(fn, options, options.pick(5, 3, 1)),
            "profile": profile_table(fn, options)}


def run(options: Options, section: SectionFile, args=None) -> None:
    from bench.long_eval import CHUNK
    from lengthgen.evaluate import runtime
    from lengthgen.models import build_model

    preset = options.preset("mamba2-130m")
    model = runtime.prepare_model(build_model("mamba2", preset, seed=0), options.torch_device, "bf16")
    chunk = options.pick(CHUNK, CHUNK, 128)
    rows, context = options.pick((8, 2048), (4, 2048), (2, 64))
    section.data.update(model=preset)
    section.record("forward_streamed_chunk", guarded(lambda: forward_case(model, 1, chunk, carry_state=True, options=options)))
    section.record("forward_training_shape", guarded(lambda: forward_case(model, rows, context, carry_state=False, options=options)))
    del model
    free_memory()
    with tempfile.TemporaryDirectory() as tmp:
        section.record("interventions", guarded(lambda: intervention_steps(options, Path(tmp))))
    free_memory()


def intervention_steps(options: Options, tmp: Path) -> dict:
    from bench.intervention_overhead import INTERVENTIONS, make_trainers, shapes

    trainers, shape = make_trainers(options, tmp, *shapes(options)["mamba2_host_bound"])
    out = dict(shape)
    for name in INTERVENTIONS:
        trainer = trainers[name]
        for step in range(2):  # warm-up: compile, fill the passed states / fitted statistics
            trainer._train_step(step)
        out[name] = profile_table(lambda: trainer._train_step(2), options)
    for t in trainers.values():
        t.metrics.close()
    return out
