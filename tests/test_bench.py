"""CPU checks of the benchmark harness logic: FLOP/byte counts, cut-point token bounds, the ratios
and summary the report assembles, argument parsing, failure capture. No timing claims."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, effrem_cost, flops, report, run, upstream  # noqa: E402
from lengthgen.models import build_model, make_config  # noqa: E402


# ---------------------------------------------------------------------------- FLOP and byte counts
def test_matmul_params_counts_every_linear_weight_and_the_tied_head():
    model = build_model("mamba2", "tiny")
    c = model.config  # d_model 64, d_inner 128, d_state 16, headdim 16 -> 8 heads, 1 group
    in_proj = c.d_model * (2 * c.d_inner + 2 * c.ngroups * c.d_state + c.nheads)
    per_layer = in_proj + c.d_inner * c.d_model
    assert flops.matmul_params(model) == c.n_layers * per_layer + c.padded_vocab_size * c.d_model == 70656


def test_scan_flops_and_bytes_follow_the_documented_formulas():
    m2 = make_config("mamba2", "tiny")  # H=8, P=16, N=16, G=1, Q=32, 2 layers
    assert flops.scan_flops_per_token("mamba2", m2) == 2 * (1 * 2 * 32 * 16 + 8 * (2 * 32 * 16 + 4 * 16 * 16)) == 34816
    assert flops.scan_bytes_per_token("mamba2", m2) == 2 * (2 * (128 + 32) + 4 * 8 + 2 * 128) == 1216
    gla = make_config("gla", "tiny")  # 2 heads, K = 16, V = 32 per head, 2 layers
    assert flops.scan_flops_per_token("gla", gla) == 2 * 2 * (2 * 64 * (16 + 32) + 4 * 16 * 32) == 32768
    m1 = make_config("mamba1", "tiny")  # d_inner 128, d_state 16
    assert flops.scan_flops_per_token("mamba1", m1) == 2 * 8 * 128 * 16
    with pytest.raises(ValueError, match="no scan FLOP count"):
        flops.scan_flops_per_token("transformer", m2)


def test_train_flops_is_three_forwards_and_mfu_divides_by_the_peak():
    model = build_model("gla", "tiny")
    tokens = 1000
    fwd = 2 * flops.matmul_params(model) * tokens + flops.scan_flops_per_token("gla", model.config) * tokens
    assert flops.forward_flops(model, "gla", tokens) == fwd
    assert flops.train_flops(model, "gla", tokens) == 3 * fwd
    assert flops.mfu(792e12, 2.0, 792e12) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        flops.mfu(1.0, 0.0, 792e12)


def test_roofline_picks_the_bound_from_the_ridge():
    r = flops.roofline(flops=1000.0, bytes_moved=10.0, peak=100.0, bandwidth=10.0)  # intensity 100, ridge 10
    assert r["bound"] == "compute" and r["intensity_flop_per_byte"] == 100 and r["floor_s"] == pytest.approx(10.0)
    r = flops.roofline(flops=50.0, bytes_moved=10.0, peak=100.0, bandwidth=1.0)  # intensity 5, ridge 100
    assert r["bound"] == "memory" and r["floor_s"] == pytest.approx(10.0)
    # the real presets: the chunked GLA scan is memory-bound on an H200, the LM-head GEMM compute-bound
    roof = report.rooflines()
    assert roof["gla-70m"]["scan"]["bound"] == "memory"
    assert roof["mamba2-130m"]["lm_head_matmul"]["bound"] == "compute"


# ---------------------------------------------------------------------------- Effective Remembrance bound
def test_effrem_token_counts():
    assert effrem_cost.bound_tokens(8, [0, 2, 5]) == 8 + 6 + 3
    assert effrem_cost.bound_tokens(8, [2, 5]) == 8 + 6 + 3        # the full pass (t = 0) is always read
    assert effrem_cost.grouped_tokens(8, [2, 5], group_size=2) == 2 * 8 + 1 * 3
    cuts = effrem_cost.cut_points(8192, 64)
    assert len(cuts) >= 64 and len(set(cuts)) == len(cuts) and cuts[0] == 0 and max(cuts) < 8192
    with pytest.raises(ValueError, match="distinct cut points"):
        effrem_cost.cut_points(10, 11)


# ---------------------------------------------------------------------------- reference configs
def test_reference_configs_translate_back_to_ours():
    from lengthgen.models import gla, rwkv6
    from lengthgen.models.checkpoint import mamba_ssm_config

    ours = make_config("mamba2", "mamba2-130m")
    arch, back = mamba_ssm_config(json.loads(json.dumps(upstream.mamba_ssm_config_dict(ours))))
    assert arch == "mamba2" and back == ours
    for module, arch in ((gla, "gla"), (rwkv6, "rwkv6")):
        ours = make_config(arch, f"{arch}-70m")
        back = module.config_from_fla({"model_type": arch, **upstream.fla_config_dict(arch, ours)})
        assert back.padded_vocab_size == ours.padded_vocab_size
        assert back.replace(vocab_size=ours.vocab_size, pad_vocab_size_multiple=ours.pad_vocab_size_multiple) == ours


def test_missing_reference_package_gives_our_model_and_the_reason(monkeypatch):
    def broken(*a, **k):
        raise ModuleNotFoundError("No module named 'fla'")

    monkeypatch.setattr(upstream, "fla_pair", broken)
    ours, theirs, info = upstream.pair("gla", "tiny")
    assert theirs is None and ours.arch == "gla"
    assert info["unavailable"] == "ModuleNotFoundError: No module named 'fla'"


# ---------------------------------------------------------------------------- failure capture
def test_guarded_records_errors_and_flags_out_of_memory():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 100.00 GiB")

    rec = common.guarded(oom)
    assert rec["oom"] is True and rec["error"].startswith("OutOfMemoryError: CUDA out of memory")
    rec = common.guarded(lambda: 1 / 0)
    assert rec["error"] == "ZeroDivisionError: division by zero" and "oom" not in rec
    assert common.guarded(lambda: {"x": 1}) == {"x": 1}
    assert common.scrub(f'File "{ROOT}/bench/x.py" in /opt/py/lib/python3.12/site-packages/fla/a.py') == \
        'File "bench/x.py" in fla/a.py'


def test_section_file_is_rewritten_after_each_record(tmp_path):
    s = common.SectionFile(tmp_path, "demo", {"options": {}})
    assert json.loads((tmp_path / "demo.json").read_text())["complete"] is False
    s.record("a", {"v": 1})
    on_disk = json.loads((tmp_path / "demo.json").read_text())
    assert on_disk["results"] == {"a": {"v": 1}} and on_disk["complete"] is False
    s.finish(wall_s=1.5)
    on_disk = json.loads((tmp_path / "demo.json").read_text())
    assert on_disk["complete"] is True and on_disk["wall_s"] == 1.5


# ---------------------------------------------------------------------------- command line
def test_parse_args():
    args = run.parse_args(["--out", "d", "--device", "cpu", "--tiny", "--only", "train", "eval"])
    assert args.only == ["train", "eval"] and args.tiny and args.device == "cpu" and not args.quick
    with pytest.raises(SystemExit):
        run.parse_args(["--out", "d", "--device", "cpu"])  # real presets on the CPU are not results
    assert run.parse_args(["--out", "d", "--device", "cpu", "--only", "cpu"]).only == ["cpu"]  # figures wall time
    with pytest.raises(SystemExit):
        run.parse_args(["--out", "d", "--only", "nonsense"])
    assert "cpu" not in run.DEFAULT and run.DEFAULT[0] == "hardware"
    assert "study_train" not in run.DEFAULT and "study_train" in run.SECTIONS  # only when named
    args = run.parse_args(["--out", "d", "--device", "cpu", "--tiny", "--only", "study_train", "--baseline-commit",
                           "9f2cbc4", "--study-jobs", "1", "2", "--study-contexts", "64", "--study-models", "m2-m"])
    assert (args.baseline_commit, args.study_jobs, args.study_contexts, args.study_models) == \
        ("9f2cbc4", [1, 2], [64], ["m2-m"])


def test_a_failing_section_is_recorded_and_the_next_runs(tmp_path, monkeypatch):
    from bench import hardware

    def explode(*a, **k):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(hardware, "run", explode)
    assert run.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "hardware", "mamba1_scan"]) == 0
    sections = report.load_sections(tmp_path)
    assert sections["hardware"]["error"]["error"] == "RuntimeError: no such kernel"
    assert sections["hardware"]["complete"] is True
    assert sections["mamba1_scan"]["results"]["scan"]["unavailable"].startswith("bench/mamba1_scan.py times GPU")
    assert sections["mamba1_scan"]["provenance"]["hardware"]["device"] == "cpu"


def test_ssd_one_chunk_section_is_recorded_as_unavailable_without_cuda(tmp_path):
    assert run.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "ssd_one_chunk"]) == 0
    section = report.load_sections(tmp_path)["ssd_one_chunk"]
    assert section["complete"] is True
    assert section["results"] == {"T16": {"unavailable": "the kernels run on CUDA only; this run has no CUDA device"}}


def test_conv_tiles_section_is_recorded_as_unavailable_without_cuda(tmp_path):
    assert run.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "conv_tiles"]) == 0
    section = report.load_sections(tmp_path)["conv_tiles"]
    assert section["complete"] is True
    assert section["results"] == {"tiny": {"unavailable": "the kernel runs on CUDA only; this run has no CUDA device"}}


# ---------------------------------------------------------------------------- report
def _section(name, results, device="cuda", **extra):
    prov = {"git": {"commit": "abc", "dirty": False}, "config_hash": None, "seed": 0,
            "hardware": {"device": device, "gpu": "NVIDIA H200", "gpu_count": 1, "cuda": "13.0"},
            "versions": {"torch": "2.11"}, "argv": []}
    return {"section": name, "complete": True, "options": {"device": device, "quick": False, "tiny": False},
            "provenance": prov, "results": results, **extra}


def synthetic_sections(device="cuda"):
    train = {"mamba2-45m": {"ratio_ours_vs_theirs": 1.2, "ours": {"train_tokens_per_s": 120.0},
                            "theirs": {"train_tokens_per_s": 100.0}},
             "mamba2-130m": {"ratio_ours_vs_theirs": 0.9, "ours": {"train_tokens_per_s": 90.0},
                             "theirs": {"train_tokens_per_s": 100.0}},
             "gla-70m": {"ratio_ours_vs_theirs": 1.05, "ours": {"train_tokens_per_s": 105.0},
                         "theirs": {"train_tokens_per_s": 100.0}},
             "rwkv6-70m": {"ratio_ours_vs_theirs": 0.9, "ours": {"train_tokens_per_s": 90.0},
                           "theirs": {"train_tokens_per_s": 100.0}},
             "rwkv6-70m:gpu_bound": {"ratio_ours_vs_theirs": 0.95, "ours": {"train_tokens_per_s": 95.0},
                                     "theirs": {"train_tokens_per_s": 100.0}}}
    inter = {"mamba2": {"overhead": {"state_passing": 0.01, "fitted_noise": 0.025, "tbtt": 0.02}}}
    ev = {"train_shape_forward": {"tokens_per_s": 1000.0},
          "8192": {"streamed": {"tokens_per_s": 700.0, "peak_mem_bytes": 2 * 2**30},
                   "full": {"tokens_per_s": 900.0, "peak_mem_bytes": 3 * 2**30}},
          "131072": {"streamed": {"tokens_per_s": 850.0, "peak_mem_bytes": 2.1 * 2**30},
                     "full": {"error": "OutOfMemoryError: CUDA out of memory", "oom": True}}}
    return {"train": _section("train", train, device), "interventions": _section("interventions", inter, device),
            "eval": _section("eval", ev, device, ratio_lengths={"short": 8192, "long": 131072})}


def test_ratios_from_the_sections():
    r = report.ratios(synthetic_sections())
    assert r == {"mamba2_train_vs_mamba_ssm": 0.9, "gla_train_vs_fla": 1.05,
                 "rwkv6_train_vs_fla": 0.95,  # the GPU-bound shape where measured
                 "intervention_overhead_max": 0.025,
                 "eval_128k_peak_mem_vs_8k": pytest.approx(1.05), "eval_128k_tput_vs_train_fwd": 0.85,
                 "study_train_vs_before": None}
    assert report.meets_goal("mamba2_train_vs_mamba_ssm", 0.9) is False
    assert report.meets_goal("intervention_overhead_max", 0.025) is True
    assert report.meets_goal("gla_train_vs_fla", None) is None
    assert all(v is None for v in report.ratios({}).values())


def test_summary_file_has_exactly_provenance_ratios_raw(tmp_path):
    from lengthgen.results import read_result

    result = report.summary(synthetic_sections())
    path = report.write_summary(result, tmp_path / "summary.json")
    obj = read_result(path, kind="bench_summary")
    assert set(obj["data"]) == {"provenance", "ratios", "raw"}
    assert obj["provenance"] == obj["data"]["provenance"]
    assert obj["provenance"]["hardware"]["gpu"] == "NVIDIA H200"
    assert obj["data"]["ratios"]["gla_train_vs_fla"] == 1.05
    assert "provenance" not in obj["data"]["raw"]["train"] and "roofline" in obj["data"]["raw"]
    assert "OutOfMemoryError" in report.table(synthetic_sections())


def test_summary_refuses_smoke_runs_unless_asked(tmp_path):
    sections = synthetic_sections(device="cpu")
    with pytest.raises(report.ReportError, match="smoke run"):
        report.summary(sections)
    assert report.summary(sections, smoke_ok=True)["raw"]["smoke_sections"] == ["eval", "interventions", "train"]


def test_figure_is_byte_stable(tmp_path):
    result = report.summary(synthetic_sections())
    outs = [str(tmp_path / "a.pdf"), str(tmp_path / "a.png")]
    report.figure(result, outs)
    first = [Path(p).read_bytes() for p in outs]
    report.figure(result, outs)
    assert [Path(p).read_bytes() for p in outs] == first
    assert first[0].startswith(b"%PDF") and b"CreationDate" not in first[0]


class FlaLike(torch.nn.Module):
    """Stands in for an fla model: same weights as ours, fla's call signature and output."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, use_cache):
        assert use_cache is False
        return type("Out", (), {"logits": self.inner(input_ids)[0]})()


