"""The replication's claims, computed from the raw result files (``results/replication.json``).

``load_results(root)`` indexes a results folder laid out as the workflow writes it
(docs/workflow.md): ``ppl|effrem|state_stats/<model id>.parquet``, ``passkey|babilong/<setting>/<model id>.json``
and ``copying/<setting>_s<seed>.json``, where a model id is ``pt/<model>_T<context>_<tokens>_w<warmup>_s<seed>``
(``@<milestone>`` for an intermediate checkpoint) or ``post/<base>+<intervention>[-s<sigma>]``.
Every file is read through ``lengthgen.results`` (schema, kind and provenance checked).

Each ``claim_*`` function is pure: loaded results in, one claim dict out, with a ``verdict``
(``supported``, ``not supported`` or ``not measured``), a ``reason`` in words, the measured numbers,
``raw`` (the result files it read) and ``provenance`` (devices, commits and config hashes of those
files). ``not measured`` claims list the result files that would measure them under ``missing``.
The criteria are docs/replication.md's; the thresholds are arguments, never results.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .results import read_result, read_table

SUPPORTED, NOT_SUPPORTED, NOT_MEASURED = "supported", "not supported", "not measured"
INTERVENTIONS = ("random_noise", "fitted_noise", "state_passing", "tbtt")
PASSKEY_FAR_FACTOR = 4  # passkey lengths >= 4 x T count as "well past T"

_PT_ID = re.compile(r"^pt/(?P<model>.+)_T(?P<context>\d+)_(?P<tokens>[^_]+)_w(?P<warmup>[^_]+)_s(?P<seed>-?\d+)"
                    r"(?:@(?P<milestone>.+))?$")
_POST_ID = re.compile(r"^post/(?P<base>.+)\+(?P<intervention>[a-z_]+?)(?:-s(?P<sigma>[^+]+))?$")


@dataclass
class Loaded:
    """One result file: where it is, which model/setting it is about, its header data and table."""

    path: str
    key: str  # model id (evaluations, tasks) or setting stem (copying)
    data: dict
    provenance: dict
    frame: Any = None  # pandas DataFrame of a Parquet result
    setting: str | None = None


@dataclass
class Results:
    """Every result of a results folder, by kind: ``{kind: {key: Loaded}}`` (tasks: ``{(setting, id): Loaded}``)."""

    root: str
    ppl: dict = field(default_factory=dict)
    effrem: dict = field(default_factory=dict)
    state_stats: dict = field(default_factory=dict)
    passkey: dict = field(default_factory=dict)
    babilong: dict = field(default_factory=dict)
    copying: dict = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])


_TABLES = {"ppl": "eval-ppl", "effrem": "eval-effrem", "state_stats": "eval-state-stats"}
_TASKS = {"passkey": "task-passkey", "babilong": "task-babilong"}


def load_results(root: str | Path) -> Results:
    """Index and read every result under ``root`` (a missing folder gives an empty index)."""
    root_s = str(root).rstrip("/")
    res = Results(root_s)
    base = Path(root)
    for kind, rkind in _TABLES.items():
        for p in sorted((base / kind).glob("*/*.parquet")):
            frame, header = read_table(p, rkind)
            mid = f"{p.parent.name}/{p.stem}"
            getattr(res, kind)[mid] = Loaded(f"{root_s}/{kind}/{mid}.parquet", mid, header["data"],
                                             header["provenance"], frame)
    for kind, rkind in _TASKS.items():
        for p in sorted((base / kind).glob("*/*/*.json")):
            obj = read_result(p, rkind)
            setting, mid = p.parent.parent.name, f"{p.parent.name}/{p.stem}"
            getattr(res, kind)[(setting, mid)] = Loaded(f"{root_s}/{kind}/{setting}/{mid}.json", mid, obj["data"],
                                                        obj["provenance"], setting=setting)
    for p in sorted((base / "copying").glob("*.json")):
        obj = read_result(p, "task-copying")
        res.copying[p.stem] = Loaded(f"{root_s}/copying/{p.name}", p.stem, obj["data"], obj["provenance"],
                                     setting=p.stem.rsplit("_s", 1)[0])
    return res


# ---------------------------------------------------------------------------------------------- helpers
def parse_pt_id(mid: str) -> dict | None:
    """``pt/<model>_T<context>_<tokens>_w<warmup>_s<seed>[@<milestone>]`` -> its fields, else None."""
    m = _PT_ID.match(mid)
    if not m:
        return None
    d = m.groupdict()
    return {"model": d["model"], "context": int(d["context"]), "tokens": d["tokens"], "warmup": float(d["warmup"]),
            "seed": int(d["seed"]), "milestone": d["milestone"]}


def parse_post_id(mid: str) -> dict | None:
    """``post/<base slug>+<intervention>[-s<sigma>]`` -> base id, intervention, sigma; else None."""
    m = _POST_ID.match(mid)
    if not m:
        return None
    sigma = m.group("sigma")
    slug = m.group("base")
    base = f"hub/{slug[4:]}" if slug.startswith("hub-") else f"pt/{slug}"
    return {"base": base, "intervention": m.group("intervention"),
            "sigma": float(sigma) if sigma is not None else None}


def provenance_of(loaded: list[Loaded]) -> dict:
    """What produced a claim's raw files: devices, commits (and whether any was dirty), config hashes."""
    devices, commits, hashes, torch = set(), set(), set(), set()
    dirty = False
    for r in loaded:
        hw = r.provenance.get("hardware", {})
        devices.add(hw.get("gpu") or hw.get("device") or "unknown")
        git = r.provenance.get("git", {})
        commits.add(git.get("commit", "unknown"))
        dirty = dirty or bool(git.get("dirty"))
        hashes.add(str(r.provenance.get("config_hash")))
        if "torch" in r.provenance.get("versions", {}):
            torch.add(r.provenance["versions"]["torch"])
    return {"devices": sorted(devices), "commits": sorted(commits), "dirty": dirty,
            "config_hashes": sorted(hashes), "torch": sorted(torch)}


