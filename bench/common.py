"""What every benchmark section shares: options, timing, peak memory, error capture, section files.

Timing on CUDA uses CUDA events around each call after warm-up calls (the median and minimum
over the timed calls are reported); on the CPU (``--device cpu --tiny``, a smoke test of the
harness, never a result) it uses ``time.perf_counter``. Peak memory is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, over the timed calls.
"""

from __future__ import annotations

import contextlib
import gc
import re
import statistics
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

# Reference ceilings of one H200 (measured with throwaway probes, see README.md); the
# ``hardware`` section re-measures both on the machine at hand and records them next to these.
PEAK_BF16_FLOPS = 792e12      # bf16 8192^3 matmul, FLOP/s
COPY_BANDWIDTH = 4.3e12       # device-to-device copy, bytes/s (read + write)
RIDGE = PEAK_BF16_FLOPS / COPY_BANDWIDTH


@dataclass(frozen=True)
class Options:
    """How a run was asked for: ``quick`` shrinks shapes; ``tiny`` swaps every preset for ``tiny``
    and shrinks shapes further (CPU smoke of the harness only)."""

    device: str = "cuda"
    quick: bool = False
    tiny: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def preset(self, name: str) -> str:
        return "tiny" if self.tiny else name

    def pick(self, full, quick, tiny):
        """The full, ``--quick`` or ``--tiny`` value of a shape parameter."""
        return tiny if self.tiny else quick if self.quick else full

    @property
    def iters(self) -> tuple[int, int]:
        """(warm-up calls, timed calls)."""
        return self.pick((3, 10), (2, 5), (1, 2))


def autocast(options: Options):
    """bf16 autocast over fp32 weights on CUDA (the training recipe); fp32 on the CPU."""
    if options.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synthetic_ids(batch: int, length: int, vocab: int, device, seed: int = 0) -> torch.Tensor:
    """Uniform random token ids (speed does not depend on the token values)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen).to(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], options: Options, warmup: int | None = None, iters: int | None = None) -> dict:
    """Seconds per call of ``fn`` (median and min over ``iters`` calls after ``warmup`` calls) and
    the peak memory allocated during the timed calls (CUDA only)."""
    w, n = options.iters
    warmup, iters = (w if warmup is None else warmup), (n if iters is None else iters)
    device = options.torch_device
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        peak = None
    return {"median_s": statistics.median(times), "min_s": min(times), "iters": iters, "warmup": warmup,
            "peak_mem_bytes": peak}


def once(fn: Callable[[], Any], options: Options) -> dict:
    """Wall time and peak memory of one call (for work too long to repeat)."""
    device = options.torch_device
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds": seconds, "peak_mem_bytes": peak}


_ROOT = str(Path(__file__).resolve().parents[1]) + "/"
_SITE = re.compile(r"[^\s\"']*/(?:site|dist)-packages/")


def scrub(text: str) -> str:
    """Text without this machine's paths: repository and site-packages prefixes are dropped."""
    return _SITE.sub("", text.replace(_ROOT, ""))


def error_record(e: BaseException) -> dict:
    """A failure as data: its type, message and the last frames of the traceback."""
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return {"error": scrub(f"{type(e).__name__}: {e}".strip())[:2000], "traceback_tail": scrub("".join(tb[-3:]))[-2000:]}


def unavailable(reason: str) -> dict:
    return {"unavailable": reason}


def guarded(fn: Callable[[], dict]) -> dict:
    """``fn()``, or the error it raised as a record (out-of-memory frees the cache first)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - every failure of a measurement is recorded, not fatal
        record = error_record(e)
        if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
            record["oom"] = True
        free_memory()
        return record


class SectionFile:
    """The JSON of one section, rewritten atomically after every measurement, so a killed run
    keeps what it measured (``complete`` is false until the section ends)."""

    def __init__(self, out_dir: Path, name: str, header: dict):
        self.path = Path(out_dir) / f"{name}.json"
        self.data = {"section": name, "complete": False, **header, "results": {}}
        self.flush()

    def record(self, key: str, value: Any) -> Any:
        self.data["results"][key] = value
        self.flush()
        return value

    def finish(self, **extra: Any) -> dict:
        self.data.update(extra)
        self.data["complete"] = True
        self.flush()
        return self.data

    def flush(self) -> None:
        from lengthgen import io

        io.write_json(self.path, self.data)


def rate(tokens: int, seconds: float | None) -> float | None:
    return None if not seconds else tokens / seconds