def test_train_case_measures_ours_and_a_reference_with_the_same_batch(monkeypatch):
    from bench import train_speed

    ours = build_model("gla", "tiny", seed=0)
    theirs = FlaLike(build_model("gla", "tiny", seed=0))
    monkeypatch.setattr(upstream, "pair", lambda arch, preset, seed=0: (ours, theirs, {"reference": "fake"}))
    out = train_speed.bench_case("gla", "gla-70m", common.Options(device="cpu", tiny=True))
    assert out["preset"] == "tiny" and out["tokens_per_step"] == 2 * 64
    assert out["train_flops_per_step"] == flops.train_flops(ours, "gla", 128)
    for side in ("ours", "theirs"):
        assert "error" not in out[side], out[side]
        assert out[side]["train_tokens_per_s"] > 0 and out[side]["forward_tokens_per_s"] > 0
    assert out["ratio_ours_vs_theirs"] == pytest.approx(out["ours"]["train_tokens_per_s"] / out["theirs"]["train_tokens_per_s"])
    assert "train_profile" not in out["ours"]
    # --train-profile: each side's step through torch.profiler, its operators named
    prof = train_speed.bench_case("gla", "gla-70m", common.Options(device="cpu", tiny=True), profile=True)
    for side in ("ours", "theirs"):
        table = prof[side]["train_profile"]
        names = {r["name"] for r in table["top_host"]}
        assert table["host_us"] > 0 and any("mm" in n or "linear" in n for n in names), names
        assert any("Optimizer.step" in n or "adamw" in n.lower() for n in names), names


