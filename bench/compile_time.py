"""Section ``compile``: first-use Triton compile + autotune time per architecture.

For each arch a fresh subprocess runs one forward + backward of a 2-layer model with the preset's
layer shapes (bf16 autocast, 2 x 512 tokens) twice, with ``TRITON_CACHE_DIR`` set to a new empty
temporary folder: ``cold`` is that first call (compile + autotune). A second subprocess with the
same, now filled, cache measures ``warm_cache`` (Triton's on-disk cache hit, autotuning again where
the library does not cache its choices). ``steady`` is the second call within a process.

Run as ``python -m bench.compile_time --child ARCH`` it is the child (prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Options, SectionFile, error_record, scrub, unavailable

NAME = "compile"
PRESETS = {"mamba2": "mamba2-130m", "gla": "gla-70m", "rwkv6": "rwkv6-70m", "mamba1": "mamba1-130m"}
MARK = "BENCH_RESULT "
ROOT = Path(__file__).resolve().parents[1]


def archs(options: Options, requested: list[str] | None) -> list[str]:
    if requested:
        unknown = sorted(set(requested) - set(PRESETS))
        if unknown:
            raise ValueError(f"--compile-archs: unknown arch(s) {unknown}; valid: {', '.join(PRESETS)}")
        return list(requested)
    return options.pick(["mamba2", "gla"], ["mamba2"], ["mamba2"])


def child(arch: str, device: str, tiny: bool) -> dict:
    """One process: time two forward + backward calls of a small model (the first compiles)."""
    import torch

    from lengthgen.models import build_model

    t0 = time.perf_counter()
    model = build_model(arch, "tiny" if tiny else PRESETS[arch], seed=0, n_layers=2).to(device)
    ids = torch.randint(0, model.config.vocab_size, (2, 64 if tiny else 512), device=device)
    setup_s = time.perf_counter() - t0
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    calls = []
    for _ in range(2):
        t0 = time.perf_counter()
        with ctx:
            logits, _ = model(ids)
        logits.float().logsumexp(-1).mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        calls.append(time.perf_counter() - t0)
    return {"setup_s": setup_s, "first_call_s": calls[0], "second_call_s": calls[1]}


def spawn(arch: str, options: Options, cache: Path, timeout: float) -> dict:
    env = dict(os.environ, TRITON_CACHE_DIR=str(cache / "triton"), FLA_CONFIG_DIR=str(cache / "fla"))
    cmd = [sys.executable, "-m", "bench.compile_time", "--child", arch, "--device", options.device]
    if options.tiny:
        cmd.append("--tiny")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "process_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        return {"error": f"child exited with {proc.returncode}", "stderr_tail": scrub(proc.stderr[-2000:]), "process_s": wall}
    return {**json.loads(lines[-1][len(MARK):]), "process_s": wall}


def run(options: Options, section: SectionFile, args=None) -> None:
    timeout = options.pick(420, 300, 120)
    section.data["timeout_s"] = timeout
    for arch in archs(options, getattr(args, "compile_archs", None)):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            try:
                cold = spawn(arch, options, cache, timeout)
                warm = spawn(arch, options, cache, timeout) if "error" not in cold else unavailable("cold run failed")
            except Exception as e:  # noqa: BLE001
                cold, warm = error_record(e), unavailable("cold run failed")
            section.record(arch, {"preset": "tiny" if options.tiny else PRESETS[arch], "cold": cold, "warm_cache": warm,
                                  "steady_s": cold.get("second_call_s")})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="child process of the compile benchmark")
    p.add_argument("--child", required=True, choices=sorted(PRESETS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args(argv)
    print(MARK + json.dumps(child(a.child, a.device, a.tiny)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
