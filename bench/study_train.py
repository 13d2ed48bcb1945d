"""Section ``study_train``: training throughput at the reduced study's shapes, alone and with
several training jobs sharing the device, against the code of an earlier commit and against the
reference implementations.

What is timed is the library's own training step, ``lengthgen.train.Trainer._train_step`` (the
LR / weight-decay schedule, the intervention hooks, forward, fp32 cross-entropy, backward, gradient
clipping, AdamW, everything a ``lengthgen pretrain`` step does except writing metrics and
checkpoints), on one fixed in-memory batch of ``train.batch_tokens`` tokens (65,536 in the study:
``rows = batch_tokens // T`` rows of T tokens), with the study's train settings
(config/config.yaml: ``train``, intervention ``zero``, bf16 autocast on CUDA).

Models: ``study.models`` of config/config.yaml, those of ``STUDY_MODELS`` present there (``m2-m``,
``gla-s``; ``m2-s`` where defined), each ``{arch, preset, overrides}``, with the tokenizer's
vocabulary (``data.tokenizer.vocab_size``). Contexts T = 16, 64, 256.

Jobs: every measurement runs in worker processes (``python -m bench.study_train --worker SPEC``),
1, 4 and 8 of them started together on the same device, each its own model, optimizer and batch, as
independent training jobs sharing one GPU (no MPS). Each worker goes through every case (model x T)
in the same order; per case the workers build their trainer and warm up, meet at a file barrier in
a shared folder, run the timed steps together, and meet again before the next case (no worker's
build or warm-up overlaps another's timed window). Per job: the per-step times (CUDA events
recorded between steps, the device synchronized only before and after the timed window; the trainer
itself synchronizes in every step), tokens/s = tokens per step / median step time, the window's
wall clock (``time.time``, comparable between processes of one host) and the peak memory. Per
case and job count: ``aggregate_tokens_per_s`` (the sum of the jobs' tokens/s),
``aggregate_wall_tokens_per_s`` (all timed tokens / the union of the windows) and ``overlap_frac``
(the time all jobs were timing together / that union).

Sides (``IMPLS``): ``ours`` (this tree's ``src/``), ``before`` (the ``src/`` of
``--baseline-commit REV``: extracted with ``git archive`` into a temporary folder, or taken from
``--baseline-tree DIR`` made beforehand with ``python -m bench.study_train --export-baseline REV
DIR`` where the tree has no ``.git``, e.g. on a copied checkout) run by the same worker code with
``PYTHONPATH`` at that ``src/``; and ``reference``: mamba-ssm's ``MambaLMHeadModel`` (Mamba-2) and
fla's ``GLAForCausalLM`` with the same config and weights (``bench/upstream.py``) wrapped so that
the same ``Trainer`` step drives them (the intervention is ``zero``: no state goes in, none is
used). A missing package is recorded as the reason and that side is skipped.

``results.target``: m2-m at T = 64 with 8 jobs (``--tiny``: 2), ours / before aggregate tokens/s:
``ratios.study_train_vs_before`` in bench/report.py. ``--tiny`` (CPU) is a smoke test of the
harness: 2-layer d-32 models, 256 tokens per step, 1 and 2 jobs; never a result.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: import ``bench.*`` from the repository root
    sys.path[0] = str(ROOT)

NAME = "study_train"
CONFIG = ROOT / "config" / "config.yaml"
STUDY_MODELS = ("m2-m", "gla-s", "m2-s")  # those present in study.models are measured
IMPLS = ("ours", "before", "reference")
TARGET_MODEL, TARGET_CONTEXT = "m2-m", 64
# --tiny: the study model's overrides, then these (2 layers, d 32); the preset's small vocabulary
TINY_OVERRIDES = {"mamba2": {"d_model": 32, "n_layers": 2, "d_state": 8, "headdim": 8, "chunk_size": 16},
                  "gla": {"d_model": 32, "n_layers": 2}}
TINY_TOKENS = 256
# the study's train keys that shape a step (the rest: device, precision, steps, ... are set here)
TRAIN_KEYS = ("micro_batch", "lr", "min_lr", "warmup_frac", "betas", "weight_decay", "grad_clip", "compile")
POLL_S = 0.002


# ---------------------------------------------------------------------------- the grid
def contexts(options, args=None) -> list[int]:
    return list(getattr(args, "study_contexts", None) or options.pick((16, 64, 256), (64,), (16, 64)))


def job_counts(options, args=None) -> list[int]:
    return list(getattr(args, "study_jobs", None) or options.pick((1, 4, 8), (1, 8), (1, 2)))


def target_jobs(options) -> int:
    return options.pick(8, 8, 2)


def steps(options) -> tuple[int, int]:
    """(warm-up steps, timed steps) of every job and case."""
    return options.pick((5, 30), (3, 10), (1, 3))


def study_config(path: Path = CONFIG) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def study_models(cfg: Mapping, wanted=None) -> tuple[dict, dict]:
    """({name: {arch, preset, overrides}} to measure, {name: why not} for the others asked for)."""
    models = (cfg.get("study") or {}).get("models") or {}
    names = list(wanted or STUDY_MODELS)
    picked = {n: dict(models[n]) for n in names if n in models}
    missing = {n: "not in config/config.yaml study.models" for n in names if n not in models}
    return picked, missing


def cases(options, args=None, cfg: Mapping | None = None) -> tuple[list[dict], dict]:
    """The measured cases (model x context, in run order) and the models left out with the reason."""
    cfg = study_config() if cfg is None else cfg
    picked, missing = study_models(cfg, getattr(args, "study_models", None))
    batch_tokens = TINY_TOKENS if options.tiny else int(cfg["train"]["batch_tokens"])
    vocab = None if options.tiny else (cfg.get("data", {}).get("tokenizer") or {}).get("vocab_size")
    out = []
    for name, m in picked.items():
        overrides = dict(m.get("overrides") or {})
        if options.tiny:
            overrides.update(TINY_OVERRIDES.get(m["arch"], {"d_model": 32, "n_layers": 2}))
        elif vocab:
            overrides.setdefault("vocab_size", int(vocab))
        for T in contexts(options, args):
            if batch_tokens % T:
                raise ValueError(f"train.batch_tokens={batch_tokens} is not a multiple of the context {T}")
            out.append({"key": f"{name}:T{T}", "model": name, "arch": m["arch"], "preset": m.get("preset", "tiny"),
                        "overrides": overrides, "context": T, "rows": batch_tokens // T,
                        "tokens_per_step": batch_tokens})
    return out, missing


def train_settings(cfg: Mapping, options) -> dict:
    """The study's train keys that change a step, and the precision of this device."""
    train = {k: v for k, v in (cfg.get("train") or {}).items() if k in TRAIN_KEYS}
    train["precision"] = (cfg.get("train") or {}).get("precision", "bf16") if options.is_cuda else "fp32"
    return train