def test_repeated_runs_give_the_median_ratio_and_keep_every_value(tmp_path):
    first = synthetic_sections()
    second, third = synthetic_sections(), synthetic_sections()
    second["train"]["results"]["mamba2-130m"]["ratio_ours_vs_theirs"] = 1.1   # min over presets: 1.1
    third["train"]["results"]["mamba2-130m"]["ratio_ours_vs_theirs"] = 0.5    # min over presets: 0.5
    del second["eval"], third["eval"]  # a repeat of some sections only
    third["interventions"]["results"]["mamba2"]["overhead"]["tbtt"] = 0.2
    result = report.summary(first, repeats=[second, third])
    runs = result["raw"]["ratio_runs"]
    assert runs["mamba2_train_vs_mamba_ssm"]["values"] == [0.9, 1.1, 0.5]
    assert result["ratios"]["mamba2_train_vs_mamba_ssm"] == 0.9  # the median, not the first run
    assert runs["intervention_overhead_max"]["values"] == [0.025, 0.025, 0.2]
    assert result["ratios"]["intervention_overhead_max"] == 0.025
    assert runs["eval_128k_tput_vs_train_fwd"]["n"] == 1 and result["ratios"]["eval_128k_tput_vs_train_fwd"] == 0.85
    assert [r["commit"] for r in result["raw"]["repeats"]] == ["abc", "abc"]
    assert "provenance" not in result["raw"]["repeats"][0]["train"]
    assert "median of 3 runs, 0.5-1.1" in report.table(first, result)
    with pytest.raises(report.ReportError, match="smoke run"):
        report.summary(first, repeats=[synthetic_sections(device="cpu")])
    report.figure(result, [str(tmp_path / "r.png")])
    assert (tmp_path / "r.png").stat().st_size > 0


