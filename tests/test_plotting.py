"""Shared figure panels: what ``accuracy_by_length_panels`` draws from task results (Figs. 6, 7)."""

from __future__ import annotations

import pytest

from lengthgen import plotting as lp
from lengthgen.provenance import provenance
from lengthgen.results import write_result

pytest.importorskip("matplotlib")
from matplotlib.colors import same_color  # noqa: E402


def _result(path, kind, rows):
    write_result(path, kind, {"accuracy": rows}, provenance({"seed": 0}, seed=0))
    return str(path)


def test_named_lengths_keep_the_result_order_and_average_over_tasks(tmp_path):
    lp.style()
    rows = [{"task": t, "length": L, "accuracy": a, "n": 4} for t, L, a in
            [("qa1", "4k", 0.5), ("qa2", "4k", 0.0), ("qa1", "0k", 1.0), ("qa2", "0k", 0.5)]]
    entry = {"model": "x", "setting": "few-shot", "intervention": "state_passing",
             "results": {"babilong": _result(tmp_path / "b.json", "task-babilong", rows)}}
    absent = {"model": "y", "setting": "finetune", "results": {"babilong": str(tmp_path / "none.json")}}
    fig, axes = lp.accuracy_by_length_panels([entry, absent], "babilong", "task-babilong", xlabel="length",
                                             ylabel="accuracy", named_lengths=True)
    ax, empty = axes[0]
    (line,) = ax.get_lines()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4k", "0k"]      # as the result lists them
    assert list(line.get_ydata()) == [0.25, 0.75] and ax.get_xscale() == "linear"
    assert same_color(line.get_color(), lp.INTERVENTION_COLORS["state_passing"]) and ax.get_title() == "few-shot"
    assert not empty.get_lines() and "none.json" in empty.texts[0].get_text()
    assert empty.get_title() == "finetune"


def test_numeric_lengths_are_sorted_on_a_log2_axis(tmp_path):
    lp.style()
    rows = [{"length": L, "depth": d, "accuracy": a, "n": 2} for L, d, a in
            [(512, 0.0, 0.5), (512, 1.0, 0.0), (256, 0.0, 1.0), (256, 1.0, 0.5)]]
    entry = {"model": "x", "setting": "zero-shot",
             "results": {"passkey": _result(tmp_path / "p.json", "task-passkey", rows)}}
    fig, axes = lp.accuracy_by_length_panels([entry], "passkey", "task-passkey", xlabel="tokens", ylabel="acc")
    ax = axes[0][0]
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [256, 512] and list(line.get_ydata()) == [0.75, 0.25]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "tokens" and ax.get_ylim() == (-0.02, 1.02)
    assert same_color(line.get_color(), "k") and line.get_label() == "x"
    fig, axes = lp.accuracy_by_length_panels([], "passkey", "task-passkey", xlabel="tokens", ylabel="acc")
    assert "(no models selected)" in axes[0][0].texts[0].get_text()


def test_execute_retries_a_kernel_that_died_at_start(tmp_path, monkeypatch):
    """Kernels started together can race for a TCP port and die before replying: execute starts a new
    one; an error inside the notebook is not retried."""
    import papermill
    import papermill.exceptions

    from lengthgen import plotting

    nb = tmp_path / "nb.py"
    nb.write_text("# %%\nx = 1\n")
    calls = []
    real = papermill.execute_notebook

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*a, **k)

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    plotting.execute(str(nb), str(tmp_path / "out.ipynb"))
    assert len(calls) == 2 and (tmp_path / "out.ipynb").exists()

    def broken(*a, **k):
        calls.append(1)
        raise papermill.exceptions.PapermillExecutionError(0, 1, "x", "NameError", "boom", [])

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", broken)
    with pytest.raises(papermill.exceptions.PapermillExecutionError):
        plotting.execute(str(nb), str(tmp_path / "out2.ipynb"))
    assert len(calls) == 1

    def always_dies(*a, **k):
        calls.append(1)
        raise RuntimeError("Kernel died before replying to kernel_info")

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", always_dies)
    with pytest.raises(RuntimeError, match="Kernel died"):
        plotting.execute(str(nb), str(tmp_path / "out3.ipynb"))
    assert len(calls) == plotting.KERNEL_START_ATTEMPTS


def test_ppl_curve_draws_the_bootstrap_band_and_the_footnote_names_it(tmp_path):
    import pandas as pd
    import torch

    from lengthgen.evaluate import length_generalization, log_buckets
    from lengthgen.evaluate.verdict import bootstrap_buckets
    from lengthgen.results import write_table

    lp.style()
    losses = 2.0 + 0.3 * torch.randn(6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    buckets = log_buckets(64)
    cis = bootstrap_buckets(losses, buckets, num_bootstrap=100)
    curve = losses.mean(0)
    rows = [{"lo": lo, "hi": hi, "loss": float(curve[lo:hi].mean()), "ci_lo": c[0], "ci_hi": c[1]}
            for (lo, hi), c in zip(buckets, cis)]
    v = length_generalization(None, 8, losses=losses, num_bootstrap=100)
    path = tmp_path / "ppl.parquet"
    write_table(path, "eval-ppl", pd.DataFrame({"position": range(64), "loss": curve.numpy()}),
                provenance({"seed": 0}, seed=0), data={"buckets": rows, "verdict": v.to_dict(), "num_sequences": 6})
    entry = {"model": "x", "results": {"ppl": str(path)}}
    import matplotlib.pyplot as plt

    ax = plt.figure().add_subplot()
    assert lp.ppl_curve(ax, entry)
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(min(c[0] for c in cis)) and ys.max() == pytest.approx(max(c[1] for c in cis))
    assert "Bands: 95% bootstrap intervals over 6 evaluation sequences." in lp.provenance_text([entry], "tiny")
