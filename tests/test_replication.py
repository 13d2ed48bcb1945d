"""results/replication.json from raw result files: verdicts and numbers of every claim.

The result files are written in tmp through lengthgen.results with real provenance and the fields
the stages write; the curves are built so that the expected numbers are known exactly.
"""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest
import torch

from lengthgen.cli import main
from lengthgen.evaluate.verdict import length_generalization
from lengthgen.provenance import provenance
from lengthgen.replication import NOT_MEASURED, NOT_SUPPORTED, SUPPORTED, load_results, parse_post_id, replicate
from lengthgen.results import read_table, write_result, write_table

T = 16
BASE = "pt/m2_T16_20x_w0.1_s0"
CONTROL = "pt/m2_T32_20x_w0.1_s0"
PROV = provenance({"seed": 0}, device="cpu")


def write_ppl(root, mid, in_ctx, far, length=T * 32, step=2 * T):
    """A flat curve at ``in_ctx`` up to ``step``, then ``far`` (the far bucket is [256, 512))."""
    curve = torch.full((length,), float(in_ctx), dtype=torch.float64)
    curve[step:] = far
    v = length_generalization(curve, T)
    frame = pd.DataFrame({"position": range(length), "loss": curve.float().numpy()})
    write_table(root / "ppl" / f"{mid}.parquet", "eval-ppl", frame, PROV,
                data={"model": mid, "train_context": T, "length": length, "verdict": v.to_dict()})
    return v


def write_effrem(root, mid, scale):
    rows = [{"distance": d, "cut_point": c, "effrem": scale * (1 - c / (4 * T))}
            for d in ("tv", "js", "cosine") for c in (0, 1, 8, 3 * T, 4 * T - 1)]
    write_table(root / "effrem" / f"{mid}.parquet", "eval-effrem", pd.DataFrame(rows), PROV,
                data={"model": mid, "T": 4 * T, "num_sequences": 2, "distances": ["tv", "js", "cosine"]})


def write_stats(root, mid, growth):
    rows = []
    for p in (T - 1, 2 * T - 1, 8 * T - 1):
        g = 1.0 if p < 2 * T else growth
        for layer, head in [(-1, -1), (0, -1), (1, -1), (0, 0), (0, 1), (1, 0), (1, 1)]:
            rows.append({"position": p, "layer": layer, "head": head, "std": g, "norm": 2 * g})
    write_table(root / "state_stats" / f"{mid}.parquet", "eval-state-stats", pd.DataFrame(rows), PROV,
                data={"model": mid, "length": 8 * T, "stride": T})


def write_copying(root, name, seed, intervention, acc, parameters=None):
    ev = {"length": 300, "num_strings": 4, "teacher_forced": {"char_accuracy": min(1.0, acc + 0.1), "string_accuracy": 0.0},
          "greedy": {"char_accuracy": acc, "string_accuracy": 0.0}}
    write_result(root / "copying" / f"{name}_s{seed}.json", "task-copying",
                 {"arch": "mamba2", "intervention": intervention, "eval_length": ev, "train_length": ev,
                  **({"parameters": parameters} if parameters else {}),
                  "train": {"steps": 4, "min_length": 50, "max_length": 100, "final_loss": 1.0}}, PROV)


def write_passkey(root, setting, mid, protocol, acc_by_length):
    cells = [{"length": L, "depth": d, "accuracy": a, "n": 1} for L, a in acc_by_length.items() for d in (0.0, 1.0)]
    write_result(root / "passkey" / setting / f"{mid}.json", "task-passkey",
                 {"model": mid, "protocol": protocol, "accuracy": cells, "samples": [],
                  "overall_accuracy": sum(c["accuracy"] for c in cells) / len(cells)}, PROV)


def write_babilong(root, setting, mid, acc_by_length):
    cells = [{"task": "qa1", "length": L, "n": 1, "accuracy": a} for L, a in acc_by_length.items()]
    write_result(root / "babilong" / setting / f"{mid}.json", "task-babilong",
                 {"model": mid, "source": "generated", "few_shot": True, "protocol": "none", "accuracy": cells,
                  "samples": []}, PROV)