def test_profile_section_separates_launch_from_device_time_and_ranks_operators(tmp_path):
    assert run.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "profile"]) == 0
    results = report.load_sections(tmp_path)["profile"]["results"]
    for case, length in (("forward_streamed_chunk", 128), ("forward_training_shape", 64)):
        r = results[case]
        assert r["length"] == length and 0 < r["launch_s"] <= r["total_s"]
        host = [row["self_host_us"] for row in r["profile"]["top_host"]]
        assert host == sorted(host, reverse=True) and host[0] > 0
        assert any(row["name"] == "aten::mm" for row in r["profile"]["top_host"])  # the projections
        assert r["profile"]["kernel_launches"] == 0  # no CUDA on this machine
    inter = results["interventions"]
    assert set(inter) >= {"zero", "state_passing", "fitted_noise", "tbtt", "model", "rows", "context"}
    assert all(inter[name]["host_us"] > 0 for name in ("zero", "fitted_noise"))


def test_train_ratio_prefers_the_gpu_bound_shape():
    results = {"gla-70m": {"ratio_ours_vs_theirs": 0.8}, "gla-70m:gpu_bound": {"ratio_ours_vs_theirs": 1.02},
               "mamba2-45m": {"ratio_ours_vs_theirs": 0.95}}
    sections = {"train": {"results": results}}
    assert report.train_ratio(sections, ("gla-70m",)) == 1.02
    assert report.train_ratio(sections, ("mamba2-45m", "mamba2-130m")) == 0.95  # no GPU-bound entry: the other


