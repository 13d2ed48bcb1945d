"""Shared plotting for the figure notebooks: style, result loading, provenance footnotes, byte-stable output.

Notebooks (``notebooks/figNN_*.py``, jupytext percent format) receive a *spec* from the workflow
(``workflow/scripts/study.py``): one entry per model shown, with its metadata (arch, context,
intervention, ...) and the result files it reads. They only read and plot. Helpers here:

* ``load_ppl`` / ``load_effrem`` / ``load_stats`` / ``load_task``: read a result of the kind its stage
  writes (or None if absent); ``accuracy_frame``: a task result's accuracy rows;
* ``missing(ax, paths)``: an annotated empty panel "not yet measured: <path>";
* ``ppl_panels`` / ``accuracy_by_length_panels``: the panel grids several figures share;
* ``footnote(fig, entries, scale)``: scale and provenance (models, tokens, hardware, commit) read
  from the result files themselves;
* ``save(fig, outputs)`` / ``save_table(md, tex, outputs)``: PDF/PNG/Markdown/LaTeX without
  timestamps, so re-rendering unchanged results changes no byte;
* ``python -m lengthgen.plotting execute NB.py OUT.ipynb --parameters YAML``: run a notebook with
  papermill and strip execution timestamps and durations from the executed notebook.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from . import io

PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}
PNG_METADATA = {"Software": None}
DPI = 150

# One colour per intervention (None = the model as pretrained / the official checkpoint).
INTERVENTION_COLORS = {
    None: "black", "zero": "tab:gray", "random_noise": "tab:red", "fitted_noise": "tab:orange",
    "state_passing": "tab:blue", "tbtt": "tab:purple",
}
INTERVENTION_LABELS = {
    None: "base", "zero": "zero init", "random_noise": "random noise", "fitted_noise": "fitted noise",
    "state_passing": "state passing", "tbtt": "TBTT",
}


def style() -> None:
    """The shared matplotlib style (Agg backend, fixed fonts and sizes, deterministic hashes)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": DPI, "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8,
        "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "svg.hashsalt": "lengthgen", "pdf.fonttype": 42, "path.simplify": True,
    })


# ---------------------------------------------------------------------------- results
def _exists(path) -> bool:
    return path is not None and Path(path).exists()


def load_table(path, kind: str):
    """(DataFrame, header) of a Parquet result, or None when the file is absent."""
    from .results import read_table

    return read_table(path, kind) if _exists(path) else None


def load_ppl(path):
    return load_table(path, "eval-ppl")


def load_effrem(path):
    return load_table(path, "eval-effrem")


def load_stats(path):
    return load_table(path, "eval-state-stats")


def load_task(path, kind: str):
    """A JSON result of ``kind`` (``task-passkey``, ``task-babilong``, ``task-copying``, ``presets``), or None when absent."""
    from .results import read_result

    return read_result(path, kind) if _exists(path) else None


def accuracy_frame(result: Mapping):
    """The ``data.accuracy`` rows of a task result as a DataFrame (``length``, ``accuracy``; passkey adds ``depth``)."""
    import pandas as pd

    from .results import ResultError

    rows = result["data"].get("accuracy")
    if not isinstance(rows, list) or not rows:
        raise ResultError(f"{result['kind']} result without data.accuracy rows; rerun its stage")
    df = pd.DataFrame(rows)
    lacking = {"length", "accuracy"} - set(df.columns)
    if lacking:
        raise ResultError(f"{result['kind']} result: data.accuracy rows lack {sorted(lacking)}; rerun its stage")
    return df