def _claim(verdict: str, reason: str, loaded: list[Loaded], missing: list[str] = (), **numbers) -> dict:
    out = {"verdict": verdict, "reason": reason, **numbers, "raw": sorted({r.path for r in loaded}),
           "provenance": provenance_of(loaded)}
    if missing:
        out["missing"] = sorted(set(missing))
    return out


def _not_measured(reason: str, missing: list[str], loaded: list[Loaded] = ()) -> dict:
    return _claim(NOT_MEASURED, reason, list(loaded), list(missing))


def _mean(xs) -> float | None:
    """Mean, or None for no values (JSON has no NaN)."""
    xs = [float(x) for x in xs]
    return statistics.fmean(xs) if xs else None


def _std(xs) -> float | None:
    """Population standard deviation (as Table 1's notebook reports it), or None for no values."""
    xs = [float(x) for x in xs]
    return statistics.pstdev(xs) if xs else None


def _slug(base_id: str) -> str:
    return base_id.split("/", 1)[1]


def _sp_pairs(table: dict) -> list[tuple[Loaded, Loaded]]:
    """(base, base + state passing) pairs of from-scratch models present in one evaluation kind."""
    out = []
    for mid, r in sorted(table.items()):
        post = parse_post_id(mid)
        if post and post["intervention"] == "state_passing" and post["base"] in table:
            out.append((table[post["base"]], r))
    return out


# ---------------------------------------------------------------------------------------------- claims
def _ppl_row(r: Loaded) -> dict:
    v = r.data["verdict"]
    return {"id": r.key, "p_star": v["p_star"], "loss_far": v["loss_far"], "far_gap": v["far_gap"],
            "far_bucket": v["far_bucket"], "far_applicable": v["far_applicable"], "train_context": v["train_context"]}


def _dependence(rows: list[dict], axis: str) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r[axis]), []).append(r)
    return {k: {"runs": len(g), "failing": sum(bool(r["fails"]) for r in g),
                "raw_failing": sum(bool(r.get("raw_fails", r["fails"])) for r in g),
                "mean_far_gap": _mean(r["far_gap"] for r in g),
                "mean_excess_gap": _mean(r["excess_gap"] for r in g if r.get("excess_gap") is not None)}
            for k, g in sorted(groups.items())}


def _window_mean(frame, lo: int, hi: int) -> float:
    """Mean loss of a position-wise curve over positions [lo, hi)."""
    pos, loss = frame["position"].to_numpy(), frame["loss"].to_numpy()
    sel = (pos >= lo) & (pos < hi)
    return float(loss[sel].mean())


def _drift(frame, verdict: dict, ref: tuple[int, int]) -> float:
    """Far loss minus the loss over ``ref``, a bucket past every training context: the growth with position."""
    lo, hi = verdict["far_bucket"]
    return _window_mean(frame, lo, hi) - _window_mean(frame, *ref)


def _control_of(meta: dict, runs: dict) -> str | None:
    """The run that differs from ``meta``'s only by a longer training context (the longest one), if any."""
    same = ("model", "tokens", "warmup", "seed", "milestone")
    best = None
    for mid in runs:
        m = parse_pt_id(mid)
        if all(m[k] == meta[k] for k in same) and int(m["context"]) > int(meta["context"]):
            if best is None or int(m["context"]) > int(parse_pt_id(best)["context"]):
                best = mid
    return best