def test_eval_memory_ratio_reads_the_eager_runs_when_present():
    ev = {"ratio_lengths": {"short": 8192, "long": 131072},
          "results": {"train_shape_forward": {"tokens_per_s": 100.0},
                      "8192": {"streamed": {"peak_mem_bytes": 5.0, "tokens_per_s": 90.0}},
                      "131072": {"streamed": {"peak_mem_bytes": 1.0, "tokens_per_s": 95.0}}}}
    assert report.ratios({"eval": ev})["eval_128k_peak_mem_vs_8k"] == pytest.approx(0.2)
    ev["results"]["8192"]["streamed_eager"] = {"peak_mem_bytes": 4.0}
    ev["results"]["131072"]["streamed_eager"] = {"peak_mem_bytes": 4.2}
    r = report.ratios({"eval": ev})
    assert r["eval_128k_peak_mem_vs_8k"] == pytest.approx(1.05) and r["eval_128k_tput_vs_train_fwd"] == pytest.approx(0.95)


def test_summary_provenance_is_the_ratio_sections_and_commits_are_listed():
    sections = synthetic_sections()
    sections["compile"] = _section("compile", {})
    sections["compile"]["provenance"]["git"] = {"commit": "0ld0000000aa", "dirty": False}
    sections = dict(sorted(sections.items()))  # compile first, as the folder listing gives it
    result = report.summary(sections)
    assert result["provenance"]["git"]["commit"] == "abc"
    assert result["raw"]["section_commits"]["compile"] == "0ld0000000aa"
    text = report.commits_text(result["raw"]["section_commits"])
    assert "0ld0000000 (compile)" in text and "abc (eval, interventions, train)" in text
    assert report.commits_text({"train": "abc", "eval": "abc"}) == ""