@pytest.fixture()
def full(tmp_path):
    """A failing-but-fixed base, every intervention, and every task."""
    root = tmp_path / "results"
    write_ppl(root, BASE, 2.0, 2.3, step=4 * T)          # fails: gap 0.3, rising past the reference bucket [32, 64)
    write_ppl(root, CONTROL, 2.0, 2.0)                   # its control (T = 32) stays flat
    write_ppl(root, "pt/m2_T16_20x_w0.1_s0@5x", 2.1, 2.12)  # milestone: gap 0.02, generalizes by the far criterion
    write_ppl(root, "pt/m2_T32_20x_w0.25_s0", 1.9, 1.9, length=T * 64)
    write_ppl(root, f"post/{BASE[3:]}+state_passing", 2.0, 2.005)
    write_ppl(root, f"post/{BASE[3:]}+tbtt", 2.0, 2.1)
    write_ppl(root, f"post/{BASE[3:]}+fitted_noise", 2.0, 2.05)
    write_ppl(root, f"post/{BASE[3:]}+random_noise-s0.1", 2.0, 2.2)
    write_effrem(root, BASE, 0.5)
    write_effrem(root, f"post/{BASE[3:]}+state_passing", 0.2)
    write_stats(root, BASE, 4.0)
    write_stats(root, f"post/{BASE[3:]}+state_passing", 1.5)
    for seed, (a, b) in enumerate([(0.30, 0.80), (0.32, 0.85), (0.34, 0.90)]):
        write_copying(root, "mamba2", seed, "zero", a)
        write_copying(root, "mamba2-sp", seed, "state_passing", b)
    write_passkey(root, "finetune", BASE, "standard", {32: 1.0, 64: 0.5, 128: 0.0})
    write_passkey(root, "finetune-fitted-noise", BASE, "fitted_noise", {32: 1.0, 64: 1.0, 128: 0.5})
    write_babilong(root, "few-shot", BASE, {"0k": 0.5, "1k": 0.1, "2k": 0.0})
    write_babilong(root, "few-shot", f"post/{BASE[3:]}+state_passing", {"0k": 0.5, "1k": 0.3, "2k": 0.2})
    write_babilong(root, "few-shot", f"post/{BASE[3:]}+tbtt", {"0k": 0.4, "1k": 0.2, "2k": 0.0})
    return root


def test_post_ids():
    assert parse_post_id("post/m_T128_20x_w0.1_s0+random_noise-s0.5") == {
        "base": "pt/m_T128_20x_w0.1_s0", "intervention": "random_noise", "sigma": 0.5}
    assert parse_post_id("post/hub-mamba2-130m+state_passing")["base"] == "hub/mamba2-130m"