def _gap_ci(r: Loaded) -> list | None:
    """The far gap's bootstrap interval of an eval-ppl result, None for results without one."""
    return r.data["verdict"].get("far_gap_ci")


def _paired_far_reduction(base: Loaded, post: Loaded, level: float = 0.95) -> tuple[float, float] | None:
    """Interval of the far loss that ``post`` removes from ``base``, paired by sequence: the mean of
    the per-sequence differences of their far-bucket losses +- z x its standard error (normal
    approximation). Only for results of the same validation windows (eval-ppl's ``windows``)."""
    b, p = base.data.get("sequence_loss_far"), post.data.get("sequence_loss_far")
    same = base.data.get("windows") is not None and base.data.get("windows") == post.data.get("windows")
    if not (b and p and same and len(b) == len(p) >= 2):
        return None
    diffs = [x - y for x, y in zip(b, p)]
    half = statistics.NormalDist().inv_cdf((1 + level) / 2) * statistics.stdev(diffs) / len(diffs) ** 0.5
    mean = statistics.fmean(diffs)
    return mean - half, mean + half


def _fraction_removed(base_far: float, base_p_star: float, removed: float) -> float | None:
    """Share of the base's excess (far loss - in-context minimum) that ``removed`` nats of far loss are."""
    excess = base_far - base_p_star
    return removed / excess if excess > 0 else None