# ---------------------------------------------------------------------------- study_train
def _git_head():
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _positive(x) -> bool:
    import math

    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_study_train_cases_follow_the_study_config():
    from bench import study_train

    cfg = {"data": {"tokenizer": {"vocab_size": 4096}},
           "train": {"batch_tokens": 65536, "micro_batch": None, "precision": "bf16", "checkpoint_every": 200},
           "study": {"models": {"m2-m": {"arch": "mamba2", "preset": "tiny", "overrides": {"d_model": 192}},
                                "m2-m-slow": {"arch": "mamba2", "preset": "tiny"},
                                "gla-s": {"arch": "gla", "preset": "tiny", "overrides": {"n_layers": 4}}}}}
    full = common.Options(device="cuda")
    grid, missing = study_train.cases(full, None, cfg)
    assert [c["key"] for c in grid] == ["m2-m:T16", "m2-m:T64", "m2-m:T256", "gla-s:T16", "gla-s:T64", "gla-s:T256"]
    assert missing == {"m2-s": "not in config/config.yaml study.models"}
    assert {c["rows"] * c["context"] for c in grid} == {65536} and grid[1]["rows"] == 1024
    assert grid[0]["overrides"] == {"d_model": 192, "vocab_size": 4096}
    assert study_train.job_counts(full) == [1, 4, 8] and study_train.target_jobs(full) == 8
    assert study_train.train_settings(cfg, full) == {"micro_batch": None, "precision": "bf16"}
    tiny = common.Options(device="cpu", tiny=True)
    grid, _ = study_train.cases(tiny, None, cfg)
    assert [c["key"] for c in grid] == ["m2-m:T16", "m2-m:T64", "gla-s:T16", "gla-s:T64"]
    assert {c["tokens_per_step"] for c in grid} == {256} and grid[0]["overrides"]["d_model"] == 32
    assert study_train.train_settings(cfg, tiny)["precision"] == "fp32"
    # the target model is one of the real study's
    assert study_train.TARGET_MODEL in study_train.study_config()["study"]["models"]


def test_study_train_aggregate_sums_the_jobs_and_measures_their_overlap():
    from bench import study_train

    def job(rate, start, end):
        return {"tokens_per_s": rate, "median_step_s": 100 / rate, "steps_timed": 4, "wall_start": start,
                "wall_end": end, "peak_mem_bytes": None}

    agg = study_train.aggregate([job(100.0, 0.0, 4.0), job(50.0, 1.0, 5.0)], tokens_per_step=100)
    assert agg["aggregate_tokens_per_s"] == 150.0 and agg["per_job_tokens_per_s"] == [100.0, 50.0]
    assert agg["aggregate_wall_tokens_per_s"] == pytest.approx(800 / 5.0)
    assert agg["overlap_frac"] == pytest.approx(3 / 5) and agg["median_step_s"] == pytest.approx(1.5)
    broken = study_train.aggregate([job(100.0, 0.0, 4.0), None], tokens_per_step=100)
    assert "aggregate_tokens_per_s" not in broken and "job 1: no result" in broken["error"]
    absent = study_train.aggregate([{"unavailable": "no fla"}], tokens_per_step=100)
    assert absent["unavailable"].endswith("no fla")


def test_study_train_baseline_tree_is_exported_and_checked(tmp_path):
    from bench import study_train

    head = _git_head()
    if head is None:
        pytest.skip("no git repository here")
    info = study_train.export_baseline("HEAD", tmp_path / "tree")
    assert info["commit"] == head == (tmp_path / "tree" / "COMMIT").read_text().strip()
    assert (tmp_path / "tree" / "src" / "lengthgen" / "train" / "trainer.py").is_file()
    got = study_train.baseline_tree(head[:7], str(tmp_path / "tree"), tmp_path)
    assert got["commit"] == head and got["source"] == "--baseline-tree" and got["src"].endswith("src")
    assert study_train.baseline_tree("HEAD", str(tmp_path / "tree"), tmp_path)["commit"] == head
    with pytest.raises(RuntimeError, match="not --baseline-commit"):
        study_train.baseline_tree("0000000", str(tmp_path / "tree"), tmp_path)
    with pytest.raises(RuntimeError, match="--export-baseline"):
        study_train.baseline_tree(None, str(tmp_path), tmp_path)