def ours_train_overrides(args=None) -> dict:
    """``--study-set KEY=VALUE`` train keys (values parsed as YAML) for this tree's workers only:
    e.g. ``cuda_graphs=false`` measures this code's step without CUDA graphs."""
    import yaml

    out = {}
    for item in getattr(args, "study_set", None) or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--study-set takes KEY=VALUE (a train key), got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


# ---------------------------------------------------------------------------- the code before
def export_baseline(rev: str, dest: str | Path, repo: Path = ROOT) -> dict:
    """``src/`` of commit ``rev`` into ``dest/src`` (``git archive``), its full hash in ``dest/COMMIT``."""
    dest = Path(dest)
    commit = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    if (dest / "src").exists():
        shutil.rmtree(dest / "src")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=repo, stdout=tar, check=True,
                       stderr=subprocess.PIPE)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(dest, filter="data")
    (dest / "COMMIT").write_text(commit + "\n")
    if not (dest / "src" / "lengthgen" / "__init__.py").is_file():
        raise RuntimeError(f"commit {commit[:10]} has no src/lengthgen/__init__.py")
    return {"rev": rev, "commit": commit}


def _git(repo: Path, *argv: str) -> str:
    try:
        done = subprocess.run(["git", *argv], cwd=repo, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"git {' '.join(argv)} failed: {e}") from None
    if done.returncode:
        raise RuntimeError(f"git {' '.join(argv)} failed (no .git here? make the tree with `python -m "
                           f"bench.study_train --export-baseline REV DIR` where the repository is and pass "
                           f"--baseline-tree DIR): {done.stderr.strip()[:300]}")
    return done.stdout


