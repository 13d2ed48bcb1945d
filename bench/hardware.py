"""Section ``hardware``: the ceilings MFU and the roofline are quoted against, re-measured here.

* bf16 matmul throughput: an 8192^3 ``torch.matmul`` (2 * 8192^3 FLOPs per call);
* copy bandwidth: a device-to-device copy of 1 GiB (bytes read + bytes written per second).

The summary quotes MFU against the fixed reference ``common.PEAK_BF16_FLOPS`` so numbers from
different runs compare; these measurements show how far this machine is from it.
"""

from __future__ import annotations

import torch

from bench.common import PEAK_BF16_FLOPS, COPY_BANDWIDTH, Options, SectionFile, free_memory, guarded, measure, \
    unavailable

NAME = "hardware"


def matmul_flops(options: Options) -> dict:
    n = options.pick(8192, 8192, 256)
    dtype = torch.bfloat16 if options.is_cuda else torch.float32
    a = torch.randn(n, n, device=options.torch_device, dtype=dtype)
    b = torch.randn(n, n, device=options.torch_device, dtype=dtype)
    m = measure(lambda: torch.matmul(a, b), options, warmup=3, iters=options.pick(20, 10, 2))
    return {"n": n, "dtype": str(dtype), **m, "flop_per_s": 2 * n**3 / m["median_s"]}


def copy_bandwidth(options: Options) -> dict:
    numel = options.pick(2**29, 2**29, 2**20)  # 1 GiB of fp16 on the GPU
    src = torch.empty(numel, device=options.torch_device, dtype=torch.float16)
    dst = torch.empty_like(src)
    m = measure(lambda: dst.copy_(src), options, warmup=3, iters=options.pick(20, 10, 2))
    moved = 2 * src.numel() * src.element_size()
    return {"bytes_per_copy": moved, **m, "bytes_per_s": moved / m["median_s"]}


def run(options: Options, section: SectionFile, args=None) -> None:
    section.data["reference"] = {"peak_bf16_flop_per_s": PEAK_BF16_FLOPS, "copy_bytes_per_s": COPY_BANDWIDTH}
    if not options.is_cuda:
        section.data["note"] = "CPU smoke run: these are not GPU ceilings"
    section.record("matmul", guarded(lambda: matmul_flops(options)))
    free_memory()
    section.record("copy", guarded(lambda: copy_bandwidth(options)))
    free_memory()
    if not options.is_cuda:
        section.record("gpu", unavailable("no CUDA device in this run"))
