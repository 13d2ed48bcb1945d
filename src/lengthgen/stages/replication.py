"""The replication's claims from the raw result files: ``results/replication.json``, never typed by hand.

Reads every result under ``--results`` (the workflow's layout, docs/workflow.md) through
``lengthgen.replication`` and writes, atomically, ``{"claims": {name: {"verdict", "reason", <numbers>,
"raw", "provenance"}}, "provenance": {...}}``. Each claim's ``provenance`` describes the runs behind
its raw files (devices, commits, config hashes); the top-level ``provenance`` describes this
generator run (commit, config hash). Thresholds: ``eval.verdict.far_margin`` for the from-scratch
failure (beyond the bootstrap interval), and the share of the failing base's excess that the best
intervention must remove (``FIX_FRACTION``; docs/replication.md).
"""

from __future__ import annotations

import argparse

HELP = "compute the replication's claims (results/replication.json) from the raw result files"
NAME = "replication"
FIX_FRACTION = 0.6  # the best intervention must remove this share of the base's far loss - in-context minimum


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--out", default="results/replication.json", help="output file (default: results/replication.json)")


def run(args) -> int:
    from lengthgen import io
    from lengthgen.config import load_config
    from lengthgen.provenance import provenance
    from lengthgen.replication import load_results, replicate

    from lengthgen.errors import UserError

    if not args.out.endswith(".json"):
        raise UserError(f"--out must name a .json file, got {args.out}: pass e.g. --out {args.out}.json")
    cfg = load_config(args.config, args.overrides)
    claims = replicate(load_results(args.results), far_margin=cfg["eval"]["verdict"]["far_margin"],
                       fix_fraction=FIX_FRACTION)
    prov = provenance(cfg, device="cpu")
    prov.pop("argv", None)  # machine-specific paths; the claims name their raw files
    io.write_json(args.out, {"claims": claims, "provenance": prov})
    for name, c in claims.items():
        print(f"{NAME}: {name}: {c['verdict']} ({c['reason']})")
    print(f"{NAME}: -> {args.out}")
    return 0