def baseline_tree(rev: str | None, tree: str | None, tmp: Path) -> dict:
    """{"rev", "commit", "source", "src"}: the tree ``before`` runs, from ``--baseline-tree`` or ``git archive``."""
    if tree:
        tree = Path(tree)
        commit_file = tree / "COMMIT"
        if not (tree / "src" / "lengthgen").is_dir() or not commit_file.is_file():
            raise RuntimeError(f"--baseline-tree {tree} has no src/lengthgen and COMMIT (make it with `python -m "
                               "bench.study_train --export-baseline REV DIR`)")
        commit = commit_file.read_text().strip()
        if rev and not commit.startswith(rev.lower()):
            try:  # a name (HEAD, a branch) where the repository is at hand
                wanted = _git(ROOT, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()
            except RuntimeError:
                wanted = None
            if wanted != commit:
                raise RuntimeError(f"--baseline-tree {tree} holds commit {commit[:10]}, not --baseline-commit {rev}")
        return {"rev": rev or commit, "commit": commit, "source": "--baseline-tree", "src": str(tree / "src")}
    info = export_baseline(rev, tmp / "before")
    return {**info, "source": "git archive", "src": str(tmp / "before" / "src")}


# ---------------------------------------------------------------------------- the parent
def cpu_threads() -> dict:
    """The CPU thread settings the workers inherit: ``OMP_NUM_THREADS`` (unset: torch's default pool,
    one thread per core) and the size of the pool torch starts with it."""
    import torch

    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}


def run(options, section, args=None) -> None:
    from bench.common import error_record

    cfg = study_config()
    grid, missing = cases(options, args, cfg)
    for c in grid:
        c.update(_counts(c))
    warmup, timed = steps(options)
    levels = job_counts(options, args)
    setup = {"config": "config/config.yaml", "models_missing": missing, "contexts": contexts(options, args),
             "jobs": levels, "warmup_steps": warmup, "timed_steps": timed,
             "tokens_per_step": grid[0]["tokens_per_step"] if grid else None,
             "train": train_settings(cfg, options), "ours_train_overrides": ours_train_overrides(args),
             "intervention": "zero", "cpu_threads": cpu_threads(),
             "target": {"model": TARGET_MODEL, "context": TARGET_CONTEXT, "jobs": target_jobs(options)}}
    section.record("setup", setup)
    table = {c["key"]: {**{k: v for k, v in c.items() if k != "key"}, **{i: {} for i in IMPLS}} for c in grid}
    section.record("cases", table)
    launches: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="study_train-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"ours": str(ROOT / "src")}
        before = _before(args, tmp)
        section.record("before", {k: v for k, v in before.items() if k != "src"})
        if "src" in before:
            trees["before"] = before["src"]
        reference = _probe_references(grid)
        section.record("reference", reference)
        for jobs in levels:
            for impl in [i for i in IMPLS if i in (getattr(args, "study_impls", None) or IMPLS)]:
                todo = [c for c in grid if _wanted(impl, c, trees, reference)]
                for c in grid:
                    if c not in todo:
                        table[c["key"]][impl][str(jobs)] = {"skipped": _why_skipped(impl, c, before, reference)}
                if not todo:
                    continue
                try:
                    per_case, launch = launch_jobs(impl, todo, jobs, options, cfg, trees.get(impl, trees["ours"]),
                                                   tmp / f"{impl}-{jobs}", args)
                except Exception as e:  # noqa: BLE001 - the next launch still runs
                    per_case, launch = {c["key"]: error_record(e) for c in todo}, {"error": error_record(e)}
                launches.append({"impl": impl, "jobs": jobs, **launch})
                for key, agg in per_case.items():
                    table[key][impl][str(jobs)] = agg
                section.record("cases", table)
                section.record("launches", launches)
                section.record("target", target(table, options))  # kept if a later launch is cut off
    section.record("target", target(table, options))


