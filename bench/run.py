"""Run the benchmark sections in one process: ``python bench/run.py --out DIR [--only S ...] [--quick]``.

Each section writes ``DIR/<section>.json`` as it measures (a killed run keeps what it measured);
a section that fails (out of memory, a missing package) records the error and the next one runs.
A compact table is printed at the end; ``python bench/report.py DIR`` makes the summary and figure.
``--device cpu --tiny`` is a smoke test of the harness on tiny models, never a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: import ``bench.*`` from the repository root, and
    sys.path[0] = str(ROOT)     # keep bench/'s file names (common, flops, ...) off the top level

# section name -> module; the order is the run order (compile last: it is the slowest)
SECTIONS = {
    "hardware": "bench.hardware",
    "train": "bench.train_speed",
    "interventions": "bench.intervention_overhead",
    "eval": "bench.long_eval",
    "effrem": "bench.effrem_cost",
    "mamba1_scan": "bench.mamba1_section",
    "ssd_one_chunk": "bench.ssd_one_chunk",
    "conv_tiles": "bench.conv_tiles",
    "gated_norm": "bench.gated_norm",
    "profile": "bench.profile_calls",
    "study_train": "bench.study_train",
    "compile": "bench.compile_time",
    "cpu": "bench.figures_time",
}
ONLY_WHEN_NAMED = ("cpu", "study_train")  # study_train: many worker launches (minutes of GPU), its own options
DEFAULT = [name for name in SECTIONS if name not in ONLY_WHEN_NAMED]
QUICK_DEFAULT = [name for name in DEFAULT if name != "compile"]  # cold compiles take minutes: name it to run it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the per-section JSON files")
    p.add_argument("--only", nargs="+", choices=list(SECTIONS), metavar="SECTION",
                   help=f"sections to run (default: {' '.join(DEFAULT)}; with --quick: {' '.join(QUICK_DEFAULT)}; "
                        "'cpu' and 'study_train' run only when named)")
    p.add_argument("--quick", action="store_true", help="smaller shapes and fewer repeats (~3-4 min on an H200)")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny presets and shapes: a CPU smoke test of the harness")
    p.add_argument("--compile-archs", nargs="+", default=None, metavar="ARCH",
                   help="archs of the compile section (default: mamba2 gla; --quick: mamba2)")
    p.add_argument("--train-presets", nargs="+", default=None, metavar="PRESET",
                   help="presets of the train section (default: all of its cases)")
    p.add_argument("--train-shapes", nargs="+", default=None, choices=("host_bound", "gpu_bound"),
                   help="shapes of the train section (default: both; gpu_bound is the ratios' 24 x 2048)")
    p.add_argument("--train-profile", action="store_true",
                   help="train: also record torch.profiler's top kernels of one step of each side (ours, the reference)")
    p.add_argument("--profile-cases", nargs="+", default=None, choices=("forward", "interventions", "study_steps"),
                   help="cases of the profile section (default: all)")
    g = p.add_argument_group("study_train", "training throughput at the reduced study's shapes (bench/study_train.py)")
    g.add_argument("--baseline-commit", default=None, metavar="REV",
                   help="also run the study_train workers on REV's src/ (git archive; or --baseline-tree)")
    g.add_argument("--baseline-tree", default=None, metavar="DIR",
                   help="REV's tree made by `python -m bench.study_train --export-baseline REV DIR` (no .git needed)")
    g.add_argument("--study-models", nargs="+", default=None, metavar="NAME",
                   help="study.models names (default: m2-m gla-s, and m2-s where defined)")
    g.add_argument("--study-contexts", nargs="+", type=int, default=None, metavar="T",
                   help="contexts (default: 16 64 256; --quick: 64; --tiny: 16 64)")
    g.add_argument("--study-jobs", nargs="+", type=int, default=None, metavar="N",
                   help="concurrent jobs per measurement (default: 1 4 8; --quick: 1 8; --tiny: 1 2)")
    g.add_argument("--study-impls", nargs="+", default=None, choices=("ours", "before", "reference"),
                   help="sides to measure (default: all three)")
    g.add_argument("--study-set", nargs="+", default=None, metavar="KEY=VALUE",
                   help="train keys for this tree's workers only (e.g. cuda_graphs=false)")
    g.add_argument("--study-timeout", type=float, default=None, metavar="S",
                   help="seconds a worker waits at a barrier before the launch is abandoned")
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cpu") and not args.tiny and args.only != ["cpu"]:
        p.error("--device cpu needs --tiny (or --only cpu): CPU timings of the real presets are not benchmark results")
    return args


def options_of(args: argparse.Namespace):
    from bench.common import Options

    return Options(device=args.device, quick=args.quick, tiny=args.tiny)


def run_section(name: str, args: argparse.Namespace, out: Path) -> dict:
    """Run one section; any failure, even importing it, ends up in its JSON."""
    from bench.common import SectionFile, error_record
    from lengthgen.provenance import provenance

    options = options_of(args)
    section = SectionFile(out, name, {"options": dataclasses.asdict(options),
                                      "provenance": provenance(seed=0, device=options.device)})
    t0 = time.perf_counter()
    try:
        importlib.import_module(SECTIONS[name]).run(options, section, args)
    except Exception as e:  # noqa: BLE001 - the next section still runs
        section.data["error"] = error_record(e)
    return section.finish(wall_s=time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Keep Triton's compiled kernels between runs on the same machine (an ignored repo folder).
    os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / ".cache" / "triton"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bench.report import load_sections, table

    for name in args.only or (QUICK_DEFAULT if args.quick else DEFAULT):
        print(f"[bench] {name} ...", flush=True)
        data = run_section(name, args, out)
        status = "failed: " + data["error"]["error"] if "error" in data else "done"
        print(f"[bench] {name} {status} in {data['wall_s']:.1f} s -> {out / (name + '.json')}", flush=True)
    print(table(load_sections(out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