def claim_failure_from_scratch(res: Results, margin: float = 0.05) -> dict:
    """A from-scratch model whose loss far past T (far bucket >= far_factor x T) exceeds its best
    in-context loss p* by >= ``margin`` nats beyond the bootstrap interval over the evaluation
    sequences (Def. 3.2, far criterion: the interval's lower end >= ``margin``); its best
    post-trained fix and the share of the excess it removes; and how the gap depends on T, tokens
    (milestones included) and warm-up.

    The interval is the gate. Extra evidence, reported beside it: each run's control, the same
    model, budget, warm-up and seed trained at the longest context of the study (T_c). Both curves'
    ``drift`` is the far loss minus the loss over the reference bucket [T_c, 2 T_c), past both
    contexts, where the shared token difficulty cancels in ``excess_gap`` (its drift minus the
    control's). Results written before the intervals existed (no ``far_gap_ci``) fall back to the
    earlier rule: the raw gap and the excess gap both reach ``margin``; without a control such a run
    is undetermined (``fails`` is None) and never counts.
    """
    runs = {mid: r for mid, r in res.ppl.items() if parse_pt_id(mid)}
    if not runs:
        return _not_measured("no perplexity result of a from-scratch model", [res.path("ppl", "pt", "*.parquet")])
    t_max = max(int(parse_pt_id(mid)["context"]) for mid in runs)
    ref = (t_max, 2 * t_max)
    rows = []
    for mid, r in runs.items():
        meta = parse_pt_id(mid)
        row = {**_ppl_row(r), **meta, "tokens": meta["milestone"] or meta["tokens"], "far_gap_ci": _gap_ci(r),
               "num_sequences": r.data.get("num_sequences")}
        reaches = r.data["verdict"]["far_bucket"][0] >= ref[1]
        control = _control_of(meta, runs) if reaches else None
        if control and runs[control].frame["position"].max() < r.data["verdict"]["far_bucket"][1] - 1:
            control = None  # the control's evaluation is shorter: it cannot be read at this far bucket
        row["control"], row["reference_bucket"] = control, list(ref)
        row["drift"] = _drift(r.frame, r.data["verdict"], ref) if reaches else None
        row["control_drift"] = _drift(runs[control].frame, r.data["verdict"], ref) if control else None
        row["excess_gap"] = row["drift"] - row["control_drift"] if control else None
        raw = bool(row["far_applicable"] and row["far_gap"] >= margin)
        row["raw_fails"] = raw
        if row["far_gap_ci"] is not None:
            row["rule"] = "interval"
            row["fails"] = bool(row["far_applicable"] and row["far_gap_ci"][0] >= margin)
        else:
            row["rule"] = "control"
            row["fails"] = (raw and row["excess_gap"] >= margin) if control else None
        rows.append(row)
    applicable = [r for r in rows if r["far_applicable"]]
    numbers = {"margin": margin, "runs": rows, "by_context": _dependence(applicable, "context"),
               "by_tokens": _dependence(applicable, "tokens"), "by_warmup": _dependence(applicable, "warmup"),
               "raw_failing": [r["id"] for r in applicable if r["raw_fails"]],
               "undetermined": [r["id"] for r in applicable if r["fails"] is None]}
    if not applicable:
        return _not_measured("no evaluation reaches far enough past T (far bucket >= far_factor x T): raise eval.length",
                             [], list(runs.values())) | {"runs": rows}
    failing = [r for r in applicable if r["fails"]]
    fixes = {r["id"]: [p for mid, p in res.ppl.items() if (q := parse_post_id(mid)) and q["base"] == r["id"]
                       and q["intervention"] in INTERVENTIONS and p.data["verdict"]["far_applicable"]]
             for r in applicable}  # `zero` post-training (as many steps, no intervention) is a control, no fix

    def strength(r: dict) -> float:  # how clearly a run fails: the interval's lower end, else the excess, else the raw gap
        if r["far_gap_ci"] is not None:
            return r["far_gap_ci"][0]
        return r["excess_gap"] if r["excess_gap"] is not None else -1.0

    # the representative run: a failing one if any, else the run the post-training targeted (a final
    # model with the most post-trained versions), most clearly failing
    pool = failing or applicable
    base = max(pool, key=lambda r: (r["milestone"] is None, len(fixes[r["id"]]), strength(r), r["far_gap"]))
    fixed = min(fixes[base["id"]], key=lambda r: r.data["verdict"]["loss_far"], default=None)
    loaded = list(runs.values()) + ([fixed] if fixed else [])
    out = {"base": base["id"] if failing else None, "representative": base["id"],
           "base_in_context_min": base["p_star"], "base_loss_far": base["loss_far"], "base_far_gap": base["far_gap"],
           "base_far_gap_ci": base["far_gap_ci"], "base_rule": base["rule"],
           "base_excess_gap": base["excess_gap"], "base_control": base["control"],
           "failing": [r["id"] for r in failing],
           "fixed": fixed.key if fixed else None,
           "fixed_intervention": parse_post_id(fixed.key)["intervention"] if fixed else None,
           "fixed_in_context_min": fixed.data["verdict"]["p_star"] if fixed else None,
           "fixed_loss_far": fixed.data["verdict"]["loss_far"] if fixed else None,
           "fixed_far_gap": fixed.data["verdict"]["far_gap"] if fixed else None,
           "fixed_far_gap_ci": _gap_ci(fixed) if fixed else None,
           "fixed_fraction_removed": _fraction_removed(base["loss_far"], base["p_star"],
                                                       base["loss_far"] - fixed.data["verdict"]["loss_far"]) if fixed else None}
    if not failing:
        ci = [r for r in applicable if r["far_gap_ci"] is not None]
        controlled = [r for r in applicable if r["far_gap_ci"] is None and r["fails"] is not None]
        why = []
        if ci:
            why.append(f"largest lower end of a far-gap interval {max(r['far_gap_ci'][0] for r in ci):.4f} nats")
        if controlled:
            why.append(f"largest excess over a control {max(r['excess_gap'] for r in controlled):.4f} nats")
        reason = (f"no from-scratch model's loss far past T exceeds its in-context minimum by >= {margin} nats beyond "
                  f"its interval (or, for results without one, beyond its longer-context control): "
                  f"{'; '.join(why) or 'no run has a longer-context control, and none has an interval'}; raw gaps "
                  f"{min(r['far_gap'] for r in applicable):.3f}-{max(r['far_gap'] for r in applicable):.3f} nats, "
                  f"{len(numbers['raw_failing'])} of {len(applicable)} over {margin} before the interval; "
                  f"{len(numbers['undetermined'])} undetermined")
        return _claim(NOT_SUPPORTED, reason, loaded, **out, **numbers)
    ci_txt = (f"interval [{base['far_gap_ci'][0]:.4f}, {base['far_gap_ci'][1]:.4f}]" if base["far_gap_ci"]
              else f"excess {base['excess_gap']:.4f} over {base['control']}")
    reason = (f"{len(failing)} of {len(applicable)} from-scratch evaluations fail (loss far past T - best in-context "
              f"loss >= {margin} nats beyond the interval over the evaluation sequences); "
              f"{base['id']}: gap {base['far_gap']:.4f} nats, {ci_txt}")
    reason += (f"; best fix {fixed.key}: gap {out['fixed_far_gap']:.4f}, removes "
               f"{out['fixed_fraction_removed']:.0%} of the excess" if fixed else "; no post-trained version evaluated")
    return _claim(SUPPORTED, reason, loaded, **out, **numbers)