def _counts(case: Mapping) -> dict:
    """Parameters and training FLOPs of the case's model (built on the CPU by this tree's code)."""
    from bench import flops
    from lengthgen.models import build_model

    model = build_model(case["arch"], case["preset"], seed=0, **case["overrides"])
    per_token = flops.train_flops(model, case["arch"], 1)
    return {"params": model.num_parameters(), "token_ids": model.config.vocab_size,
            "padded_vocab_size": model.config.padded_vocab_size, "train_flops_per_token": per_token}


def _before(args, tmp: Path) -> dict:
    from bench.common import error_record

    rev, tree = getattr(args, "baseline_commit", None), getattr(args, "baseline_tree", None)
    if not rev and not tree:
        return {"skipped": "no --baseline-commit given"}
    try:
        return baseline_tree(rev, tree, tmp)
    except Exception as e:  # noqa: BLE001 - ours and the reference still run
        return {"rev": rev, **error_record(e)}


def _probe_references(grid: list[dict]) -> dict:
    """model name -> what bench/upstream.py says about its reference (unavailable: the reason)."""
    from bench import upstream

    out = {}
    for c in grid:
        if c["model"] in out:
            continue
        try:
            _, theirs, info = upstream.pair(c["arch"], c["preset"], seed=0, **c["overrides"])
        except Exception as e:  # noqa: BLE001
            from bench.common import error_record

            theirs, info = None, {"unavailable": error_record(e)["error"]}
        out[c["model"]] = info
        del theirs
    return out


def _wanted(impl: str, case: Mapping, trees: Mapping, reference: Mapping) -> bool:
    if impl == "reference":
        return "unavailable" not in reference.get(case["model"], {"unavailable": "?"})
    return impl in trees


def _why_skipped(impl: str, case: Mapping, before: Mapping, reference: Mapping) -> str:
    if impl == "reference":
        return "reference unavailable: " + str(reference.get(case["model"], {}).get("unavailable"))
    return str(before.get("skipped") or before.get("error") or "not run")


def launch_jobs(impl: str, todo: list[dict], jobs: int, options, cfg: Mapping, src: str, work: Path,
                args=None) -> tuple[dict, dict]:
    """Start ``jobs`` workers of ``impl`` together on ``todo``; (case key -> aggregate, launch record)."""
    from bench.common import scrub

    work.mkdir(parents=True)
    warmup, timed = steps(options)
    spec = {"impl": impl, "device": options.device, "jobs": jobs, "src": src, "sync_dir": str(work / "sync"),
            "parent_pid": os.getpid(),
            "train": {**train_settings(cfg, options), **(ours_train_overrides(args) if impl == "ours" else {})},
            "warmup": warmup, "steps": timed,
            "barrier_timeout_s": float(getattr(args, "study_timeout", None) or options.pick(1200, 600, 120)),
            "cases": todo}
    (work / "sync").mkdir()
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))
    procs, logs = [], []
    t0 = time.perf_counter()
    for job in range(jobs):
        log = open(work / f"job{job}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.study_train", "--worker", str(spec_path),
                                       "--job", str(job), "--result", str(work / f"job{job}.json")],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + spec["barrier_timeout_s"] * (len(todo) * 2 + 1)
    aborted = None
    while any(p.poll() is None for p in procs):
        failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
        if (failed or time.monotonic() > deadline) and aborted is None:
            aborted = f"job {failed[0]} exited with status {procs[failed[0]].returncode}" if failed else \
                "timed out"
            (work / "sync" / "abort").write_text(aborted)
            grace = time.monotonic() + 30
        if aborted is not None and time.monotonic() > grace:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.05)
    for log in logs:
        log.close()
    wall = time.perf_counter() - t0
    results = [_read_json(work / f"job{job}.json") for job in range(jobs)]
    tails = {str(j): scrub((work / f"job{j}.log").read_text()[-1500:]) for j, p in enumerate(procs)
             if p.returncode != 0 or results[j] is None}
    launch = {"wall_s": wall, "returncodes": [p.returncode for p in procs], **({"aborted": aborted} if aborted else {}),
              **({"log_tails": tails} if tails else {})}
    if results[0] is not None:
        launch["worker"] = {k: v for k, v in results[0].items() if k != "cases"}
    per_case = {}
    for c in todo:
        got = [None if r is None else r["cases"].get(c["key"]) for r in results]
        per_case[c["key"]] = aggregate(got, c["tokens_per_step"], c.get("train_flops_per_token"))
    return per_case, launch


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def aggregate(per_job: list[dict | None], tokens_per_step: int, flops_per_token: float | None = None) -> dict:
    """One case at one job count from its jobs' records: per-job and aggregate tokens/s."""
    from bench.common import PEAK_BF16_FLOPS

    jobs = len(per_job)
    bad = {str(j): (r or {}).get("error") or (r or {}).get("unavailable") or "no result (the worker died)"
           for j, r in enumerate(per_job) if r is None or "tokens_per_s" not in r}
    out: dict[str, Any] = {"jobs": jobs, "per_job": per_job}
    if bad:
        unavailable = [r for r in per_job if r and "unavailable" in r]
        key = "unavailable" if unavailable and len(unavailable) == jobs else "error"
        return {**out, key: f"{len(bad)} of {jobs} jobs: " + "; ".join(f"job {j}: {e}" for j, e in bad.items())[:2000]}
    rates = [r["tokens_per_s"] for r in per_job]
    start, end = min(r["wall_start"] for r in per_job), max(r["wall_end"] for r in per_job)
    together = min(r["wall_end"] for r in per_job) - max(r["wall_start"] for r in per_job)
    union = end - start
    timed = sum(r["steps_timed"] for r in per_job) * tokens_per_step
    agg = sum(rates)
    peaks = [r.get("peak_mem_bytes") for r in per_job]
    out.update(per_job_tokens_per_s=rates, aggregate_tokens_per_s=agg,
               aggregate_wall_tokens_per_s=timed / union if union > 0 else None,
               overlap_frac=max(together, 0.0) / union if union > 0 else None,
               median_step_s=statistics.median(r["median_step_s"] for r in per_job),
               peak_mem_bytes_per_job=peaks if any(p is not None for p in peaks) else None,
               aggregate_mfu=agg * flops_per_token / PEAK_BF16_FLOPS if flops_per_token else None)
    return out