def test_every_claim_from_full_results(full):
    c = replicate(load_results(full))
    f = c["failure_from_scratch"]
    assert f["verdict"] == SUPPORTED and f["base"] == BASE
    assert f["base_in_context_min"] == pytest.approx(2.0) and f["base_loss_far"] == pytest.approx(2.3)
    assert f["fixed"] == f"post/{BASE[3:]}+state_passing" and f["fixed_loss_far"] == pytest.approx(2.005)
    assert f["fixed_in_context_min"] == pytest.approx(2.0)
    assert f["failing"] == [BASE] and f["base_control"] == CONTROL
    assert f["base_excess_gap"] == pytest.approx(0.3, abs=1e-6)
    rows = {r["id"]: r for r in f["runs"]}
    assert rows[CONTROL]["fails"] is None and rows["pt/m2_T16_20x_w0.1_s0@5x"]["fails"] is None
    assert set(f["undetermined"]) == {CONTROL, "pt/m2_T16_20x_w0.1_s0@5x", "pt/m2_T32_20x_w0.25_s0"}
    assert f["by_tokens"]["20x"]["failing"] == 1 and f["by_tokens"]["5x"]["failing"] == 0
    assert f["by_warmup"]["0.25"]["mean_far_gap"] == pytest.approx(0.0, abs=1e-6)
    assert f["provenance"]["devices"] == ["cpu"] and f["provenance"]["commits"]
    assert f"{full}/ppl/{BASE}.parquet" in f["raw"]

    i = c["interventions_compared"]
    assert i["verdict"] == SUPPORTED and i["best"] == f"post/{BASE[3:]}+state_passing"
    assert i["best_loss_far"] - i["base_in_context_min"] == pytest.approx(0.005, abs=1e-6)
    assert i["best_fraction_removed"] == pytest.approx(0.295 / 0.3, abs=1e-5)
    assert f["fixed_fraction_removed"] == pytest.approx(0.295 / 0.3, abs=1e-5) and f["base_rule"] == "control"
    assert {r["intervention"] for r in i["interventions"]} == {"state_passing", "tbtt", "fitted_noise", "random_noise"}
    assert [r["sigma"] for r in i["interventions"] if r["intervention"] == "random_noise"] == [0.1]
    assert "missing" not in i

    e = c["effective_remembrance"]
    assert e["verdict"] == SUPPORTED
    d = e["pairs"][0]["distances"]["tv"]
    assert e["pairs"][0]["T_over_train_context"] == 4
    assert d["cut_point"] == 3 * T and d["base"] == pytest.approx(0.5 / 4) and d["state_passing"] == pytest.approx(0.2 / 4)

    s = c["state_statistics"]
    assert s["verdict"] == SUPPORTED
    p = s["pairs"][0]
    assert p["base_whole"]["growth"] == pytest.approx(4.0) and p["state_passing_whole"]["growth"] == pytest.approx(1.5)
    assert p["base_whole"]["position_T"] == T - 1 and p["heads"] == 4 and p["heads_lower_with_state_passing"] == 1.0
    assert [x["layer"] for x in p["per_layer"]] == [0, 1]

    k = c["copying"]
    assert k["verdict"] == SUPPORTED
    assert k["base_char_acc_mean"] == pytest.approx(0.32) and k["state_passing_char_acc_mean"] == pytest.approx(0.85)
    assert k["base_char_acc_std"] == pytest.approx((2 * 0.02**2 / 3) ** 0.5)
    assert k["seeds"] == {"zero": 3, "state_passing": 3} and k["eval_lengths"] == [300]

    pk = c["passkey"]
    assert pk["verdict"] == SUPPORTED
    m = pk["models"][0]
    assert m["far_lengths_from"] == 4 * T
    assert m["standard"]["far_accuracy"] == pytest.approx(0.25) and m["fitted_noise"]["far_accuracy"] == pytest.approx(0.75)

    b = c["babilong"]
    assert b["verdict"] == SUPPORTED
    assert b["settings"][0]["base"]["mean_accuracy_past_T"] == pytest.approx(0.05)
    assert b["settings"][0]["state_passing"]["mean_accuracy_past_T"] == pytest.approx(0.25)


def test_criterion_not_met(tmp_path):
    """A raw gap that its control shows too (shared token difficulty) is no failure; the post-trained
    versions are still reported, against a base with nothing to fix."""
    root = tmp_path / "r"
    write_ppl(root, BASE, 2.0, 2.3)      # raw gap 0.3 ...
    write_ppl(root, CONTROL, 2.0, 2.3)   # ... which the T = 32 control has at the same positions
    write_ppl(root, f"post/{BASE[3:]}+state_passing", 2.0, 2.25)
    c = replicate(load_results(root))
    f = c["failure_from_scratch"]
    assert f["verdict"] == NOT_SUPPORTED and f["base"] is None and f["representative"] == BASE
    assert f["raw_failing"] == [BASE, CONTROL] and f["runs"][0]["excess_gap"] == pytest.approx(0.0, abs=1e-6)
    assert "largest excess over a control 0.0000" in f["reason"]
    assert f["base_loss_far"] == pytest.approx(2.3) and f["fixed_loss_far"] == pytest.approx(2.25)
    i = c["interventions_compared"]
    assert i["verdict"] == NOT_SUPPORTED and "nothing to fix" in i["reason"]
    assert i["interventions"][0]["loss_far_minus_base_far"] == pytest.approx(-0.05, abs=1e-6)


