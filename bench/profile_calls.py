"""Section ``profile``: where the time of a call goes, for the ratios that miss their goals.

* ``forward``: mamba2-130m (bf16 autocast) on one streamed chunk (batch 1, ``CHUNK`` tokens, the
  ``eval`` section's chunk) and at the training shape. ``launch_s`` is the time until the call
  returns, before any synchronisation (the host's cost of issuing the work); ``total_s`` the time
  after synchronising. ``launch_s`` close to ``total_s`` means the host, not the GPU, sets the pace.
* ``interventions``: one training step of each intervention through ``Trainer._train_step`` (the
  ``interventions`` section's model and batch).
* ``study_steps``: one ``Trainer._train_step`` at the shapes the study trains at: the reduced study's
  m2-m and gla-s at T = 64 (65,536-token steps, ``study_train``'s cases) and Table 1's copying model
  (the ``mamba2-45m`` shape with the 30-token copying vocabulary, 64 rows of 202 tokens). ``step_s``
  (median of 20 steps, each ending with the trainer's synchronisation, ``_min_max`` beside it; the
  step replayed as a CUDA graph where ``train.cuda_graphs`` applies; the copying case reads the
  task's own batches, built on the host as ``task-copying`` builds them, the others one fixed
  batch; ``profile_graphed``: the host's side of one such step) and ``step_s_eager`` (the same step run eagerly)
  beside the eager step's profile and device time say whether the host or the device sets the pace.

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
TOP = 30
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

    wanted = set(getattr(args, "profile_cases", None) or ("forward", "interventions", "study_steps"))
    if "forward" in wanted:
        preset = options.preset("mamba2-130m")
        model = runtime.prepare_model(build_model("mamba2", preset, seed=0), options.torch_device, "bf16")
        chunk = options.pick(CHUNK, CHUNK, 128)
        rows, context = options.pick((8, 2048), (4, 2048), (2, 64))
        section.data.update(model=preset)
        section.record("forward_streamed_chunk",
                       guarded(lambda: forward_case(model, 1, chunk, carry_state=True, options=options)))
        section.record("forward_training_shape",
                       guarded(lambda: forward_case(model, rows, context, carry_state=False, options=options)))
        del model
        free_memory()
    if "interventions" in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            section.record("interventions", guarded(lambda: intervention_steps(options, Path(tmp), args)))
        free_memory()
    if "study_steps" in wanted:  # recorded case by case: a run cut off by a time limit keeps the cases done
        with tempfile.TemporaryDirectory() as tmp:
            cases: dict = {}
            section.record("study_steps", cases)
            study_steps(options, Path(tmp), args, out=cases, on_case=lambda: section.record("study_steps", cases))
        free_memory()


def study_cases(options: Options, models=None) -> list[dict]:
    """study_train's cases at T = 64 (``models``, default m2-m and gla-s), and the copying model of Table 1."""
    from bench import study_train
    from lengthgen.tasks import copying

    class _Args:
        study_models, study_contexts = list(models or ("m2-m", "gla-s")), [options.pick(64, 64, 16)]

    grid, _ = study_train.cases(options, _Args())
    longest = options.pick(100, 100, 8)
    T = copying.row_context(longest)
    grid.append({"key": f"copying:T{T}", "arch": "mamba2", "preset": options.preset("mamba2-45m"),
                 "overrides": {"vocab_size": copying.VOCAB_SIZE}, "context": T, "rows": options.pick(64, 64, 4),
                 "tokens_per_step": options.pick(64, 64, 4) * T,
                 "copying": {"min_length": longest // 2, "max_length": longest}})
    return grid


def study_steps(options: Options, tmp: Path, args=None, out: dict | None = None, on_case=None) -> dict:
    """Per case key: its record, or the error it raised; ``on_case()`` after each case."""
    from bench import study_train

    out = {} if out is None else out
    train = study_train.train_settings(study_train.study_config(), options)
    for case in study_cases(options, getattr(args, "study_models", None)):
        out[case["key"]] = guarded(lambda: study_step_case(options, case, train, tmp))
        free_memory()
        if on_case is not None:
            on_case()
    return out


def study_step_case(options: Options, case: dict, train: dict, tmp: Path) -> dict:
    """One case: the step graphed and eagerly (``train``: the study's train settings)."""
    from bench import study_train
    from lengthgen.models import build_model

    model = build_model(case["arch"], case["preset"], seed=0, **case["overrides"])
    case = {**case, "token_ids": model.config.vocab_size}
    record = {"rows": case["rows"], "context": case["context"], "tokens_per_step": case["tokens_per_step"],
              "params": model.num_parameters(), "batches": "task" if case.get("copying") else "fixed"}
    # the step as it trains (train.cuda_graphs: replayed where it applies), then eagerly: the eager
    # step's profile names the operators behind each kernel, which a graph replay does not
    for suffix, graphs in (("", True), ("_eager", False)):
        spec = {"impl": "ours", "train": {**train, "cuda_graphs": graphs}, "warmup": 3, "steps": 10**6,
                "device": options.device}
        trainer = study_train.make_trainer(model, spec, case, tmp / f"{case['key'].replace(':', '_')}{suffix}",
                                           batches=_task_batches(case))
        for step in range(3):  # warm-up: autotune, graph capture
            trainer._train_step(step)
        times = []
        for step in range(3, 3 + options.pick(20, 10, 2)):
            t0 = time.perf_counter()
            trainer._train_step(step)
            times.append(time.perf_counter() - t0)
        record[f"step_s{suffix}"] = statistics.median(times)
        record[f"step_s{suffix}_min_max"] = [min(times), max(times)]
        record[f"graph_replays{suffix}"] = trainer.graphs.replays if trainer.graphs else 0
        after = 3 + len(times)
        if not graphs:
            record["profile"] = profile_table(lambda: trainer._train_step(after), options)
        else:  # the host's side of a replayed step: what it does between replays
            record["profile_graphed"] = profile_table(lambda: trainer._train_step(after), options)
        trainer.metrics.close()
        if hasattr(trainer.batches, "close"):
            trainer.batches.close()
        del trainer
        free_memory()
    return record


def _task_batches(case: dict):
    """The copying task's own batch source for the copying case (rows built on the host, the next
    batch on a background thread, as ``task-copying`` trains), else None (a fixed batch)."""
    spec = case.get("copying")
    if spec is None:
        return None
    import functools

    from lengthgen.tasks import copying
    from lengthgen.tasks.batches import SeededBatches

    make = functools.partial(copying.train_row, min_length=spec["min_length"], max_length=spec["max_length"])
    return SeededBatches(make, case["rows"], case["context"], seed=0)


def intervention_steps(options: Options, tmp: Path, args=None) -> dict:
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