def missing(ax, paths: Iterable[str], what: str = "not yet measured") -> None:
    """Mark a panel whose results are absent: names each missing file, plots nothing."""
    import textwrap

    paths = [str(p) for p in paths]
    shown = [textwrap.fill(p, 48) for p in paths[:6]] + ([f"... and {len(paths) - 6} more"] if len(paths) > 6 else [])
    ax.text(0.5, 0.5, f"{what}:\n" + "\n".join(shown), ha="center", va="center", fontsize=5,
            color="tab:red", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def absent(entries: Sequence[Mapping], kind: str) -> list[str]:
    """Result paths of ``kind`` named by the spec entries that do not exist."""
    return [e["results"][kind] for e in entries if kind in e["results"] and not _exists(e["results"][kind])]


# ---------------------------------------------------------------------------- provenance
def _headers(entries: Sequence[Mapping]) -> list[dict]:
    """Provenance headers of every existing result the entries name."""
    from .results import read_result, read_table

    out = []
    for e in entries:
        for path in e.get("results", {}).values():
            if not _exists(path):
                continue
            out.append(read_table(path)[1] if str(path).endswith(".parquet") else read_result(path))
    return out


def _hardware(prov: Mapping) -> str:
    hw = prov.get("hardware", {})
    if hw.get("device") == "cuda":
        return f"{hw.get('gpu_count', 1)}x {hw.get('gpu', 'GPU')}"
    return f"CPU ({hw.get('machine', '?')})"


def _models(entries: Sequence[Mapping]) -> str:
    names = []
    for e in entries:
        if "model" not in e:
            continue
        tok = f", {e['tokens']} tokens" if e.get("tokens") else ""
        desc = f"{e['model']} ({e.get('hub') or e.get('preset') or e.get('arch')}{tok})"
        if desc not in names:
            names.append(desc)
    return "; ".join(names[:8]) + (f"; +{len(names) - 8} more" if len(names) > 8 else "")


def provenance_text(entries: Sequence[Mapping], scale: str) -> str:
    """One footnote: scale, models and tokens, hardware and commit(s) of the results shown."""
    headers = _headers(entries)
    commits = sorted({(h["provenance"]["git"].get("commit") or "unknown")[:10]
                      + ("+dirty" if h["provenance"]["git"].get("dirty") else "") for h in headers})
    hardware = sorted({_hardware(h["provenance"]) for h in headers})
    parts = [f"Scale: {scale}."]
    models = _models(entries)
    if models:
        parts.append(f"Models: {models}.")
    banded = [h for h in headers
              if isinstance(h.get("data", {}).get("verdict"), Mapping) and h["data"]["verdict"].get("ci_level")]
    levels = sorted({h["data"]["verdict"]["ci_level"] for h in banded})
    if levels:
        n = sorted({h["data"]["verdict"]["num_sequences"] for h in banded})
        parts.append(f"Bands: {', '.join(f'{x:.0%}' for x in levels)} bootstrap intervals over "
                     f"{'/'.join(map(str, n))} evaluation sequences.")
    if headers:
        parts.append(f"Hardware: {', '.join(hardware)}. Commit: {', '.join(commits)}.")
        n_missing = sum(1 for e in entries for p in e.get("results", {}).values() if not _exists(p))
        if n_missing:
            parts.append(f"{n_missing} result file(s) not yet measured.")
    else:
        parts.append("No results measured yet.")
    return " ".join(parts)


def footnote(fig, entries: Sequence[Mapping], scale: str) -> str:
    """Write the provenance footnote under the figure, in a strip kept free of axes; returns its text."""
    import textwrap

    text = provenance_text(entries, scale)
    lines = textwrap.wrap(text, max(60, int(fig.get_figwidth() * 30)))  # about 30 characters of 5 pt per inch
    strip = (len(lines) * 6.5 + 4) / 72 / fig.get_figheight()  # 5 pt text on 6.5 pt lines, in figure heights
    fig.tight_layout(rect=(0, strip, 1, 1))
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=5, va="bottom", ha="left", color="0.35")
    return text


# ---------------------------------------------------------------------------- output
def save(fig, outputs: Sequence[str]) -> None:
    """Save ``fig`` to each output (.pdf/.png) without timestamps or version strings."""
    import matplotlib.pyplot as plt

    for out in outputs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = PDF_METADATA if out.suffix == ".pdf" else PNG_METADATA if out.suffix == ".png" else None
        if meta is None:
            raise ValueError(f"figure output {out} must end in .pdf or .png")
        with io.atomic_path(out) as tmp:
            fig.savefig(tmp, format=out.suffix[1:], metadata=meta, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)


def save_table(markdown: str, latex: str, outputs: Sequence[str]) -> None:
    for out in outputs:
        text = markdown if str(out).endswith(".md") else latex if str(out).endswith(".tex") else None
        if text is None:
            raise ValueError(f"table output {out} must end in .md or .tex")
        io.write_text(out, text.rstrip("\n") + "\n")