def claim_interventions_compared(res: Results, base: str | None, fix_fraction: float = 0.6,
                                 base_fails: bool = True) -> dict:
    """Post-trained versions of the failing model ``base``: each one's far loss against the base's
    in-context minimum p* and far loss, and the share of the base's excess (far loss - p*) it
    removes; supported when the best removes >= ``fix_fraction`` of it. With ``base_fails`` False
    (the representative run post-training targeted does not fail) the numbers are reported and the
    claim is not supported: there is no failure to fix. ``ranking`` orders the interventions by far
    loss (the paper's Fig. 5: State Passing and TBTT first). A ``zero`` post-training of the base (as
    many steps, zero initial states) is reported as ``continued_training``: what the extra steps alone do.
    Where base and intervention were evaluated on the same windows with per-sequence losses,
    ``far_reduction_ci`` / ``fraction_removed_ci`` give the paired interval of what it removes (the
    verdict reads the point estimate)."""
    if base is None:
        return _not_measured("no failing from-scratch model (see failure_from_scratch) to post-train", [])
    b = res.ppl[base]
    slug = _slug(base)
    posts = {mid: r for mid, r in res.ppl.items() if (p := parse_post_id(mid)) and p["base"] == base}
    present = {parse_post_id(mid)["intervention"] for mid in posts}
    missing = [res.path("ppl", "post", f"{slug}+{iv}{'-s*' if iv == 'random_noise' else ''}.parquet")
               for iv in INTERVENTIONS if iv not in present]
    if not posts:
        return _not_measured(f"no post-trained version of {base} was evaluated", missing, [b])
    bv = b.data["verdict"]
    p_star, base_far = bv["p_star"], bv["loss_far"]
    rows = []
    for mid, r in sorted(posts.items()):
        p, v = parse_post_id(mid), r.data["verdict"]
        rows.append({"id": mid, "intervention": p["intervention"], "sigma": p["sigma"], "in_context_min": v["p_star"],
                     "loss_far": v["loss_far"], "loss_far_ci": v.get("loss_far_ci"), "far_gap_ci": v.get("far_gap_ci"),
                     "far_applicable": v["far_applicable"], "fails_far": v["fails_far"],
                     "loss_far_minus_base_min": v["loss_far"] - p_star,
                     "loss_far_minus_base_far": v["loss_far"] - base_far,
                     "fraction_removed": _fraction_removed(base_far, p_star, base_far - v["loss_far"])})
        ci = _paired_far_reduction(b, r)
        rows[-1]["far_reduction_ci"] = list(ci) if ci else None
        rows[-1]["fraction_removed_ci"] = ([_fraction_removed(base_far, p_star, x) for x in ci]
                                           if ci and base_far > p_star else None)
    controls = [r for r in rows if r["intervention"] == "zero"]  # the same steps without an intervention
    rows = [r for r in rows if r["intervention"] != "zero"]
    if not rows:
        return _not_measured(f"only the `zero` control of {base} was post-trained", missing, [b, *posts.values()])
    best = min(rows, key=lambda r: r["loss_far"])
    removed = best["fraction_removed"]
    ok = base_fails and removed is not None and removed >= fix_fraction
    ranking = [r["id"] for r in sorted(rows, key=lambda r: r["loss_far"])]
    reason = (f"best intervention {best['id']}: far loss {best['loss_far']:.4f} against the base's {base_far:.4f} "
              f"and in-context minimum {p_star:.4f}: removes "
              + (f"{removed:.0%}" if removed is not None else "none (the base has no excess)")
              + f" of the excess ({'>=' if ok else 'short of'} {fix_fraction:.0%})")
    if not base_fails:
        reason = f"{base} does not fail (failure_from_scratch): nothing to fix; " + reason
    if missing:
        reason += f"; {len(missing)} intervention(s) not evaluated"
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, [b, *posts.values()], missing, base=base,
                  base_in_context_min=p_star, base_loss_far=base_far, base_far_gap_ci=bv.get("far_gap_ci"),
                  fix_fraction=fix_fraction, best=best["id"], best_loss_far=best["loss_far"],
                  best_fraction_removed=removed, best_fraction_removed_ci=best["fraction_removed_ci"],
                  ranking=ranking, interventions=rows,
                  continued_training=controls[0] if controls else None)


def _cut_value(frame, distance: str, cut: int) -> tuple[int, float]:
    """EffRem at the largest cut point <= ``cut`` (and that cut point)."""
    f = frame[(frame["distance"] == distance) & (frame["cut_point"] <= cut)]
    if f.empty:
        f = frame[frame["distance"] == distance].nsmallest(1, "cut_point")
    row = f.loc[f["cut_point"].idxmax()]
    return int(row["cut_point"]), float(row["effrem"])


