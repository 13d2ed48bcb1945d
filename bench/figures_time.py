"""Section ``cpu``: wall time of re-rendering every figure (``make figures``) on the CPU machine.

Forces the figure rule (``--forcerun render_figure``) so the notebooks really run; the results
themselves are read, never recomputed (the ``figures`` target never trains or evaluates). Not in
the default set of sections: run it on the CPU machine with ``--only cpu``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.common import Options, SectionFile, scrub

NAME = "cpu"
ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["make", "figures", "SNAKE_ARGS=--forcerun render_figure"]


def run(options: Options, section: SectionFile, args=None) -> None:
    command = list(getattr(args, "figures_command", None) or COMMAND)
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    section.record("make_figures", {"command": command, "returncode": proc.returncode, "seconds": seconds,
                                    "cpu_count": os.cpu_count(), "output_tail": scrub((proc.stdout + proc.stderr)[-2000:])})