def target(table: Mapping, options) -> dict:
    """The issue's number: ours / before aggregate tokens/s of m2-m at T = 64 with 8 jobs (tiny: 2)."""
    jobs = target_jobs(options)
    key = f"{TARGET_MODEL}:T{TARGET_CONTEXT}"
    out: dict[str, Any] = {"case": key, "jobs": jobs}
    for impl in ("ours", "before", "reference"):
        out[f"{impl}_aggregate_tokens_per_s"] = (((table.get(key) or {}).get(impl) or {}).get(str(jobs)) or {}) \
            .get("aggregate_tokens_per_s")
    a, b, r = (out[f"{i}_aggregate_tokens_per_s"] for i in ("ours", "before", "reference"))
    out["ratio_vs_before"] = a / b if a and b else None
    out["ratio_vs_reference"] = a / r if a and r else None
    if out["ratio_vs_before"] is None:
        out["why_no_ratio"] = f"{key} with {jobs} jobs not measured on both sides (ours, before)"
    return out


# ---------------------------------------------------------------------------- the worker
class Aborted(RuntimeError):
    pass


def barrier(sync_dir: Path, name: str, job: int, jobs: int, timeout_s: float, parent_pid: int | None = None) -> None:
    """Wait until every job has reached ``name`` (files ``name.<job>`` in ``sync_dir``); give up when
    the launch is aborted, the section's process is gone, or after ``timeout_s``."""
    (sync_dir / f"{name}.{job}").touch()
    deadline = time.monotonic() + timeout_s
    waiting = [sync_dir / f"{name}.{j}" for j in range(jobs)]
    while True:
        waiting = [p for p in waiting if not p.exists()]
        if not waiting:
            return
        if (sync_dir / "abort").exists():
            raise Aborted((sync_dir / "abort").read_text())
        if parent_pid is not None and os.getppid() != parent_pid:
            raise Aborted("the section's process is gone")
        if time.monotonic() > deadline:
            raise Aborted(f"barrier {name}: {len(waiting)} jobs missing after {timeout_s:.0f} s")
        time.sleep(POLL_S)


