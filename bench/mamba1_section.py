"""Section ``mamba1_scan``: the Mamba-1 selective-scan benchmark of ``bench/mamba1_scan.py``.

That file is maintained separately; this section imports it and calls its ``main(argv)`` (which
writes its results as JSON to ``--out``) with shorter measurements under ``--quick``, then records
what it wrote. It times GPU kernels only, so a CPU run records it as unavailable.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

from bench.common import Options, SectionFile, error_record, unavailable

NAME = "mamba1_scan"
SOURCE = Path(__file__).resolve().with_name("mamba1_scan.py")


def argv(options: Options, out: Path) -> list[str]:
    """Its command line: the slow plain-torch path at a shorter length; shorter timing in --quick."""
    args = ["--out", str(out), "--torch-seqlen", "256" if options.quick else "512"]
    return args + (["--warmup", "10", "--rep", "50"] if options.quick else [])


def load():
    spec = importlib.util.spec_from_file_location("bench.mamba1_scan", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(options: Options, section: SectionFile, args=None) -> None:
    if not SOURCE.exists():
        section.record("scan", unavailable(f"bench/{SOURCE.name} is not in this checkout"))
        return
    if not options.is_cuda:
        section.record("scan", unavailable("bench/mamba1_scan.py times GPU kernels; this run has no CUDA device"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mamba1_scan.json"
        cmd = argv(options, out)
        section.data["argv"] = argv(options, Path("<tmp>") / out.name)
        try:
            load().main(cmd)
        except SystemExit as e:  # its argument and CUDA checks exit; record why
            section.record("scan", {"error": f"bench/mamba1_scan.py exited: {e.code}"})
            return
        except Exception as e:  # noqa: BLE001
            section.record("scan", error_record(e))
            return
        if not out.exists():
            section.record("scan", {"error": "bench/mamba1_scan.py wrote no results"})
            return
        result = json.loads(out.read_text())
    result.pop("provenance", None)  # the section's own provenance covers it
    section.record("scan", result)
