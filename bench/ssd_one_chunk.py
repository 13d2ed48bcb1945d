"""Section ``ssd_one_chunk``: Mamba-2's SSD at the reduced study's training shapes, one chunk per row.

At T <= chunk_size from the zero state, ``lengthgen.ops.ssd_scan`` runs lengthgen's one-chunk Triton
kernel (``ops/triton/ssd_one_chunk.py``: the chunk's quadratic form, no chunk states) where it used
to run mamba-ssm's ``mamba_chunk_scan_combined``. Both are timed here on the same inputs: the
forward, and forward + backward of ``(y * w).sum()`` (a training step's use: the final state is not
differentiated), per layer call, bf16 activations with float32 A, D and dt_bias as the model hands
them over, at m2-m's head shape (6 heads of 64, one group, d_state 128) and 65,536 tokens: 4,096 x
16 and 1,024 x 64. Recorded beside the times: the two outputs' relative difference.
"""

from __future__ import annotations

import torch

from bench.common import Options, SectionFile, guarded, measure, unavailable

NAME = "ssd_one_chunk"
HEADS, HEADDIM, GROUPS, DSTATE, CHUNK = 6, 64, 1, 128, 64


def shapes(options: Options) -> dict[str, tuple[int, int]]:
    return options.pick({"T16": (4096, 16), "T64": (1024, 64)}, {"T64": (1024, 64)}, {"T16": (8, 16)})


def inputs(rows: int, length: int, device) -> list:
    gen = torch.Generator(device=device).manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, device=device)  # noqa: E731
    act = lambda t: t.to(torch.bfloat16).requires_grad_()  # noqa: E731
    return [act(r(rows, length, HEADS, HEADDIM)), act(r(rows, length, HEADS) - 2.0),
            (-torch.rand(HEADS, generator=gen, device=device) * 2 - 0.1).requires_grad_(),
            act(r(rows, length, GROUPS, DSTATE) / DSTATE**0.5), act(r(rows, length, GROUPS, DSTATE) / DSTATE**0.5),
            r(HEADS).requires_grad_(), (0.1 * r(HEADS)).requires_grad_()]


def case(options: Options, rows: int, length: int) -> dict:
    from lengthgen.ops.ssd import _ssd_kernel
    from lengthgen.ops.triton.ssd_one_chunk import ssd_one_chunk

    ins = inputs(rows, length, options.torch_device)
    impls = {"one_chunk": lambda: ssd_one_chunk(*ins, dt_softplus=True),
             "mamba_ssm": lambda: _ssd_kernel(*ins, True, None, CHUNK)}
    w = torch.randn(rows, length, HEADS, HEADDIM, device=options.torch_device).to(torch.bfloat16)
    out = {"rows": rows, "length": length, "tokens": rows * length}
    for name, fn in impls.items():
        def fwd_bwd(fn=fn):
            y, _ = fn()
            torch.autograd.grad((y * w).float().sum(), ins)
        with torch.no_grad():
            fwd = measure(fn, options)
        out[name] = {"forward": fwd, "forward_backward": measure(fwd_bwd, options)}
    with torch.no_grad():
        (y1, s1), (y2, s2) = impls["one_chunk"](), impls["mamba_ssm"]()
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()  # noqa: E731
    out["rel_diff"] = {"y": rel(y1, y2), "final_state": rel(s1, s2)}
    out["speedup_forward_backward"] = (out["mamba_ssm"]["forward_backward"]["median_s"]
                                       / out["one_chunk"]["forward_backward"]["median_s"])
    return out


def run(options: Options, section: SectionFile, args=None) -> None:
    from lengthgen.ops import _backend

    why = (None if options.is_cuda else "the kernels run on CUDA only; this run has no CUDA device") or \
        _backend.kernel_unavailable_reason("mamba_ssd") or _backend.kernel_unavailable_reason("triton_ssd_one_chunk")
    for key, (rows, length) in shapes(options).items():
        section.record(key, unavailable(why) if why else guarded(lambda: case(options, rows, length)))