class RefAdapter:
    """Wraps a reference model (mamba-ssm, fla) in our call: ``model(ids, state=None) -> (logits, final)``."""

    @staticmethod
    def wrap(theirs, kind: str):
        import torch
        from torch import nn

        from bench import upstream

        from lengthgen.models.base import check_token_ids

        logits_of = upstream.logits_of(kind)
        vocab = next(m.num_embeddings for m in theirs.modules() if isinstance(m, nn.Embedding))

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = theirs

            def check_input_ids(self, ids, token_range=True):  # the trainer checks a batch before a replay
                check_token_ids(ids, vocab, token_range)

            def forward(self, ids, state=None):
                if state is not None:
                    raise ValueError("the reference models take no initial state (intervention zero only)")
                logits = logits_of(self.inner, ids)
                return logits, torch.zeros((), device=logits.device)

        return Wrapped()


def build_model(spec: Mapping, case: Mapping):
    """(model, setups, info): our model from the worker's ``lengthgen``, or the wrapped reference and
    the ways to run it (mamba-ssm: its code paths, tried in order)."""
    if spec["impl"] != "reference":
        from lengthgen.models import build_model as build

        return build(case["arch"], case["preset"], seed=0, **case["overrides"]), [("default", None)], {}
    from bench import upstream

    _, theirs, info = upstream.pair(case["arch"], case["preset"], seed=0, **case["overrides"])
    if theirs is None:
        return None, [], info
    kind = upstream.reference_kind(case["arch"])
    setups = upstream.mamba_ssm_variants(theirs) if kind == "mamba_ssm" else [("default", None)]
    return RefAdapter.wrap(theirs, kind), setups, info


def make_trainer(model, spec: Mapping, case: Mapping, tmp: Path, batches=None):
    """A ``Trainer`` for ``case`` on ``batches`` (default: one fixed synthetic batch)."""
    from bench.common import synthetic_ids
    from bench.intervention_overhead import FixedBatches
    from lengthgen.config import resolve
    from lengthgen.interventions import build_intervention
    from lengthgen.train import Trainer

    rows, T = case["rows"], case["context"]
    train = {**spec["train"], "context": T, "batch_tokens": rows * T, "steps": spec["warmup"] + spec["steps"],
             "device": spec["device"], "progress": False, "checkpoint_every": 10**9}
    if train.get("lr") is None:
        from lengthgen.models import preset_lr

        train["lr"] = preset_lr(case["arch"], case["preset"])
    cfg = resolve({"seed": 0, "train": train, "intervention": {"name": "zero"}})
    ids = synthetic_ids(rows, T + 1, case["token_ids"], "cpu")
    batches = FixedBatches(ids) if batches is None else batches
    return Trainer(model, batches, cfg, tmp, build_intervention(cfg["intervention"], seed=0),
                   log=lambda *a, **k: None)


def timed_steps(trainer, first_step: int, n: int, device) -> dict:
    """``n`` trainer steps; per-step times from CUDA events between the steps (perf_counter on the CPU)."""
    import torch

    cuda = device.type == "cuda"
    losses, trainer_s = [], []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    marks = []
    wall_start, t0 = time.time(), time.perf_counter()
    if cuda:
        events[0].record()
    else:
        marks.append(t0)
    for i in range(n):
        m = trainer._train_step(first_step + i)
        if cuda:
            events[i + 1].record()  # no synchronize here: the device is waited for once, after the window
        else:
            marks.append(time.perf_counter())
        losses.append(m["loss"])
        trainer_s.append(trainer.layout.tokens_per_step / m["tokens_per_s"])
    if cuda:
        torch.cuda.synchronize(device)
    window = time.perf_counter() - t0
    wall_end = time.time()
    step_s = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(n)] if cuda else \
        [b - a for a, b in zip(marks, marks[1:])]
    tokens = trainer.layout.tokens_per_step
    median = statistics.median(step_s)
    return {"steps_timed": n, "step_s": step_s, "median_step_s": median, "min_step_s": min(step_s),
            "tokens_per_s": tokens / median, "window_s": window, "window_tokens_per_s": n * tokens / window,
            "wall_start": wall_start, "wall_end": wall_end, "trainer_median_step_s": statistics.median(trainer_s),
            "loss_first": losses[0], "loss_last": losses[-1],
            "losses_finite": all(math.isfinite(v) for v in losses),
            "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
            "graph_replays": getattr(getattr(trainer, "graphs", None), "replays", None),
            "graph_capture_error": getattr(getattr(trainer, "graphs", None), "capture_error", None)}


