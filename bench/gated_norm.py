"""Section ``gated_norm``: GLA's per-head output norm, ``rmsnorm(o) * weight * silu(g)``, per layer call.

The norm runs on the chunk kernel's output o and the gate projection g, (rows, T, heads, 128) in
bf16 with a float32 weight, at gla-70m's training shape of the ``train`` section (24 x 2048 tokens, 4
heads of 128). Timed on the same inputs: lengthgen's Triton RMSNorm (``ops/triton/rms_norm.py``,
what ``ops.rms_norm(..., norm_before_gate=True)`` runs), mamba-ssm's ``layernorm_gated.rmsnorm_fn``
(what it ran before) and fla's ``rms_norm_gated`` (what fla's ``GLAForCausalLM`` runs): the forward,
and forward + backward of ``(y * w).sum()``. Beside the times: each output's and gradient's
relative difference from the float64 reference.
"""

from __future__ import annotations

import torch

from bench.common import Options, SectionFile, guarded, measure, unavailable

NAME = "gated_norm"
HEADS, HEAD_DIM, EPS = 4, 128, 1e-6


def shapes(options: Options) -> dict[str, tuple[int, int]]:
    return options.pick({"gla-70m:gpu_bound": (24, 2048)}, {"gla-70m": (8, 2048)}, {"tiny": (2, 64)})


def implementations() -> dict:
    from lengthgen.ops._mamba_import import mamba_rmsnorm_fn
    from lengthgen.ops.triton.rms_norm import rms_norm_triton

    def mamba(x, g, w):
        d = x.shape[-1]
        return mamba_rmsnorm_fn()(x.reshape(-1, d), w, None, z=g.reshape(-1, d), eps=EPS,
                                  norm_before_gate=True).reshape(x.shape)

    impls = {"lengthgen": lambda x, g, w: rms_norm_triton(x, w, EPS, z=g, norm_before_gate=True), "mamba_ssm": mamba}
    try:
        from fla.modules.norm.fused_norm_gate import rms_norm_gated

        impls["fla"] = lambda x, g, w: rms_norm_gated(x, g, w, None, "swish", eps=EPS)
    except ImportError:  # fla absent: the other two still run
        pass
    return impls


def case(options: Options, rows: int, length: int) -> dict:
    from lengthgen.ops.norm import rms_norm_reference

    dev = options.torch_device
    gen = torch.Generator(device=dev).manual_seed(0)
    shape = (rows, length, HEADS, HEAD_DIM)
    x, g = (torch.randn(*shape, generator=gen, device=dev).to(torch.bfloat16).requires_grad_() for _ in range(2))
    w = (1 + 0.1 * torch.randn(HEAD_DIM, generator=gen, device=dev)).requires_grad_()
    dy = torch.randn(*shape, generator=gen, device=dev).to(torch.bfloat16)
    ins = [x, g, w]
    leaves = [t.detach().double().requires_grad_() for t in ins]
    ref = rms_norm_reference(leaves[0], leaves[2], EPS, z=leaves[1], norm_before_gate=True)
    ref_grads = torch.autograd.grad((ref * dy.double()).sum(), leaves)
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    out = {"rows": rows, "length": length, "heads": HEADS, "head_dim": HEAD_DIM, "tokens": rows * length}
    for name, fn in implementations().items():
        def fwd_bwd(fn=fn):
            torch.autograd.grad((fn(*ins) * dy).float().sum(), ins)
        with torch.no_grad():
            rec = {"forward": measure(lambda fn=fn: fn(*ins), options)}
        rec["forward_backward"] = measure(fwd_bwd, options)
        y = fn(*ins)
        grads = torch.autograd.grad((y * dy).float().sum(), ins)
        rec["rel_diff_vs_float64"] = {"y": rel(y, ref), **{f"d{k}": rel(a, b) for k, a, b in zip("xgw", grads, ref_grads)}}
        out[name] = rec
    base = out["lengthgen"]["forward_backward"]["median_s"]
    out["forward_backward_vs_lengthgen"] = {k: out[k]["forward_backward"]["median_s"] / base
                                            for k in out if isinstance(out[k], dict) and "forward_backward" in out[k]}
    return out


def run(options: Options, section: SectionFile, args=None) -> None:
    from lengthgen.ops import _backend

    why = (None if options.is_cuda else "the kernels run on CUDA only; this run has no CUDA device") or \
        _backend.kernel_unavailable_reason("triton_norm") or _backend.kernel_unavailable_reason("mamba_norm")
    for key, (rows, length) in shapes(options).items():
        section.record(key, unavailable(why) if why else guarded(lambda: case(options, rows, length)))