def position_axis(ax, T: int | None = None, label: str = "position t") -> None:
    """Log-scaled position axis with the training context marked."""
    ax.set_xscale("log", base=2)
    ax.set_xlabel(label)
    if T:
        ax.axvline(T, color="0.5", ls=":", lw=0.8)


# ---------------------------------------------------------------------------- panels
def resolve_spec(fig: str, spec, scale, config: str = "config/config.yaml"):
    """The spec and scale a notebook shows: its parameters, or (run by hand) those of ``config``."""
    if spec is not None and scale is not None:
        return spec, scale
    import importlib.util

    import yaml

    mod_path = Path("workflow/scripts/study.py")
    if not mod_path.exists():
        raise FileNotFoundError("run the notebook from the repository root, or through `snakemake figures`")
    sp = importlib.util.spec_from_file_location("lengthgen_study", mod_path)
    mod = importlib.util.module_from_spec(sp)
    sys.modules[sp.name] = mod
    sp.loader.exec_module(mod)
    st = mod.load(yaml.safe_load(Path(config).read_text()))
    return (spec if spec is not None else st.figure_specs[fig]), (scale or st.cfg["study"]["scale"])


def group(entries: Sequence[Mapping], key) -> dict:
    """Entries grouped by ``key`` (a field name or a function), in first-seen order."""
    out: dict = {}
    for e in entries:
        k = key(e) if callable(key) else e.get(key)
        out.setdefault(k, []).append(e)
    return out


def label(e: Mapping) -> str:
    """A short legend label for a spec entry."""
    parts = [e.get("model", e.get("id", "?"))]
    if e.get("milestone"):
        parts.append(f"@{e['milestone']}")
    iv = e.get("intervention")
    if iv:
        parts.append(INTERVENTION_LABELS.get(iv, iv) + (f" sigma={e['sigma']}" if e.get("sigma") is not None else ""))
    return " ".join(str(p) for p in parts)


def ppl_curve(ax, entry: Mapping, **kw) -> bool:
    """Log-bucketed mean loss against position of one eval-ppl result; False if absent."""
    got = load_ppl(entry["results"].get("ppl"))
    if got is None:
        return False
    _, header = got
    b = header["data"]["buckets"]
    xs = [(x["lo"] + x["hi"]) / 2 for x in b]
    (line,) = ax.plot(xs, [x["loss"] for x in b], **kw)
    if all(x.get("ci_lo") is not None for x in b):  # the bootstrap interval over the evaluation sequences
        ax.fill_between(xs, [x["ci_lo"] for x in b], [x["ci_hi"] for x in b], color=line.get_color(), alpha=0.15,
                        linewidth=0)
    return True


def ppl_panels(entries, panel_key, line_key, title=str, line_label=str, ncols=3):
    """One panel per ``panel_key`` value, one curve per entry (coloured by ``line_key``)."""
    import matplotlib.pyplot as plt

    panels = group(entries, panel_key) or {None: []}
    n = len(panels)
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, (pk, es) in zip(axes.flat, panels.items()):
        lines = group(es, line_key)
        for i, (lk, les) in enumerate(lines.items()):
            for e in les:
                color = INTERVENTION_COLORS.get(lk, cmap(i / max(1, len(lines) - 1))) if line_key == "intervention" \
                    else cmap(i / max(1, len(lines) - 1))
                ppl_curve(ax, e, color=color, label=line_label(e), ls="-" if not e.get("intervention") else "--")
        gone = absent(es, "ppl")
        if len(gone) == len(es):
            missing(ax, gone)
        else:
            position_axis(ax, es[0].get("context"))
            ax.set_ylabel("loss (nats)")
            ax.legend(loc="best")
            if gone:
                ax.annotate("not yet measured: " + ", ".join(gone), (0.01, 0.01), xycoords="axes fraction",
                            fontsize=4, color="tab:red")
        ax.set_title(title(pk))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def accuracy_by_length_panels(entries, task: str, kind: str, xlabel: str, ylabel: str, named_lengths: bool = False):
    """One panel per ``setting``, one curve per entry: the accuracy of its ``task`` result (of
    ``kind``) against length, averaged over the other rows (depths, tasks) at each length. Lengths
    are numbers on a log2 axis, or with ``named_lengths`` names ("1k") in the result's order; a panel
    without any result names the missing files (Figs. 6, 7)."""
    import matplotlib.pyplot as plt

    settings = group(entries, "setting") or {None: []}
    fig, axes = plt.subplots(1, len(settings), figsize=(3.4 * len(settings), 2.8), squeeze=False)
    for ax, (setting, es) in zip(axes[0], settings.items()):
        shown = 0
        for e in es:
            res = load_task(e["results"][task], kind)
            if res is None:
                continue
            acc = accuracy_frame(res).groupby("length", sort=not named_lengths)["accuracy"].mean()
            xs = [str(x) for x in acc.index] if named_lengths else acc.index
            ax.plot(xs, acc.values, marker="o", color=INTERVENTION_COLORS.get(e.get("intervention"), "k"),
                    label=label(e))
            shown += 1
        if not shown:
            missing(ax, absent(es, task) or ["(no models selected)"])
        else:
            if not named_lengths:
                ax.set_xscale("log", base=2)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_ylim(-0.02, 1.02)
            ax.legend()
        ax.set_title(str(setting))
    return fig, axes