def claim_effective_remembrance(res: Results) -> dict:
    """Base vs State Passing: EffRem_T(t) at the cut t = T_eval - T_train (what the tokens beyond the
    training context change in the next-token distribution), and its mean over cuts 0 < t <= that,
    per distance; supported when State Passing is lower for every distance of every pair."""
    pairs = _sp_pairs(res.effrem)
    if not pairs:
        return _not_measured("no (model, model + state_passing) pair with Effective Remembrance results",
                             [res.path("effrem", "pt", "<run>.parquet"), res.path("effrem", "post", "<run>+state_passing.parquet")])
    rows, ok = [], True
    for base, sp in pairs:
        T = parse_pt_id(base.key)["context"]
        T_eval = int(base.data["T"])
        entry = {"base": base.key, "state_passing": sp.key, "train_context": T, "T": T_eval,
                 "T_over_train_context": T_eval / T, "distances": {}}
        for d in base.data["distances"]:
            cut, b_val = _cut_value(base.frame, d, T_eval - T)
            _, s_val = _cut_value(sp.frame, d, T_eval - T)
            far = lambda f: _mean(f[(f["distance"] == d) & (f["cut_point"] > 0) & (f["cut_point"] <= T_eval - T)]["effrem"])
            entry["distances"][d] = {"cut_point": cut, "base": b_val, "state_passing": s_val,
                                     "base_far_mean": far(base.frame), "state_passing_far_mean": far(sp.frame)}
            ok = ok and s_val < b_val
        rows.append(entry)
    reason = ("State Passing lowers" if ok else "State Passing does not lower") + \
        " the Effective Remembrance of tokens beyond the training context for every distance of every pair"
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, [r for p in pairs for r in p], pairs=rows)


def _growth(frame, T: int, layer: int, head: int) -> dict:
    f = frame[(frame["layer"] == layer) & (frame["head"] == head)].sort_values("position")
    at_T = f.iloc[int((f["position"] - (T - 1)).abs().argmin())]
    last = f.iloc[-1]
    return {"position_T": int(at_T["position"]), "std_T": float(at_T["std"]), "position_last": int(last["position"]),
            "std_last": float(last["std"]), "growth": float(last["std"] / at_T["std"]) if at_T["std"] > 0 else float("inf")}


def claim_state_statistics(res: Results) -> dict:
    """Base vs State Passing: growth of the state's std from position ~T to the last measured position
    (std_last / std_T), for the whole state, each layer and each head; supported when State Passing
    grows less than the base for the whole state of every pair."""
    pairs = _sp_pairs(res.state_stats)
    if not pairs:
        return _not_measured("no (model, model + state_passing) pair with state statistics",
                             [res.path("state_stats", "pt", "<run>.parquet"),
                              res.path("state_stats", "post", "<run>+state_passing.parquet")])
    rows, ok = [], True
    for base, sp in pairs:
        T = parse_pt_id(base.key)["context"]
        whole_b, whole_s = _growth(base.frame, T, -1, -1), _growth(sp.frame, T, -1, -1)
        layers = sorted(int(x) for x in set(base.frame["layer"]) if x >= 0)
        per_layer = [{"layer": L, "base": _growth(base.frame, T, L, -1)["growth"],
                      "state_passing": _growth(sp.frame, T, L, -1)["growth"]} for L in layers]
        heads = base.frame[(base.frame["layer"] >= 0) & (base.frame["head"] >= 0)][["layer", "head"]].drop_duplicates()
        lower = [_growth(sp.frame, T, int(L), int(h))["growth"] < _growth(base.frame, T, int(L), int(h))["growth"]
                 for L, h in heads.itertuples(index=False)]
        rows.append({"base": base.key, "state_passing": sp.key, "train_context": T, "base_whole": whole_b,
                     "state_passing_whole": whole_s, "per_layer": per_layer,
                     "heads": len(lower), "heads_lower_with_state_passing": _mean(lower) if lower else None})
        ok = ok and whole_s["growth"] < whole_b["growth"]
    reason = ("the state std grows less from T to the last position with State Passing than without, in every pair"
              if ok else "State Passing's state std does not grow less past T than the base's in every pair")
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, [r for p in pairs for r in p], pairs=rows)


def _copying_scale(r: Loaded) -> tuple[int, str]:
    """(parameters or 0, label) of a copying result: results of one model size are compared together."""
    d = r.data
    n = d.get("parameters")
    return (int(n), f"{d['arch']} {n / 1e6:.1f}M") if n else (0, f"{d['arch']} preset {d.get('preset')}")