def test_no_control_is_undetermined(tmp_path):
    root = tmp_path / "r"
    write_ppl(root, BASE, 2.0, 2.3)
    f = replicate(load_results(root))["failure_from_scratch"]
    assert f["verdict"] == NOT_SUPPORTED and f["undetermined"] == [BASE] and f["raw_failing"] == [BASE]
    assert "no run has a longer-context control" in f["reason"]


def test_interventions_short_of_fix_fraction(full):
    (full / "ppl" / "post" / f"{BASE[3:]}+state_passing.parquet").unlink()
    write_ppl(full, f"post/{BASE[3:]}+tbtt", 2.0, 2.25)
    write_ppl(full, f"post/{BASE[3:]}+fitted_noise", 2.0, 2.15)   # removes (2.3 - 2.15) / 0.3 = 50% < 60%
    c = replicate(load_results(full))
    i = c["interventions_compared"]
    assert i["verdict"] == NOT_SUPPORTED and i["best"] == f"post/{BASE[3:]}+fitted_noise"
    assert i["best_fraction_removed"] == pytest.approx(0.5, abs=1e-5) and "short of 60%" in i["reason"]
    assert i["ranking"][0] == i["best"] and i["ranking"][-1] == f"post/{BASE[3:]}+tbtt"
    write_ppl(full, f"post/{BASE[3:]}+zero", 2.0, 1.9)   # continued training: a control, never the best fix
    c = replicate(load_results(full))
    assert c["interventions_compared"]["best"] == f"post/{BASE[3:]}+fitted_noise"
    assert c["interventions_compared"]["continued_training"]["loss_far"] == pytest.approx(1.9)
    assert c["failure_from_scratch"]["fixed"] == f"post/{BASE[3:]}+fitted_noise"
    assert i["missing"] == [f"{full}/ppl/post/{BASE[3:]}+state_passing.parquet"]
    assert c["failure_from_scratch"]["fixed_intervention"] == "fitted_noise"


def test_not_supported_when_state_passing_does_not_help(full):
    write_stats(full, f"post/{BASE[3:]}+state_passing", 5.0)
    write_effrem(full, f"post/{BASE[3:]}+state_passing", 0.9)
    for seed in range(3):
        write_copying(full, "mamba2-sp", seed, "state_passing", 0.33)
    c = replicate(load_results(full))
    assert c["state_statistics"]["verdict"] == NOT_SUPPORTED
    assert c["effective_remembrance"]["verdict"] == NOT_SUPPORTED
    assert c["copying"]["verdict"] == NOT_SUPPORTED


def test_missing_results_not_measured(tmp_path):
    root = tmp_path / "empty"
    write_copying(root, "mamba2", 0, "zero", 0.3)
    c = replicate(load_results(root))
    assert all(x["verdict"] == NOT_MEASURED for x in c.values())
    assert c["failure_from_scratch"]["missing"] == [f"{root}/ppl/pt/*.parquet"]
    assert "found {'mamba2 preset None': {'zero': 1, 'state_passing': 0}}" in c["copying"]["reason"]
    assert c["copying"]["raw"] == [f"{root}/copying/mamba2_s0.json"]


def test_too_short_evaluation_not_measured(tmp_path):
    root = tmp_path / "r"
    write_ppl(root, BASE, 2.0, 2.5, length=T * 8)  # far bucket [64, 128) starts at 4 T < 16 T
    f = replicate(load_results(root))["failure_from_scratch"]
    assert f["verdict"] == NOT_MEASURED and "eval.length" in f["reason"]