def effrem_curve(ax, entry: Mapping, distance: str = "tv", **kw) -> bool:
    got = load_effrem(entry["results"].get("effrem"))
    if got is None:
        return False
    df, header = got
    d = df[df["distance"] == distance].sort_values("cut_point")
    ax.plot(d["cut_point"].clip(lower=1), d["effrem"], **kw)
    return True


def stats_curve(ax, entry: Mapping, layer: int = -1, head: int = -1, stat: str = "std", **kw) -> bool:
    got = load_stats(entry["results"].get("state_stats"))
    if got is None:
        return False
    df, _ = got
    d = df[(df["layer"] == layer) & (df["head"] == head)].sort_values("position")
    ax.plot(d["position"], d[stat], **kw)
    return True


# ---------------------------------------------------------------------------- notebooks
def _clean(nb) -> None:
    """Drop what changes from run to run: timestamps, durations, temporary paths, random cell ids."""
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path", "environment_variables",
                "exception"):
        pm.pop(key, None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        cell.metadata.pop("execution", None)
        cp = cell.metadata.get("papermill")
        if cp is not None:
            for key in ("start_time", "end_time", "duration", "exception"):
                cp.pop(key, None)


KERNEL_START_ATTEMPTS = 3


def execute(notebook: str, output: str, parameters: Mapping | None = None, cwd: str = ".") -> None:
    """Execute a jupytext notebook with papermill (kernel python3) into a timestamp-free .ipynb."""
    import jupytext
    import nbformat
    import papermill

    nb = jupytext.read(notebook)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for attempt in range(KERNEL_START_ATTEMPTS):
        try:
            ran = papermill.execute_notebook(copy.deepcopy(nb), None, parameters=dict(parameters or {}),
                                             kernel_name="python3", cwd=cwd, progress_bar=False, report_mode=False)
            break
        except RuntimeError as e:  # a cell's error is a PapermillExecutionError, never retried
            # jupyter picks free TCP ports and binds them later: kernels started together (snakemake
            # --cores N) can race for one port and die before replying; a new start picks new ports
            if "Kernel died before replying" not in str(e) or attempt == KERNEL_START_ATTEMPTS - 1:
                raise
    _clean(ran)
    io.write_text(output, nbformat.writes(ran) + "\n")


def main(argv: list[str] | None = None) -> int:
    import yaml

    p = argparse.ArgumentParser(prog="python -m lengthgen.plotting", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="run a figure notebook with papermill into a timestamp-free .ipynb")
    ex.add_argument("notebook")
    ex.add_argument("output")
    ex.add_argument("--parameters", default="{}", help="YAML mapping of notebook parameters")
    args = p.parse_args(argv)
    params = yaml.safe_load(args.parameters) or {}
    if not isinstance(params, dict):
        p.error("--parameters must be a YAML mapping")
    execute(args.notebook, args.output, params)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