def _copying_numbers(groups: dict) -> dict:
    acc = {k: [r.data["eval_length"]["greedy"]["char_accuracy"] for r in g] for k, g in groups.items()}
    tf = {k: [r.data["eval_length"]["teacher_forced"]["char_accuracy"] for r in g] for k, g in groups.items()}
    lengths = sorted({r.data["eval_length"]["length"] for g in groups.values() for r in g})
    train = sorted({(r.data["train"]["min_length"], r.data["train"]["max_length"]) for g in groups.values() for r in g})
    return {"base_char_acc_mean": _mean(acc["zero"]), "base_char_acc_std": _std(acc["zero"]),
            "state_passing_char_acc_mean": _mean(acc["state_passing"]),
            "state_passing_char_acc_std": _std(acc["state_passing"]),
            "base_teacher_forced_char_acc_mean": _mean(tf["zero"]), "base_teacher_forced_char_acc_std": _std(tf["zero"]),
            "state_passing_teacher_forced_char_acc_mean": _mean(tf["state_passing"]),
            "state_passing_teacher_forced_char_acc_std": _std(tf["state_passing"]),
            "seeds": {k: len(g) for k, g in groups.items()}, "eval_lengths": lengths,
            "train_lengths": [list(t) for t in train]}


def claim_copying(res: Results, min_seeds: int = 3) -> dict:
    """Mamba-2 trained from scratch on copying, with and without State Passing: mean +- std over seeds
    of the greedy character accuracy at the evaluation length, per model size (``scales``: results of
    one size are compared together); the verdict is the largest size with >= ``min_seeds`` seeds of
    both: supported when State Passing's mean exceeds the base's by more than either one's std."""
    by_scale: dict = {}
    for r in res.copying.values():
        if r.data.get("intervention") in ("zero", "state_passing"):
            key = _copying_scale(r)
            by_scale.setdefault(key, {"zero": [], "state_passing": []})[r.data["intervention"]].append(r)
    every = [r for g in by_scale.values() for rs in g.values() for r in rs]
    scales = {label: _copying_numbers(g) if all(g.values()) else {"seeds": {k: len(v) for k, v in g.items()}}
              for (_, label), g in sorted(by_scale.items())}
    full = [key for key, g in by_scale.items() if all(len(v) >= min_seeds for v in g.values())]
    if not full:
        counts = {label: v["seeds"] for label, v in scales.items()}
        return _not_measured(f"needs >= {min_seeds} seeds with and without state passing at one model size, "
                             f"found {counts or 'none'}", [res.path("copying", "<setting>_s<seed>.json")], every)
    key = max(full)
    groups = by_scale[key]
    n = {"scale": key[1], **_copying_numbers(groups), "scales": scales}
    diff = n["state_passing_char_acc_mean"] - n["base_char_acc_mean"]
    ok = diff > max(n["base_char_acc_std"], n["state_passing_char_acc_std"])
    lengths = n["eval_lengths"]
    reason = (f"{key[1]}: greedy character accuracy at length {'/'.join(map(str, lengths))}: state passing "
              f"{n['state_passing_char_acc_mean']:.3f} +- {n['state_passing_char_acc_std']:.3f} vs base "
              f"{n['base_char_acc_mean']:.3f} +- {n['base_char_acc_std']:.3f} "
              f"({'a gain beyond' if ok else 'no gain beyond'} the seeds' std)")
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, [r for g in groups.values() for r in g], **n)


def claim_passkey(res: Results, far_factor: int = PASSKEY_FAR_FACTOR) -> dict:
    """Passkey after standard vs fitted-noise finetuning of the same model: accuracy by length and
    depth, and the mean accuracy at lengths >= ``far_factor`` x T; supported when fitted noise is
    higher there for every model."""
    by_model: dict[str, dict[str, Loaded]] = {}
    for (_, mid), r in res.passkey.items():
        if r.data.get("protocol") in ("standard", "fitted_noise") and parse_pt_id(mid):
            by_model.setdefault(mid, {})[r.data["protocol"]] = r
    pairs = {mid: g for mid, g in by_model.items() if len(g) == 2}
    if not pairs:
        return _not_measured("no model with both a standard and a fitted-noise passkey finetuning result",
                             [res.path("passkey", "<setting>", "pt", "<run>.json")])
    rows, ok, loaded = [], True, []
    for mid, g in sorted(pairs.items()):
        T = parse_pt_id(mid)["context"]
        entry = {"model": mid, "train_context": T, "far_lengths_from": far_factor * T}
        for proto, r in sorted(g.items()):
            cells = r.data["accuracy"]
            by_len: dict[int, list] = {}
            for c in cells:
                by_len.setdefault(int(c["length"]), []).append(c["accuracy"])
            far = [c["accuracy"] for c in cells if c["length"] >= far_factor * T]
            entry[proto] = {"setting": r.setting, "overall_accuracy": r.data["overall_accuracy"],
                            "by_length": {str(k): _mean(v) for k, v in sorted(by_len.items())},
                            "by_length_depth": [{"length": c["length"], "depth": c["depth"], "accuracy": c["accuracy"]}
                                                for c in cells],
                            "far_accuracy": _mean(far) if far else None}
            loaded.append(r)
        if entry["standard"]["far_accuracy"] is None:
            return _not_measured(f"{mid}: no passkey length >= {far_factor} x T = {far_factor * T}; add longer "
                                 "tasks.passkey.lengths", [], loaded)
        ok = ok and entry["fitted_noise"]["far_accuracy"] > entry["standard"]["far_accuracy"]
        rows.append(entry)
    reason = (f"fitted-noise finetuning {'beats' if ok else 'does not beat'} standard finetuning at passkey lengths "
              f">= {far_factor} x T for every model")
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, loaded, models=rows)


