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