def test_stage_writes_the_layout(full, tmp_path):
    out = tmp_path / "replication.json"
    assert main(["replication", "--results", str(full), "--out", str(out)]) == 0
    obj = json.loads(out.read_text())
    assert set(obj) == {"claims", "provenance"}
    assert obj["claims"]["failure_from_scratch"]["verdict"] == SUPPORTED
    assert obj["provenance"]["git"] and "argv" not in obj["provenance"]
    assert "NaN" not in out.read_text()


def test_bad_result_file_is_an_error(tmp_path):
    from lengthgen.results import ResultError

    bad = tmp_path / "r" / "copying" / "x_s0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{}")
    with pytest.raises(ResultError, match="not a lengthgen result"):
        load_results(tmp_path / "r")


def test_control_evaluated_shorter_is_no_control(tmp_path):
    root = tmp_path / "r"
    write_ppl(root, BASE, 2.0, 2.3, step=4 * T)
    write_ppl(root, CONTROL, 2.0, 2.0, length=T * 16)  # ends at 256: cannot be read at the far bucket [256, 512)
    f = replicate(load_results(root))["failure_from_scratch"]
    row = {r["id"]: r for r in f["runs"]}[BASE]
    assert row["control"] is None and row["fails"] is None and BASE in f["undetermined"]


def write_ppl_sequences(root, mid, in_ctx, far, noise, n=64, length=T * 32, step=2 * T, seed=0):
    """Like write_ppl, from ``n`` per-sequence curves (the curve plus N(0, noise) per sequence and
    position): the verdict then carries bootstrap intervals, as eval-ppl writes it."""
    curve = torch.full((length,), float(in_ctx), dtype=torch.float64)
    curve[step:] = far
    g = torch.Generator().manual_seed(seed)
    losses = curve + noise * torch.randn(n, length, generator=g, dtype=torch.float64)
    v = length_generalization(None, T, losses=losses, num_bootstrap=200)
    frame = pd.DataFrame({"position": range(length), "loss": losses.mean(0).float().numpy()})
    write_table(root / "ppl" / f"{mid}.parquet", "eval-ppl", frame, PROV,
                data={"model": mid, "train_context": T, "length": length, "num_sequences": n, "verdict": v.to_dict()})
    return v


def test_interval_rule_gates_the_failure(tmp_path):
    """With per-sequence losses the far gap's interval decides, no control needed: a clear gap fails,
    a gap over the margin that the interval does not clear is no failure."""
    root = tmp_path / "r"
    clear = write_ppl_sequences(root, BASE, 2.0, 2.3, noise=0.5)
    lo, hi = clear.far_gap_ci
    # the true gap is 0.3; the point estimate is biased high (p* is a minimum over noisy positions),
    # the basic bootstrap interval undoes that bias and covers the truth
    assert clear.far_gap > 0.3 and lo < 0.3 < hi and lo >= 0.05 and clear.fails_far and clear.num_sequences == 64
    write_ppl_sequences(root, f"post/{BASE[3:]}+state_passing", 2.0, 2.05, noise=0.5, seed=1)
    c = replicate(load_results(root))
    f = c["failure_from_scratch"]
    assert f["verdict"] == SUPPORTED and f["base"] == BASE and f["base_rule"] == "interval"
    assert f["base_far_gap_ci"] == pytest.approx(list(clear.far_gap_ci)) and f["base_control"] is None
    assert f["fixed_fraction_removed"] == pytest.approx((clear.loss_far - f["fixed_loss_far"]) / clear.far_gap)
    assert c["interventions_compared"]["verdict"] == SUPPORTED

    noisy_root = tmp_path / "noisy"
    noisy = write_ppl_sequences(noisy_root, BASE, 2.0, 2.07, noise=1.0, n=32)
    assert noisy.far_gap >= 0.05 and noisy.far_gap_ci[0] < 0.05 and not noisy.fails_far
    f = replicate(load_results(noisy_root))["failure_from_scratch"]
    assert f["verdict"] == NOT_SUPPORTED and f["raw_failing"] == [BASE] and f["undetermined"] == []
    assert "largest lower end of a far-gap interval" in f["reason"]