def test_study_train_a_failing_case_is_recorded_and_the_next_case_runs(tmp_path):
    from bench import study_train

    options = common.Options(device="cpu", tiny=True)
    cfg = {"data": {}, "train": {"batch_tokens": 256, "micro_batch": None},
           "study": {"models": {"m2-m": {"arch": "mamba2", "preset": "tiny"}}}}
    grid, _ = study_train.cases(options, type("A", (), {"study_contexts": [64]})(), cfg)
    good = {**grid[0], **study_train._counts(grid[0])}
    bad = {**good, "key": "bad:T64", "overrides": {**good["overrides"], "no_such_field": 1}}
    per_case, launch = study_train.launch_jobs("ours", [bad, good], 2, options, cfg, str(ROOT / "src"),
                                               tmp_path / "launch")
    assert launch["returncodes"] == [0, 0]
    assert "no_such_field" in per_case["bad:T64"]["error"]
    assert _positive(per_case["m2-m:T64"]["aggregate_tokens_per_s"])


def test_study_train_reference_runs_through_the_same_trainer_step(tmp_path, monkeypatch):
    """A reference model (here a stand-in with fla's call and output) is driven by the same
    ``Trainer._train_step`` as ours; the timing gives per-step times and tokens/s."""
    from bench import study_train

    options = common.Options(device="cpu", tiny=True)
    cfg = {"data": {}, "train": {"batch_tokens": 256, "micro_batch": None},
           "study": {"models": {"gla-s": {"arch": "gla", "preset": "tiny", "overrides": {"n_layers": 4}}}}}
    grid, _ = study_train.cases(options, type("A", (), {"study_contexts": [16]})(), cfg)
    case = {**grid[0], **study_train._counts(grid[0])}
    theirs = FlaLike(build_model("gla", "tiny", seed=0, **case["overrides"]))
    monkeypatch.setattr(upstream, "pair", lambda arch, preset, seed=0, **o: (None, theirs, {"reference": "fake"}))
    spec = {"impl": "reference", "device": "cpu", "train": study_train.train_settings(cfg, options),
            "warmup": 1, "steps": 2}
    record, trainer = study_train.run_case(spec, case, tmp_path)
    assert trainer is not None, record
    assert record["variant"] == "default" and record["attempts"] == [] and record["reference"] == {"reference": "fake"}
    assert trainer.raw.inner is theirs and trainer.layout.tokens_per_step == 256
    vocab = theirs.inner.vocab_size  # the graphed step (CUDA) checks each batch through the wrapper
    trainer.raw.check_input_ids(torch.tensor([[0, vocab - 1]]))
    with pytest.raises(ValueError, match=f"must lie in \\[0, {vocab}\\)"):
        trainer.raw.check_input_ids(torch.tensor([[0, vocab]]))
    got = study_train.timed_steps(trainer, 1, 2, trainer.device)
    trainer.metrics.close()
    assert got["steps_timed"] == 2 and got["losses_finite"] and _positive(got["tokens_per_s"])
    assert got["tokens_per_s"] == pytest.approx(256 / got["median_step_s"])


