"""The Snakemake DAG: configs resolve, lint is clean, `figures` never plans training or evaluation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake not installed (pip install -e .[workflow])")
COMPUTE_RULES = ("prepare_data", "pretrain", "posttrain", "eval_", "task_")
NOTEBOOK_RULES = ("render_figure", "render_table", "render_table_with_figure")


def snakemake(*args, cwd=ROOT, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run([SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def planned_rules(out: str) -> dict[str, int]:
    """Rule -> job count from a dry run's job-stats table."""
    rules, table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            table = True
            continue
        if table and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            rules[parts[0]] = int(parts[1])
        elif table and parts and parts[0] == "total":
            break
    return rules


def sys_path_study():
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    import study

    return study


def test_paper_config_resolves():
    r = snakemake("all", "-n", "--configfile", "config/paper.yaml")
    rules = planned_rules(r.stdout)
    assert rules.get("pretrain", 0) >= 10 and rules.get("eval_ppl", 0) >= 10
    assert "skipping" in r.stderr and "huggingface-cli download" in r.stderr  # official branches explained


def test_lint_clean():
    r = snakemake("--lint", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout + r.stderr


def test_figures_never_computes_and_ignores_mtimes(tmp_path):
    """On the results present, `figures` plans only notebook rules, whatever the results' mtimes
    (restored afterwards, also when an assertion fails)."""
    files = [p for p in (ROOT / "results").rglob("*") if p.is_file()]
    before = {p: (p.stat().st_atime, p.stat().st_mtime) for p in files}
    try:
        for stamp in (time.time() + 3600, 1_000_000_000):
            for p in files:
                os.utime(p, (stamp, stamp))
            r = snakemake("-n", "figures")
            rules = planned_rules(r.stdout)
            assert not [k for k in rules if k.startswith(COMPUTE_RULES)], rules
            assert set(rules) <= {*NOTEBOOK_RULES, "figures"}, rules
    finally:
        for p, times in before.items():
            os.utime(p, times)


def test_results_target_computes_without_rendering():
    """`results` plans the study's missing runs and results (here: the runs are not in the checkout)
    and replication.json, but no notebook."""
    rules = planned_rules(snakemake("-n", "results").stdout)
    assert rules.get("pretrain", 0) > 0 and rules.get("eval_ppl", 0) > 0 and rules.get("replication") == 1
    assert not set(NOTEBOOK_RULES) & set(rules)


def test_all_plans_compute_for_missing_results():
    rules = planned_rules(snakemake("-n", "all").stdout)
    if not list((ROOT / "results").rglob("*.parquet")):
        assert rules.get("pretrain", 0) > 0 and rules.get("eval_ppl", 0) > 0


def test_schema_rejects_unknown_study_key():
    from lengthgen.config import ConfigError, resolve

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["study"]["pretrain"]["contxts"] = [64]
    with pytest.raises(ConfigError, match="contxts"):
        resolve(cfg)
    bad = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    bad["study"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        resolve(bad)


def test_study_grid_expansion():
    study = sys_path_study()
    s = study.load(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    pre = s.cfg["study"]["pretrain"]
    # grid 1: 4 models at T = 64; grid 2: a second context; grid 3: the 8x run; grid 4: a second warm-up
    runs = [m for m in s.models.values() if m.kind == "pretrain"]
    assert len(runs) == 4 + 1 + 1 + 1
    # milestones: the defaults for every run, a grid's own for the 8x run
    milestones = {m.id for m in s.models.values() if m.kind == "milestone"}
    assert len(milestones) == (len(runs) - 1) * len(pre["milestones"]) + 3
    assert {f"pt/m2-m-slow_T64_8x_w0.1_s0@{m}" for m in ("1x", "2x", "4x")} <= milestones
    assert "pt/m2-m_T64_2x_w0.1_s0@4x" not in milestones
    # milestones only where a pattern asks for them (Fig. 3)
    assert all("@" not in e["id"] for e in s.figure_specs["fig02"])
    assert any("@" in e["id"] for e in s.figure_specs["fig03"])
    # random noise at three sigmas plus the Fig. 5 one
    assert len(s.select(["post/*random_noise*"])) == 3
    # every job's output is unique and every figure input is a planned job
    for fig in study.FIGURES:
        for p in s.figure_inputs(fig):
            assert p in s.jobs


def test_official_skipped_without_checkpoint(tmp_path, monkeypatch):
    study = sys_path_study()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    s = study.load(cfg)
    assert s.skipped and not s.select(["hub/*", "post/hub-*"])
    # a local copy enables the branch
    local = tmp_path / "ckpts" / "mamba2-130m"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    cfg["study"]["official"]["local_dir"] = str(tmp_path / "ckpts")
    s = study.load(cfg)
    assert "hub/mamba2-130m" in s.models and s.models["hub/mamba2-130m"].ref == str(local)
    assert "post/hub-mamba2-130m+state_passing" in s.models


@pytest.mark.slow
def test_smoke_dag_end_to_end(tmp_path):
    """The whole DAG on CPU (config/smoke.yaml, outputs moved under tmp_path): every result is written
    with its stage's kind, every notebook renders, and a second run has nothing to do."""
    from lengthgen.results import read_result

    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg["data"]["root"] = str(tmp_path / "data")
    cfg["study"].update(name="smoke-test", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
                        figures_dir=str(tmp_path / "figures"), notebooks_dir=str(tmp_path / "notebooks"))
    configfile = tmp_path / "smoke.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    r = snakemake("all", "--cores", "2", "--configfile", str(configfile), check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]

    s = sys_path_study().load(cfg)
    kinds = {"eval_ppl": "eval-ppl", "eval_effrem": "eval-effrem", "eval_state_stats": "eval-state-stats",
             "task_passkey": "task-passkey", "task_babilong": "task-babilong", "task_copying": "task-copying",
             "presets": "presets"}
    results = s.all_results()
    assert {s.jobs[p].rule for p in results} == set(kinds)
    for path in results:
        assert read_result(path, kinds[s.jobs[path].rule])["provenance"]["git"]
    for fig in sys_path_study().FIGURES:
        for out in s.figure_outputs(fig):
            assert Path(out).stat().st_size > 0, out
    assert len(list((tmp_path / "notebooks").glob("*.ipynb"))) == len(sys_path_study().FIGURES)
    assert "Nothing to be done" in snakemake("-n", "all", "--configfile", str(configfile)).stdout