def claim_babilong(res: Results) -> dict:
    """BABILong (offline generated tasks) for a base model, its State Passing and its TBTT versions, per
    setting: mean accuracy over lengths whose contexts exceed T; supported when the better of the two
    post-trained versions beats the base in every setting."""
    groups: dict[tuple[str, str], dict[str, Loaded]] = {}
    for (setting, mid), r in res.babilong.items():
        post = parse_post_id(mid)
        if parse_pt_id(mid):
            groups.setdefault((setting, mid), {})["base"] = r
        elif post and post["intervention"] in ("state_passing", "tbtt"):
            groups.setdefault((setting, post["base"]), {})[post["intervention"]] = r
    full = {k: g for k, g in groups.items() if "base" in g and len(g) >= 2}
    if not full:
        return _not_measured("no BABILong setting with a base model and its state_passing or tbtt version",
                             [res.path("babilong", "<setting>", "pt", "<run>.json"),
                              res.path("babilong", "<setting>", "post", "<run>+state_passing.json")])
    rows, ok = [], True
    for (setting, mid), g in sorted(full.items()):
        T = parse_pt_id(mid)["context"]
        entry = {"setting": setting, "model": mid, "train_context": T}
        for name, r in sorted(g.items()):
            cells = [c for c in r.data["accuracy"] if int(c["length"][:-1]) * 1024 > T]
            entry[name] = {"id": r.key, "source": r.data.get("source"), "mean_accuracy_past_T": _mean(c["accuracy"] for c in cells),
                           "by_length": {c: _mean(x["accuracy"] for x in r.data["accuracy"] if x["length"] == c)
                                         for c in sorted({x["length"] for x in r.data["accuracy"]}, key=lambda s: int(s[:-1]))}}
        if entry["base"]["mean_accuracy_past_T"] is None:
            return _not_measured(f"{setting}/{mid}: no BABILong length longer than T = {T}; add longer "
                                 "tasks.babilong.lengths", [], [r for g in full.values() for r in g.values()])
        best = max(entry[k]["mean_accuracy_past_T"] for k in ("state_passing", "tbtt") if k in entry)
        ok = ok and best > entry["base"]["mean_accuracy_past_T"]
        rows.append(entry)
    reason = f"state passing / TBTT {'beat' if ok else 'do not beat'} the base past T in every BABILong setting"
    return _claim(SUPPORTED if ok else NOT_SUPPORTED, reason, [r for g in full.values() for r in g.values()], settings=rows)


def replicate(res: Results, far_margin: float = 0.05, fix_fraction: float = 0.6, min_copying_seeds: int = 3) -> dict:
    """Every claim, by name."""
    failure = claim_failure_from_scratch(res, far_margin)
    return {
        "failure_from_scratch": failure,
        "interventions_compared": claim_interventions_compared(
            res, failure.get("base") or failure.get("representative"), fix_fraction, base_fails=bool(failure.get("base"))),
        "effective_remembrance": claim_effective_remembrance(res),
        "state_statistics": claim_state_statistics(res),
        "copying": claim_copying(res, min_copying_seeds),
        "passkey": claim_passkey(res),
        "babilong": claim_babilong(res),
    }


__all__ = ["SUPPORTED", "NOT_SUPPORTED", "NOT_MEASURED", "Loaded", "Results", "load_results", "parse_pt_id",
           "parse_post_id", "provenance_of", "replicate", "claim_failure_from_scratch", "claim_interventions_compared",
           "claim_effective_remembrance", "claim_state_statistics", "claim_copying", "claim_passkey", "claim_babilong"]