def test_study_train_section_end_to_end_with_a_baseline(tmp_path):
    """The section on the CPU with --tiny: 1 and 2 jobs, ours against HEAD's own src/ (git archive)."""
    head = _git_head()
    if head is None:
        pytest.skip("no git repository here (--baseline-commit needs one; --baseline-tree does not)")
    assert run.main(["--out", str(tmp_path), "--device", "cpu", "--tiny", "--only", "study_train",
                     "--baseline-commit", "HEAD"]) == 0
    section = report.load_sections(tmp_path)["study_train"]
    assert section["complete"] and "error" not in section, section.get("error")
    r = section["results"]
    assert r["setup"]["jobs"] == [1, 2] and r["setup"]["tokens_per_step"] == 256
    threads = r["setup"]["cpu_threads"]
    assert threads["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS") and threads["torch_threads"] >= 1
    assert r["before"]["commit"] == head and r["before"]["source"] == "git archive"
    assert set(r["cases"]) == {"m2-m:T16", "m2-m:T64", "gla-s:T16", "gla-s:T64"}
    for key, case in r["cases"].items():
        assert case["rows"] * case["context"] == 256 and case["params"] > 0
        for impl in ("ours", "before"):
            for jobs in (1, 2):
                agg = case[impl][str(jobs)]
                assert "error" not in agg, (key, impl, jobs, agg.get("error"))
                assert _positive(agg["aggregate_tokens_per_s"]) and _positive(agg["aggregate_wall_tokens_per_s"])
                assert 0 <= agg["overlap_frac"] <= 1 and len(agg["per_job"]) == jobs
                for one in agg["per_job"]:
                    assert one["steps_timed"] == 3 and len(one["step_s"]) == 3 and one["losses_finite"]
                    assert all(_positive(v) for v in [one["tokens_per_s"], one["median_step_s"], *one["step_s"]])
        for jobs in ("1", "2"):  # mamba-ssm / fla: measured where installed, else skipped with the reason
            ref = case["reference"][jobs]
            assert _positive(ref.get("aggregate_tokens_per_s")) or "reference unavailable" in ref["skipped"]
    assert [(x["impl"], x["jobs"]) for x in r["launches"] if x["impl"] != "reference"] == \
        [("ours", 1), ("before", 1), ("ours", 2), ("before", 2)]
    assert all(x["returncodes"] == [0] * x["jobs"] for x in r["launches"])
    t = r["target"]
    assert t["case"] == "m2-m:T64" and t["jobs"] == 2 and _positive(t["ratio_vs_before"])
    assert t["ratio_vs_before"] == pytest.approx(t["ours_aggregate_tokens_per_s"] / t["before_aggregate_tokens_per_s"])
    # the report: the ratio is computed, but the section is a smoke run, never a benchmark result
    with pytest.raises(report.ReportError, match="smoke run"):
        report.summary({"study_train": section})
    result = report.summary({"study_train": section}, smoke_ok=True)
    assert result["ratios"]["study_train_vs_before"] == t["ratio_vs_before"]
    assert result["raw"]["smoke_sections"] == ["study_train"]
    text = report.table({"study_train": section}, result)
    assert "study m2-m:T64 ours agg tok/s by jobs" in text and "ratio study_train_vs_before" in text
    report.figure(result, [str(tmp_path / "fig.png")])
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_study_set_overrides_ours_train_keys_only():
    from types import SimpleNamespace

    from bench import study_train

    args = SimpleNamespace(study_set=["cuda_graphs=false", "grad_clip=0.5"])
    assert study_train.ours_train_overrides(args) == {"cuda_graphs": False, "grad_clip": 0.5}
    assert study_train.ours_train_overrides(SimpleNamespace()) == {}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        study_train.ours_train_overrides(SimpleNamespace(study_set=["cuda_graphs"]))


def test_profile_study_steps_records_each_case_as_it_finishes(tmp_path, monkeypatch):
    """A failing case is recorded with its error and the next case runs; the section file holds
    every finished case before the next starts (a run cut off by a time limit keeps them)."""
    from bench import profile_calls

    options = common.Options(device="cpu", quick=False, tiny=True)
    section = common.SectionFile(tmp_path, "profile", {"provenance": {}})
    real = profile_calls.study_step_case
    seen_in_file = []

    def case(options, case, train, tmp):
        seen_in_file.append(sorted(json.loads((tmp_path / "profile.json").read_text())["results"]["study_steps"]))
        if case["key"].startswith("gla"):
            raise RuntimeError("no kernel for this case")
        return real(options, case, train, tmp)

    monkeypatch.setattr(profile_calls, "study_step_case", case)
    profile_calls.run(options, section, type("A", (), {"profile_cases": ["study_steps"], "study_models": None})())
    got = json.loads((tmp_path / "profile.json").read_text())["results"]["study_steps"]
    keys = [c["key"] for c in profile_calls.study_cases(options)]
    assert sorted(got) == sorted(keys) and len(keys) == 3
    assert seen_in_file == [sorted(keys[:i]) for i in range(3)]
    gla = next(k for k in keys if k.startswith("gla"))
    assert "no kernel for this case" in json.dumps(got[gla])
    for key in (k for k in keys if k != gla):
        assert got[key]["step_s"] > 0 and got[key]["step_s_eager"] > 0
        lo, hi = got[key]["step_s_min_max"]
        assert lo <= got[key]["step_s"] <= hi
        assert got[key]["graph_replays"] == 0 and got[key]["profile"]["host_us"] > 0   # no graphs on the CPU
        assert got[key]["batches"] == ("task" if key.startswith("copying") else "fixed")
        assert got[key]["profile_graphed"]["host_us"] > 0