def run_case(spec: Mapping, case: Mapping, tmp: Path) -> tuple[dict, Any]:
    """Build and warm up one case; (record so far, the trainer or None)."""
    from bench.common import error_record

    model, setups, info = build_model(spec, case)
    if model is None:
        return {"unavailable": info.get("unavailable", "reference unavailable")}, None
    attempts = []
    for name, setup in setups:
        try:
            if setup is not None:
                setup()
            trainer = make_trainer(model, spec, case, tmp / f"{case['key'].replace(':', '_')}-{len(attempts)}")
            for s in range(spec["warmup"]):
                trainer._train_step(s)
            record = {"variant": name, "attempts": attempts} if spec["impl"] == "reference" else {}
            return {**record, **({"reference": info} if info else {})}, trainer
        except Exception as e:  # noqa: BLE001 - the next code path of the reference, or the error
            attempts.append({"variant": name, "error": error_record(e)["error"]})
            trainer = None
            _free()
    return {"error": attempts[-1]["error"] if attempts else "nothing to run", "attempts": attempts}, None


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker(spec_path: str, job: int, result_path: str) -> int:
    import torch

    from bench.common import error_record, scrub

    spec = json.loads(Path(spec_path).read_text())
    sync_dir, jobs, timeout = Path(spec["sync_dir"]), spec["jobs"], spec["barrier_timeout_s"]
    parent = spec.get("parent_pid")
    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(1)  # the CPU smoke test: jobs share 2 cores
    import lengthgen

    src = Path(spec["src"]).resolve()
    got = Path(lengthgen.__file__).resolve()
    if src not in got.parents:
        raise RuntimeError(f"the worker imported lengthgen from {scrub(str(got))}, not from the tree it was "
                           f"started for ({scrub(str(src))}): check PYTHONPATH")
    out = {"job": job, "jobs": jobs, "impl": spec["impl"], "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
           "lengthgen": str(got.relative_to(src.parent)), "cases": {}}

    def save() -> None:
        tmp = Path(result_path + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(result_path)

    save()
    with tempfile.TemporaryDirectory(prefix=f"study_train-job{job}-") as tmp_name:
        for case in spec["cases"]:
            key = case["key"]
            trainer = None
            try:
                record, trainer = run_case(spec, case, Path(tmp_name))
            except Exception as e:  # noqa: BLE001 - recorded; this job still meets the others at the barriers
                record = error_record(e)
            barrier(sync_dir, f"ready-{key}", job, jobs, timeout, parent)
            if trainer is not None:
                try:
                    record.update(timed_steps(trainer, spec["warmup"], spec["steps"], trainer.device))
                except Exception as e:  # noqa: BLE001
                    record.update(error_record(e))
                trainer.metrics.close()
            out["cases"][key] = record
            save()
            del trainer
            _free()
            barrier(sync_dir, f"done-{key}", job, jobs, timeout, parent)
    return 0


# ---------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_train", description=__doc__.splitlines()[0])
    p.add_argument("--worker", metavar="SPEC", help="run as one job of a launch (started by the section)")
    p.add_argument("--job", type=int, default=0)
    p.add_argument("--result", metavar="FILE")
    p.add_argument("--export-baseline", nargs=2, metavar=("REV", "DIR"),
                   help="write REV's src/ to DIR/src and its hash to DIR/COMMIT (for --baseline-tree where no .git is)")
    args = p.parse_args(argv)
    if args.export_baseline:
        info = export_baseline(*args.export_baseline)
        print(f"{info['commit']} -> {args.export_baseline[1]}/src")
        return 0
    if not args.worker or not args.result:
        p.error("give --worker SPEC --result FILE (or --export-baseline REV DIR); the section runs through bench/run.py")
    try:
        return worker(args.worker, args.job, args.result)
    except Aborted as e:
        print(f"study_train worker {args.job}: aborted: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
