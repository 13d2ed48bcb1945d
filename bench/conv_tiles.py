"""Section ``conv_tiles``: lengthgen's Triton short conv at the study's training shapes, per tile.

The conv (``ops/triton/causal_conv1d.py``) reads Mamba-2's xBC columns straight out of the in_proj
output, as the model hands them over: m2-m at T = 64 (1,024 rows, 640 of 1,032 columns) and Table 1's
copying model (64 rows of 202, 1,280 of 2,320). Timed: the forward, and the forward + backward
for a given output gradient from no window (a training step's call), bf16, for each tile, warp count
and rows per program of the backward's first pass (``DPRE_TILE``, ``DPRE_WARPS``, ``DPRE_ROWS``:
they set the order of the weight gradient's sums, so the module fixes them rather than autotuning). Recorded beside the times: each
config's gradients against the first config's (relative difference: the sums' order only).
"""

from __future__ import annotations

import torch

from bench.common import Options, SectionFile, guarded, measure, unavailable

NAME = "conv_tiles"
# (DPRE_TILE, DPRE_WARPS, DPRE_ROWS); the first is the module's
CONFIGS = [((32, 64), 4, 16), ((16, 64), 4, 16), ((16, 64), 4, 4), ((16, 64), 4, 64), ((32, 64), 8, 16),
           ((16, 128), 4, 16), ((16, 64), 4, 1)]


def shapes(options: Options) -> dict[str, tuple[int, int, int, int, int]]:
    """key -> (rows, length, conv channels, their first column, in_proj width)."""
    full = {"m2-m:T64": (1024, 64, 640, 384, 1032), "copying:T202": (64, 202, 1280, 1024, 2320)}
    return options.pick(full, {"m2-m:T64": full["m2-m:T64"]}, {"tiny": (2, 16, 24, 8, 40)})


def case(options: Options, rows: int, length: int, d: int, start: int, width: int) -> dict:
    from lengthgen.ops.triton import causal_conv1d as conv

    dev = options.torch_device
    gen = torch.Generator(device=dev).manual_seed(0)
    proj = torch.randn(rows, length, width, generator=gen, device=dev).to(torch.bfloat16).requires_grad_()
    weight = (torch.randn(d, 4, generator=gen, device=dev) / 2).requires_grad_()
    bias = torch.randn(d, generator=gen, device=dev).requires_grad_()
    gy = torch.randn(rows, length, d, generator=gen, device=dev).to(torch.bfloat16).transpose(1, 2)  # channel-last, as y
    x = lambda: proj[:, :, start:start + d].transpose(1, 2)  # noqa: E731 - a column slice, as in the model

    def fwd():
        return conv.causal_conv1d_triton(x(), weight, bias, None, "silu")[0]

    def fwd_bwd():
        return torch.autograd.grad(fwd(), [proj, weight, bias], grad_outputs=gy)

    out = {"rows": rows, "length": length, "channels": d, "tokens": rows * length, "configs": []}
    saved = conv.DPRE_TILE, conv.DPRE_WARPS, conv.DPRE_ROWS
    first = None
    try:
        for tile, warps, rows_per in CONFIGS:
            conv.DPRE_TILE, conv.DPRE_WARPS, conv.DPRE_ROWS = tile, warps, rows_per
            rec = {"dpre_tile": list(tile), "dpre_warps": warps, "dpre_rows": rows_per}
            with torch.no_grad():
                rec["forward"] = measure(fwd, options)
            rec["forward_backward"] = measure(fwd_bwd, options)
            grads = fwd_bwd()
            first = first or grads
            rec["rel_diff_vs_first"] = [((a.double() - b.double()).norm() / b.double().norm()).item()
                                        for a, b in zip(grads, first)]
            out["configs"].append(rec)
    finally:
        conv.DPRE_TILE, conv.DPRE_WARPS, conv.DPRE_ROWS = saved
    out["module_config"] = {"dpre_tile": list(saved[0]), "dpre_warps": saved[1], "dpre_rows": saved[2]}
    return out


def run(options: Options, section: SectionFile, args=None) -> None:
    from lengthgen.ops import _backend

    why = (None if options.is_cuda else "the kernel runs on CUDA only; this run has no CUDA device") or \
        _backend.kernel_unavailable_reason("triton_conv")
    for key, shape in shapes(options).items():
        section.record(key, unavailable(why) if why else guarded(lambda: case(options, *shape)))
