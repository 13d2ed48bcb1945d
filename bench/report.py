"""Assemble the benchmark summary and figure: ``python bench/report.py DIR [--repeat DIR2 ...]``.

Reads the section files ``DIR/*.json`` written by ``bench/run.py`` and writes

* ``results/bench/summary.json``: a ``lengthgen.results`` file of kind ``bench_summary`` whose
  ``data`` is exactly ``{"provenance", "ratios", "raw"}`` (the header's provenance is the same
  dict: the provenance of the GPU measurements, not of the machine running this script);
* ``figures/bench_summary.pdf`` / ``.png``: the measured numbers, hardware in the footnote.

Ratios (None when not measured; goals in ``GOALS``):

``mamba2_train_vs_mamba_ssm``    ours / mamba-ssm training tokens/s, the minimum over the Mamba-2 presets
``gla_train_vs_fla``             ours / fla training tokens/s, gla-70m (both at the GPU-bound shape,
                                 24 x 2048 tokens, where measured; 8 x 2048 is in raw)
``rwkv6_train_vs_fla``           the same for RWKV-6, rwkv6-70m against fla's ``RWKV6ForCausalLM``
``intervention_overhead_max``    max over state_passing, fitted_noise, tbtt of step time / zero's - 1, mamba2-45m
                                 at 32 x 2048 tokens (GPU-bound; the host-bound 8 x 2048 is in raw)
``eval_128k_peak_mem_vs_8k``     peak memory of the streamed 128k evaluation / that of 8k (eager runs where measured)
``eval_128k_tput_vs_train_fwd``  streamed 128k tokens/s / forward tokens/s at the training shape
``study_train_vs_before``        aggregate training tokens/s of m2-m at T = 64 with 8 jobs sharing the device,
                                 this code / the ``--baseline-commit`` code in the same run (section
                                 ``study_train``); the goal is 3x

With ``--repeat DIR2`` (any number of folders, each a later ``bench/run.py`` run of some sections,
e.g. ``--only train interventions``), every ratio is the median over the runs that measured it;
``raw.ratio_runs`` keeps each run's value and ``raw.repeats`` the repeated sections.  Step times on
a shared GPU vary by tens of percent between runs, so one run's ratio is not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: import ``bench.*`` from the repository root, and
    sys.path[0] = str(ROOT)     # keep bench/'s file names (common, flops, ...) off the top level

KIND = "bench_summary"
SUMMARY = "results/bench/summary.json"
FIGURE = "figures/bench_summary"
GOALS = {  # (comparison, bound)
    "mamba2_train_vs_mamba_ssm": (">=", 1.0),
    "gla_train_vs_fla": (">=", 1.0),
    "rwkv6_train_vs_fla": (">=", 1.0),
    "intervention_overhead_max": ("<=", 0.03),
    "eval_128k_peak_mem_vs_8k": ("<=", 1.1),
    "eval_128k_tput_vs_train_fwd": (">=", 0.8),
    "study_train_vs_before": (">=", 3.0),  # 3x the tokens per GPU-minute of commit 9f2cbc4's code
}
MAMBA2_PRESETS = ("mamba2-45m", "mamba2-130m")
RATIO_SECTIONS = ("train", "interventions", "eval", "study_train")
GPU_BOUND = ":gpu_bound"  # bench/train_speed.py's key suffix for the GPU-bound shape
RATIO_CLIP = 3.0
ROOFLINE_PRESETS = {"mamba2": "mamba2-130m", "gla": "gla-70m", "rwkv6": "rwkv6-70m", "mamba1": "mamba1-130m"}


class ReportError(ValueError):
    pass


# ---------------------------------------------------------------------------- reading
def load_sections(folder: str | Path) -> dict[str, dict]:
    """Section name -> its JSON, for every ``*.json`` section file in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder of benchmark results (run `python bench/run.py --out {folder}`)")
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ReportError(f"{path} is not valid JSON ({e}); rerun that section with --only") from None
        if isinstance(data, dict) and "section" in data:
            out[data["section"]] = data
    return out


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]..., or None where a key is missing or a value is not a mapping."""
    for k in keys:
        if not isinstance(obj, Mapping) or k not in obj:
            return None
        obj = obj[k]
    return obj


def _div(a, b) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


# ---------------------------------------------------------------------------- ratios
def train_ratio(sections: Mapping, presets) -> float | None:
    """The minimum over ``presets`` of ours / reference, each at the GPU-bound shape where measured."""
    results = dig(sections, "train", "results") or {}
    keys = [p + GPU_BOUND if p + GPU_BOUND in results else p for p in presets]
    values = [dig(results, k, "ratio_ours_vs_theirs") for k in keys]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def ratio_lengths(eval_section: Mapping) -> tuple[str, str]:
    """(short, long) lengths of the eval ratios as result keys (8k and 128k; tiny runs differ)."""
    lengths = eval_section.get("ratio_lengths") or {"short": 8192, "long": 131072}
    return str(lengths["short"]), str(lengths["long"])


def ratios(sections: Mapping) -> dict[str, float | None]:
    overheads = dig(sections, "interventions", "results", "mamba2", "overhead") or {}
    ev = sections.get("eval") or {}
    short, long = ratio_lengths(ev)
    results = ev.get("results", {})
    # memory from the eager streamed runs where measured: a CUDA graph's memory pool is reserved, not
    # allocated, after its capture, so graphed runs would count it only at the length that captured
    mem = "streamed_eager" if dig(results, long, "streamed_eager", "peak_mem_bytes") is not None else "streamed"
    return {
        "mamba2_train_vs_mamba_ssm": train_ratio(sections, MAMBA2_PRESETS),
        "gla_train_vs_fla": train_ratio(sections, ("gla-70m",)),
        "rwkv6_train_vs_fla": train_ratio(sections, ("rwkv6-70m",)),
        "intervention_overhead_max": max(overheads.values()) if overheads else None,
        "eval_128k_peak_mem_vs_8k": _div(dig(results, long, mem, "peak_mem_bytes"),
                                         dig(results, short, mem, "peak_mem_bytes")),
        "eval_128k_tput_vs_train_fwd": _div(dig(results, long, "streamed", "tokens_per_s"),
                                            dig(results, "train_shape_forward", "tokens_per_s")),
        "study_train_vs_before": dig(sections, "study_train", "results", "target", "ratio_vs_before"),
    }


def ratio_runs(runs: list[Mapping]) -> dict[str, dict]:
    """Each ratio over the runs that measured it: the values (in run order), their median, min and max."""
    out = {}
    for name in GOALS:
        values = [v for v in (ratios(run)[name] for run in runs) if v is not None]
        if values:
            out[name] = {"values": values, "n": len(values), "median": statistics.median(values),
                         "min": min(values), "max": max(values)}
    return out


def meets_goal(name: str, value: float | None) -> bool | None:
    op, bound = GOALS[name]
    if value is None or bound is None:
        return None
    return value >= bound if op == ">=" else value <= bound


# ---------------------------------------------------------------------------- roofline
def lm_head_roofline(config, tokens: int, peak: float, bandwidth: float) -> dict:
    """The LM-head GEMM (tokens x d) @ (d x V) in bf16: the largest single matmul of a step."""
    from bench.flops import BF16, roofline

    d, v = config.d_model, config.padded_vocab_size
    return roofline(2 * tokens * d * v, BF16 * (tokens * d + d * v + tokens * v), peak, bandwidth)


def rooflines(tokens: int = 8 * 2048) -> dict:
    """Whether bytes or FLOPs set the floor of each kernel, from the FLOP and byte counts."""
    from bench.common import COPY_BANDWIDTH, PEAK_BF16_FLOPS
    from bench.flops import scan_roofline
    from lengthgen.models import make_config

    out = {}
    for arch, preset in ROOFLINE_PRESETS.items():
        config = make_config(arch, preset)
        out[preset] = {"scan": scan_roofline(arch, config, PEAK_BF16_FLOPS, COPY_BANDWIDTH),
                       "lm_head_matmul": lm_head_roofline(config, tokens, PEAK_BF16_FLOPS, COPY_BANDWIDTH)}
    return out


# ---------------------------------------------------------------------------- summary
def is_smoke(section: Mapping) -> bool:
    options = section.get("options", {})
    return bool(options.get("tiny")) or not str(options.get("device", "")).startswith("cuda")


def measurement_provenance(sections: Mapping) -> dict:
    """The provenance of the GPU sections: that of a section the ratios read (train, interventions,
    eval) where measured on CUDA, else the first measured on CUDA, else of the first section."""
    measured = [s for name, s in sections.items() if name != "cpu"] or list(sections.values())
    if not measured:
        raise ReportError("no section files found: run `python bench/run.py --out DIR` first")
    gpu = [s for s in measured if not is_smoke(s)]
    ratio_sections = [sections[n] for n in RATIO_SECTIONS if n in sections and not is_smoke(sections[n])]
    return dict((ratio_sections or gpu or measured)[0]["provenance"])


def section_commits(sections: Mapping) -> dict[str, str | None]:
    """Section name -> the git commit it was measured at (sections may come from different runs)."""
    return {name: dig(s, "provenance", "git", "commit") for name, s in sorted(sections.items())}


def _without_provenance(sections: Mapping) -> dict:
    return {name: {k: v for k, v in s.items() if k != "provenance"} for name, s in sections.items()}


def summary(sections: Mapping, smoke_ok: bool = False, repeats: list[Mapping] = ()) -> dict:
    """``{"provenance", "ratios", "raw"}``; CPU smoke measurements are refused unless ``smoke_ok``.

    ``repeats``: further runs (section name -> section) of some sections; each ratio is then the
    median over every run that measured it, and ``raw.ratio_runs`` lists the values."""
    runs = [sections, *repeats]
    smoke = sorted({name for run in runs for name, s in run.items() if name != "cpu" and is_smoke(s)})
    if smoke and not smoke_ok:
        raise ReportError(f"sections {smoke} are a CPU/--tiny smoke run, not benchmark results; "
                          "run bench/run.py on the GPU, or pass --smoke to write them marked as smoke")
    raw = _without_provenance(sections)
    raw["section_commits"] = section_commits(sections)
    raw["roofline"] = rooflines()
    raw["goals"] = {k: {"op": op, "bound": b} for k, (op, b) in GOALS.items()}
    raw["smoke_sections"] = smoke
    values = ratios(sections)
    if repeats:
        raw["repeats"] = [{"commit": dig(measurement_provenance(run), "git", "commit"), **_without_provenance(run)}
                          for run in repeats]
        raw["ratio_runs"] = ratio_runs(runs)
        values = {name: dig(raw["ratio_runs"], name, "median") for name in GOALS}
    return {"provenance": measurement_provenance(sections), "ratios": values, "raw": raw}


def write_summary(result: Mapping, path: str | Path) -> Path:
    from lengthgen.results import write_result

    return write_result(path, KIND, result, result["provenance"])


# ---------------------------------------------------------------------------- table
def _fmt(x, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x / scale:.{digits}g}{unit}"


def table(sections: Mapping, result: Mapping | None = None) -> str:
    """The headline numbers as a fixed-width text table (ratios from ``result`` when given)."""
    lines = [f"{'measurement':44s} value"]
    for preset, r in (dig(sections, "train", "results") or {}).items():
        ours, theirs = dig(r, "ours", "train_tokens_per_s"), dig(r, "theirs", "train_tokens_per_s")
        note = "" if theirs is not None else f" (reference: {_why(r)})"
        lines.append(f"{'train ' + preset + ' tok/s ours | ref':44s} {_fmt(ours)} | {_fmt(theirs)}"
                     f"  MFU {_fmt(dig(r, 'ours', 'mfu'))}{note}")
    for key in ("mamba2", "mamba2_host_bound"):
        r = dig(sections, "interventions", "results", key) or {}
        for name, v in (r.get("overhead") or {}).items():
            label = f"intervention overhead {name} {r.get('rows')}x{r.get('context')}"
            lines.append(f"{label:44s} {_fmt(100 * v, '%')}")
    for key, r in (dig(sections, "eval", "results") or {}).items():
        if key.startswith("train_shape_forward"):
            label = "eval forward at training shape tok/s" + (" (eager)" if key.endswith("eager") else "")
            lines.append(f"{label:44s} {_fmt(r.get('tokens_per_s'))}")
            continue
        eager = dig(r, "streamed_eager", "tokens_per_s")
        lines.append(f"{'eval ' + key + ' streamed tok/s | peak GiB':44s} {_fmt(dig(r, 'streamed', 'tokens_per_s'))} | "
                     f"{_fmt(dig(r, 'streamed', 'peak_mem_bytes'), '', 2**30)}  full: {_status(r.get('full'))}"
                     + (f"  eager: {_fmt(eager)}" if eager is not None else ""))
    e = dig(sections, "effrem", "results", "mamba2-130m") or {}
    if e:
        lines.append(f"{'effrem seconds | measured/bound':44s} {_fmt(e.get('seconds'))} | {_fmt(e.get('measured_vs_bound'))}")
    for arch, r in (dig(sections, "compile", "results") or {}).items():
        lines.append(f"{'compile ' + arch + ' cold | warm-cache first call s':44s} "
                     f"{_fmt(dig(r, 'cold', 'first_call_s'))} | {_fmt(dig(r, 'warm_cache', 'first_call_s'))}")
    lines.extend(study_lines(dig(sections, "study_train", "results") or {}))
    values = result["ratios"] if result else ratios(sections)
    runs = dig(result, "raw", "ratio_runs") or {}
    for name, value in values.items():
        ok = meets_goal(name, value)
        op, bound = GOALS[name]
        spread = f" median of {runs[name]['n']} runs, {_fmt(runs[name]['min'])}-{_fmt(runs[name]['max'])}" \
            if name in runs and runs[name]["n"] > 1 else ""
        goal = "no goal set" if bound is None else f"goal {op} {bound}: {'-' if ok is None else 'met' if ok else 'NOT met'}"
        lines.append(f"{'ratio ' + name:44s} {_fmt(value)}  ({goal}){spread}")
    for name, s in sections.items():
        if "error" in s:
            lines.append(f"{'section ' + name + ' failed':44s} {s['error']['error'][:100]}")
    return "\n".join(lines)


STUDY_IMPLS = ("ours", "before", "reference")  # bench/study_train.py's IMPLS


def study_lines(results: Mapping) -> list[str]:
    """One line per study_train case and side: aggregate tokens/s by number of concurrent jobs."""
    lines = []
    for key, case in (results.get("cases") or {}).items():
        for impl in STUDY_IMPLS:
            by_jobs = case.get(impl) or {}
            if not by_jobs:
                continue
            measured = {j: r.get("aggregate_tokens_per_s") for j, r in by_jobs.items()}
            label = f"study {key} {impl} agg tok/s by jobs"
            if not any(v is not None for v in measured.values()):
                first = next(iter(by_jobs.values()))
                why = first.get("skipped") or first.get("unavailable") or first.get("error") or "not measured"
                lines.append(f"{label:44s} - ({str(why)[:70]})")
                continue
            lines.append(f"{label:44s} " + " | ".join(f"{j}: {_fmt(v)}" for j, v in measured.items()))
    return lines


def _why(r: Mapping) -> str:
    return str(dig(r, "reference", "unavailable") or dig(r, "theirs", "error") or "not measured")[:80]


def _status(r: Mapping | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return ("OOM" if r.get("oom") else "error") + ": " + r["error"][:60]
    return f"{_fmt(r.get('tokens_per_s'))} tok/s, {_fmt(r.get('peak_mem_bytes'), ' GiB', 2**30)}"


# ---------------------------------------------------------------------------- figure
def scale_text(raw: Mapping) -> str:
    """Which sections were measured and with which harness options (the figure's scale)."""
    sections = sorted(k for k, v in raw.items() if isinstance(v, Mapping) and "results" in v)
    quick = any(dig(raw, k, "options", "quick") for k in sections)
    study = dig(raw, "study_train", "results", "setup") or {}
    study_text = (f" study_train: {study.get('tokens_per_step')} tokens per step at T = "
                  f"{', '.join(map(str, study.get('contexts') or []))}, {study.get('timed_steps')} timed steps per job, "
                  f"jobs {', '.join(map(str, study.get('jobs') or []))}.") if study else ""
    return (f"Measured sections: {', '.join(sections) or 'none'}"
            f"{' (--quick shapes: 4 x 2048 tokens per training step)' if quick else ''}.{study_text} ")


def hardware_text(prov: Mapping, smoke: bool) -> str:
    hw, versions, git = prov.get("hardware", {}), prov.get("versions", {}), prov.get("git", {})
    device = f"{hw.get('gpu_count', 1)}x {hw.get('gpu')} (CUDA {hw.get('cuda')})" if hw.get("device") == "cuda" \
        else f"CPU ({hw.get('machine')})"
    pkgs = ", ".join(f"{k} {versions[k]}" for k in ("torch", "triton", "mamba-ssm", "fla-core") if k in versions)
    commit = (git.get("commit") or "unknown")[:10] + ("+dirty" if git.get("dirty") else "")
    text = f"Hardware: {device}. {pkgs}. Commit {commit}. MFU and roofline against 792 TFLOP/s bf16, 4.3 TB/s copy."
    return ("SMOKE RUN (CPU / tiny models): not benchmark results. " if smoke else "") + text


def commits_text(commits: Mapping) -> str:
    """' Sections by commit: abc1234567 (a, b); ...' when the sections come from several commits."""
    by_commit: dict[str, list[str]] = {}
    for name, commit in commits.items():
        by_commit.setdefault((commit or "unknown")[:10], []).append(name)
    if len(by_commit) < 2:
        return ""
    return " Sections by commit: " + "; ".join(f"{c} ({', '.join(n)})" for c, n in by_commit.items()) + "."


def figure(result: Mapping, outputs: list[str]) -> None:
    """Four panels: training tokens/s, streamed vs full evaluation (tokens/s, peak memory), ratios."""
    import matplotlib.pyplot as plt

    from lengthgen import plotting

    plotting.style()
    raw = result["raw"]
    fig, axes = plt.subplots(3, 2, figsize=(9, 9.3))
    _train_panel(axes[0, 0], dig(raw, "train", "results") or {}, repeated=bool(raw.get("repeats")))
    _eval_panels(axes[0, 1], axes[1, 0], dig(raw, "eval", "results") or {})
    _ratio_panel(axes[1, 1], result["ratios"], raw.get("ratio_runs") or {})
    _study_panels(axes[2, 0], axes[2, 1], dig(raw, "study_train", "results") or {})
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.text(0.01, 0.005, scale_text(raw) + hardware_text(result["provenance"], bool(raw.get("smoke_sections")))
             + commits_text(raw.get("section_commits") or {}),
             fontsize=5.5,
             va="bottom", ha="left", color="0.35", wrap=True)
    plotting.save(fig, outputs)


def _train_panel(ax, train: Mapping, repeated: bool = False) -> None:
    names = list(train)
    if not names:
        ax.text(0.5, 0.5, "train: not measured", ha="center", va="center", transform=ax.transAxes)
        return
    xs = range(len(names))
    ours = [dig(train[n], "ours", "train_tokens_per_s") or 0 for n in names]
    theirs = [dig(train[n], "theirs", "train_tokens_per_s") or 0 for n in names]
    ax.bar([x - 0.2 for x in xs], [v / 1e3 for v in ours], 0.4, label="lengthgen")
    ax.bar([x + 0.2 for x in xs], [v / 1e3 for v in theirs], 0.4, label="reference (mamba-ssm / fla)")
    for x, v in zip(xs, theirs):
        if not v:
            ax.text(x + 0.2, 0, "n/a", ha="center", va="bottom", fontsize=6, color="tab:red")
    labels = [f"{n.split(':')[0]}\n{dig(train[n], 'rows')}x{dig(train[n], 'context')}" for n in names]
    ax.set_xticks(list(xs), labels, fontsize=6, rotation=30, ha="right")
    ax.set_ylabel("training tokens/s (thousands)")
    ax.set_title("training step (fwd+bwd+AdamW, bf16 autocast)" + (", first run" if repeated else ""))
    ax.legend()


def _eval_panels(ax_tput, ax_mem, results: Mapping) -> None:
    lengths = sorted(int(k) for k in results if k.isdigit())
    # memory of graphed runs is not plotted: a graph's pool is reserved, not allocated, after capture
    labels = {"streamed": "streamed, CUDA graphs", "streamed_eager": "streamed, eager", "full": "one call, eager"}
    for mode, marker, color in (("streamed", "o", "C0"), ("streamed_eager", "^", "C1"), ("full", "s", "C2")):
        pts = [(n, dig(results, str(n), mode, "tokens_per_s"), dig(results, str(n), mode, "peak_mem_bytes"))
               for n in lengths]
        ok = [(n, t, m) for n, t, m in pts if t]
        graphed = any(dig(results, str(n), mode, "cuda_graphs") for n, _, _ in ok)
        label = labels[mode] if any(dig(results, str(n), "streamed_eager") for n in lengths) else mode
        if ok:
            ax_tput.plot([p[0] for p in ok], [p[1] for p in ok], marker=marker, color=color, label=label)
        mem = [(n, m) for n, _, m in ok if m]
        if mem and not graphed:
            ax_mem.plot([p[0] for p in mem], [p[1] / 2**30 for p in mem], marker=marker, color=color, label=label)
        for n in lengths:
            r = dig(results, str(n), mode) or {}
            if "error" in r:
                ax_tput.annotate("OOM" if r.get("oom") else "error", (n, 0), xycoords=("data", "axes fraction"),
                                 ha="center", va="bottom", fontsize=6, color="tab:red")
    ref = dig(results, "train_shape_forward", "tokens_per_s")
    if ref:
        ax_tput.axhline(ref, color="0.5", ls=":", lw=0.8, label="forward at training shape")
    for ax, ylabel, title in ((ax_tput, "tokens/s", "position-wise loss, batch 1"),
                              (ax_mem, "peak memory (GiB)", "peak memory, batch 1")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        elif not lengths:
            ax.text(0.5, 0.5, "eval: not measured", ha="center", va="center", transform=ax.transAxes)
    if not ax_mem.lines and lengths:
        ax_mem.text(0.5, 0.5, "no CUDA memory counters in this run", ha="center", va="center",
                    transform=ax_mem.transAxes, fontsize=7)


def _ratio_panel(ax, values: Mapping, runs: Mapping) -> None:
    names = list(GOALS)
    ys = range(len(names))
    for y, name in zip(ys, names):
        v = values.get(name)
        op, goal = GOALS[name]
        bound = 1.0 if goal is None else goal  # no goal: the value itself
        ok = meets_goal(name, v)
        color = "0.7" if ok is None else "tab:green" if ok else "tab:red"
        ax.barh(y, min((v or 0) / bound, RATIO_CLIP), color=color)
        label = f"{'-' if v is None else f'{v:.3g}'}  " + ("(no goal set)" if goal is None else f"(goal {op} {goal})")
        r = runs.get(name)
        if r and r["n"] > 1:  # the spread over repeated runs
            ax.plot([min(r["min"] / bound, RATIO_CLIP), min(r["max"] / bound, RATIO_CLIP)], [y, y], color="k", lw=1)
            label += f", median of {r['n']} runs"
        ax.text(0.02, y, label, va="center", fontsize=6, transform=ax.get_yaxis_transform())
    ax.axvline(1.0, color="0.3", lw=0.8)
    ax.set_xlim(0, RATIO_CLIP)
    ax.set_yticks(list(ys), names)
    ax.set_xlabel(f"value / goal bound (no goal: the value; clipped at {RATIO_CLIP})")
    ax.set_title("ratios against their goals")


STUDY_STYLES = {"ours": "-", "before": "--", "reference": ":"}


def _study_panels(ax_agg, ax_ratio, results: Mapping) -> None:
    """study_train: aggregate tokens/s against the number of jobs sharing the device (per case and
    side), and ours / before per case."""
    cases = results.get("cases") or {}
    jobs = sorted({int(j) for c in cases.values() for i in STUDY_IMPLS for j in (c.get(i) or {})})
    before = dig(results, "before", "commit")
    for n, (key, case) in enumerate(cases.items()):
        color = f"C{n % 10}"
        for impl, style in STUDY_STYLES.items():
            pts = [(int(j), r.get("aggregate_tokens_per_s")) for j, r in (case.get(impl) or {}).items()]
            pts = [(j, v) for j, v in pts if v]
            if pts:
                ax_agg.plot([j for j, _ in pts], [v / 1e3 for _, v in pts], style, marker="o", ms=3, color=color,
                            label=key if impl == "ours" else None)
        ours, old = case.get("ours") or {}, case.get("before") or {}
        ratio = [(int(j), _div(dig(ours, j, "aggregate_tokens_per_s"), dig(old, j, "aggregate_tokens_per_s")))
                 for j in ours]
        ratio = [(j, v) for j, v in ratio if v is not None]
        if ratio:
            ax_ratio.plot([j for j, _ in ratio], [v for _, v in ratio], marker="o", ms=3, color=color, label=key)
    if not ax_agg.lines:
        for ax in (ax_agg, ax_ratio):
            ax.text(0.5, 0.5, "study_train: not measured", ha="center", va="center", transform=ax.transAxes)
    for impl, style in STUDY_STYLES.items():  # the line styles, once
        if any(line.get_linestyle() == style for line in ax_agg.lines):
            ax_agg.plot([], [], style, color="0.3", label=impl + (f" ({before[:7]})" if impl == "before" and before
                                                                  else ""))
    ax_ratio.axhline(1.0, color="0.5", lw=0.8, ls=":")
    for ax, ylabel, title in ((ax_agg, "aggregate training tokens/s (thousands)",
                               "study shapes: all jobs together, by jobs sharing the device"),
                              (ax_ratio, "ours / before, aggregate tokens/s",
                               f"study shapes: this code / {before[:10] if before else 'the baseline commit'}")):
        ax.set_xlabel("concurrent training jobs on the device")
        ax.set_ylabel(ylabel, fontsize=7)
        ax.set_title(title, fontsize=8)
        if jobs:
            ax.set_xticks(jobs)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=5.5)


# ---------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/report.py", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="the --out folder of bench/run.py")
    p.add_argument("--summary", default=SUMMARY, help=f"summary result file (default {SUMMARY})")
    p.add_argument("--figure", default=FIGURE, help=f"figure path without extension (default {FIGURE})")
    p.add_argument("--smoke", action="store_true", help="accept CPU/--tiny sections (marked as smoke)")
    p.add_argument("--repeat", action="append", default=[], metavar="DIR",
                   help="a folder of repeated sections (repeatable); each ratio becomes the median over the runs")
    args = p.parse_args(argv)
    try:
        sections = load_sections(args.folder)
        repeats = [load_sections(d) for d in args.repeat]
        result = summary(sections, smoke_ok=args.smoke, repeats=repeats)
    except ReportError as e:
        p.error(str(e))
    write_summary(result, args.summary)
    figure(result, [args.figure + ".pdf", args.figure + ".png"])
    print(table(sections, result))
    print(f"-> {args.summary}, {args.figure}.pdf, {args.figure}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