def test_stage_rejects_a_non_json_out(tmp_path, capsys):
    assert main(["replication", "--results", str(tmp_path), "--out", str(tmp_path / "claims.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out must name a .json file" in err[0] and not (tmp_path / "claims.txt").exists()


def test_copying_compares_within_one_model_size_and_the_largest_decides(full):
    """Results of a larger model (its parameter count recorded) are not pooled with the small ones:
    the largest size with 3 seeds of both variants gives the verdict; every size is reported."""
    for seed, base in enumerate([0.25, 0.27, 0.29]):
        write_copying(full, "mamba2-45m", seed, "zero", base, parameters=45_000_000)
        write_copying(full, "mamba2-45m-sp", seed, "state_passing", 0.28, parameters=45_000_000)
    k = replicate(load_results(full))["copying"]
    assert k["scale"] == "mamba2 45.0M" and k["verdict"] == NOT_SUPPORTED     # +0.01, within the base's std 0.016
    assert k["base_char_acc_mean"] == pytest.approx(0.27) and k["seeds"] == {"zero": 3, "state_passing": 3}
    assert set(k["scales"]) == {"mamba2 45.0M", "mamba2 preset None"}
    assert k["scales"]["mamba2 preset None"]["state_passing_char_acc_mean"] == pytest.approx(0.85)
    assert all("mamba2-45m" in p for p in k["raw"])
    write_copying(full, "mamba2-1b", 0, "zero", 0.9, parameters=10**9)            # too few seeds: not the verdict
    k = replicate(load_results(full))["copying"]
    assert k["scale"] == "mamba2 45.0M" and k["scales"]["mamba2 1000.0M"]["seeds"] == {"zero": 1, "state_passing": 0}


def test_the_removed_far_loss_is_paired_by_sequence(tmp_path):
    """Base and intervention scored on the same windows: the interval of the far loss removed comes
    from the per-sequence differences; results of other windows (or without them) get none."""
    root = tmp_path / "r"
    write_ppl(root, BASE, 2.0, 2.3, step=4 * T)                          # p* 2.0, far 2.3: excess 0.3
    write_ppl(root, CONTROL, 2.0, 2.0)
    write_ppl(root, f"post/{BASE[3:]}+tbtt", 2.0, 2.1)
    write_ppl(root, f"post/{BASE[3:]}+state_passing", 2.0, 2.2)
    base_far = [2.3 + d for d in (-0.1, 0.0, 0.1, 0.0)]
    tbtt_far = [2.1 + d for d in (-0.1, 0.05, 0.05, 0.0)]               # differences 0.2, 0.15, 0.25, 0.2
    for mid, seq, windows in [(BASE, base_far, "w1"), (f"post/{BASE[3:]}+tbtt", tbtt_far, "w1"),
                              (f"post/{BASE[3:]}+state_passing", [2.2] * 4, "w2")]:
        path = root / "ppl" / f"{mid}.parquet"
        frame, header = read_table(path, "eval-ppl")
        write_table(path, "eval-ppl", frame, PROV, data={**header["data"], "sequence_loss_far": seq, "windows": windows})
    i = replicate(load_results(root))["interventions_compared"]
    rows = {r["intervention"]: r for r in i["interventions"]}
    diffs = [0.2, 0.15, 0.25, 0.2]
    half = 1.959964 * statistics.stdev(diffs) / 2
    assert rows["tbtt"]["far_reduction_ci"] == pytest.approx([0.2 - half, 0.2 + half], abs=1e-5)
    assert rows["tbtt"]["fraction_removed_ci"] == pytest.approx([(0.2 - half) / 0.3, (0.2 + half) / 0.3], abs=1e-4)
    assert i["best"] == f"post/{BASE[3:]}+tbtt" and i["best_fraction_removed_ci"] == rows["tbtt"]["fraction_removed_ci"]
    assert rows["state_passing"]["far_reduction_ci"] is None                  # other windows: no pairing
