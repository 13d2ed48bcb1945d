"""Figure notebooks: they render from results only, mark what is missing, and are byte-stable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("papermill")
pytest.importorskip("jupytext")


def _render(tmp_path, name, spec, scale="test scale"):
    from lengthgen import plotting

    stem = name
    outs = [str(tmp_path / f"{stem}.pdf"), str(tmp_path / f"{stem}.png")]
    nb = tmp_path / f"{stem}.ipynb"
    plotting.execute(str(ROOT / "notebooks" / f"{stem}.py"), str(nb),
                     {"spec": spec, "study": "test", "scale": scale, "outputs": outs}, cwd=str(ROOT))
    return [Path(o) for o in outs] + [nb]


def test_missing_results_are_marked_and_output_is_byte_stable(tmp_path):
    spec = [{"id": "pt/x_T64_20x_w0.1_s0", "model": "x", "arch": "mamba2", "context": 64, "intervention": None,
             "results": {"ppl": str(tmp_path / "absent.parquet")}}]
    first = {p.name: p.read_bytes() for p in _render(tmp_path, "fig02_ppl_by_context", spec)}
    second = {p.name: p.read_bytes() for p in _render(tmp_path, "fig02_ppl_by_context", spec)}
    assert first == second  # the same parameters twice: not one byte differs
    nb = json.loads(first["fig02_ppl_by_context.ipynb"])
    text = json.dumps(nb)
    assert "start_time" not in text and "duration" not in text and '"execution"' not in text
    assert b"CreationDate" not in first["fig02_ppl_by_context.pdf"]


def test_reads_a_real_result_and_footnotes_its_provenance(tmp_path):
    import pandas as pd

    from lengthgen.plotting import provenance_text
    from lengthgen.provenance import provenance
    from lengthgen.results import write_table

    path = tmp_path / "ppl.parquet"
    prov = provenance({"seed": 0}, seed=0)
    data = {"buckets": [{"lo": 1, "hi": 2, "loss": 3.0}, {"lo": 2, "hi": 4, "loss": 2.5}], "train_context": 64}
    write_table(path, "eval-ppl", pd.DataFrame({"position": [0, 1, 2], "loss": [3.0, 2.6, 2.4]}), prov, data=data)
    entry = {"id": "pt/x", "model": "x", "preset": "tiny", "tokens": "20x", "arch": "mamba2", "context": 64,
             "intervention": None, "results": {"ppl": str(path)}}
    text = provenance_text([entry], "tiny test scale")
    assert "tiny test scale" in text and "x (tiny, 20x tokens)" in text and "CPU" in text
    assert prov["git"]["commit"][:10] in text
    outs = _render(tmp_path, "fig02_ppl_by_context", [entry])
    assert all(p.stat().st_size > 0 for p in outs)


def test_task_notebooks_read_passkey_results_by_kind(tmp_path):
    """Figs. 7-8 plot the accuracy rows a task-passkey result holds; a result of another kind is refused."""
    from lengthgen.plotting import accuracy_frame, load_task
    from lengthgen.provenance import provenance
    from lengthgen.results import ResultError, write_result

    path = tmp_path / "passkey.json"
    rows = [{"length": L, "depth": d, "accuracy": a, "n": 2} for L, d, a in
            [(256, 0.0, 1.0), (256, 1.0, 0.5), (512, 0.0, 0.5), (512, 1.0, 0.0)]]
    write_result(path, "task-passkey", {"accuracy": rows}, provenance({"seed": 0}, seed=0))
    by_length = accuracy_frame(load_task(path, "task-passkey")).groupby("length")["accuracy"].mean()
    assert by_length.to_dict() == {256: 0.75, 512: 0.25}
    with pytest.raises(ResultError, match="task-babilong"):
        load_task(path, "task-babilong")
    write_result(tmp_path / "empty.json", "task-passkey", {"accuracy": []}, provenance({"seed": 0}, seed=0))
    with pytest.raises(ResultError, match="data.accuracy"):
        accuracy_frame(load_task(tmp_path / "empty.json", "task-passkey"))
    entry = {"id": "pt/x", "model": "x", "setting": "zero-shot", "results": {"passkey": str(path)}}
    for stem in ("fig07_passkey_by_length", "fig08_passkey_depth_length"):
        assert all(p.stat().st_size > 0 for p in _render(tmp_path / stem, stem, [entry]))


def test_figures_on_a_clean_clone_leave_it_clean(tmp_path):
    """`snakemake figures` on a fresh clone of HEAD re-renders every figure, table and executed notebook
    from the committed results into byte-identical files: `git status --porcelain` stays empty (in
    the environment of constraints.txt, which the committed outputs were rendered in)."""
    import os
    import subprocess
    import sys

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of the project")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = dict(os.environ, PYTHONPATH=str(clone / "src"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "figures", "--forcerun", "render_figure",
                          "render_table"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "render_figure" in run.stdout + run.stderr  # it did render
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"rendering changed committed files:\n{status.stdout}"
