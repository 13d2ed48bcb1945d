"""Section ``gated_norm``: the output norms of GLA and RWKV-6, per layer call, at the ``train`` section's shape.

GLA: ``rmsnorm(o) * weight * silu(g)`` per head, on the chunk kernel's output o and the gate
projection g, (24, 2048, 4 heads, 128). RWKV-6: ``groupnorm(o) * weight + bias`` over its 4 heads of
128 channels, times ``silu(g)``, on (24, 2048, 512). bf16 activations, float32 weight and bias, the
24 x 2048 tokens of gla-70m / rwkv6-70m in the ``train`` section. Timed on the same inputs:
lengthgen's Triton norm (``ops/triton/rms_norm.py``, what ``ops.rms_norm(..., norm_before_gate=True)``
and ``ops.layer_norm(..., z=g, group_size=128)`` run), mamba-ssm's ``layernorm_gated`` kernels (what
they ran before) and what fla's model runs (``rms_norm_gated`` for GLA; ``group_norm`` then
``* silu(g)`` for RWKV-6): the forward, and forward + backward of ``(y * dy).sum()``. Beside the
times: each output's and gradient's relative difference from the float64 reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.common import Options, SectionFile, guarded, measure, unavailable

NAME = "gated_norm"
HEADS, HEAD_DIM = 4, 128
EPS = {"gla": 1e-6, "rwkv6": 1e-5}  # the fla configs' norm_eps


def shapes(options: Options) -> dict[str, tuple[str, int, int]]:
    full = {f"{m}-70m:gpu_bound": (m, 24, 2048) for m in ("gla", "rwkv6")}
    return options.pick(full, {f"{m}-70m": (m, 8, 2048) for m in ("gla", "rwkv6")}, {"gla-tiny": ("gla", 2, 64)})


def implementations(model: str) -> dict:
    """name -> fn(x, g, w, b) for ``model``'s output norm (b unused for GLA)."""
    from lengthgen.ops._mamba_import import mamba_layernorm_fn, mamba_rmsnorm_fn
    from lengthgen.ops.triton.rms_norm import layer_norm_triton, rms_norm_triton

    eps = EPS[model]
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    if model == "gla":
        impls = {
            "lengthgen": lambda x, g, w, b: rms_norm_triton(x, w, eps, z=g, norm_before_gate=True),
            "mamba_ssm": lambda x, g, w, b: mamba_rmsnorm_fn()(flat(x), w, None, z=flat(g), eps=eps,
                                                                norm_before_gate=True).reshape(x.shape),
        }
    else:
        impls = {
            "lengthgen": lambda x, g, w, b: layer_norm_triton(x, w, b, eps, z=g, group_size=HEAD_DIM),
            "mamba_ssm": lambda x, g, w, b: mamba_layernorm_fn()(flat(x), w, b, z=flat(g), eps=eps, group_size=HEAD_DIM,
                                                                  norm_before_gate=True, is_rms_norm=False).reshape(x.shape),
        }
    try:
        if model == "gla":
            from fla.modules.norm.fused_norm_gate import rms_norm_gated

            impls["fla"] = lambda x, g, w, b: rms_norm_gated(x, g, w, None, "swish", eps=eps)
        else:
            from fla.modules.norm.layernorm import group_norm

            impls["fla"] = lambda x, g, w, b: group_norm(x, w, b, eps=eps, num_groups=HEADS) * F.silu(g)
    except ImportError:  # fla absent: the other two still run
        pass
    return impls


def reference(model: str, x, g, w, b=None):
    from lengthgen.ops.norm import layer_norm_reference, rms_norm_reference

    if model == "gla":
        return rms_norm_reference(x, w, EPS[model], z=g, norm_before_gate=True)
    return layer_norm_reference(x, w, b, EPS[model], z=g, group_size=HEAD_DIM)


def case(options: Options, model: str, rows: int, length: int) -> dict:
    dev = options.torch_device
    gen = torch.Generator(device=dev).manual_seed(0)
    shape = (rows, length, HEADS, HEAD_DIM) if model == "gla" else (rows, length, HEADS * HEAD_DIM)
    d = shape[-1]
    act = lambda: torch.randn(*shape, generator=gen, device=dev).to(torch.bfloat16).requires_grad_()  # noqa: E731
    x, g = act(), act()
    w = (1 + 0.1 * torch.randn(d, generator=gen, device=dev)).requires_grad_()
    b = (0.1 * torch.randn(d, generator=gen, device=dev)).requires_grad_()
    dy = torch.randn(*shape, generator=gen, device=dev).to(torch.bfloat16)
    ins = [x, g, w] + ([] if model == "gla" else [b])
    leaves = [t.detach().double().requires_grad_() for t in ins]
    ref = reference(model, *leaves)
    ref_grads = torch.autograd.grad((ref * dy.double()).sum(), leaves)
    rel = lambda a, r: ((a.double() - r).norm() / r.norm()).item()  # noqa: E731
    call = lambda fn: fn(x, g, w, b)  # noqa: E731
    out = {"model": model, "rows": rows, "length": length, "shape": list(shape), "eps": EPS[model],
           "tokens": rows * length}
    for name, fn in implementations(model).items():
        def fwd_bwd(fn=fn):
            torch.autograd.grad((call(fn) * dy).float().sum(), ins)
        with torch.no_grad():
            rec = {"forward": measure(lambda fn=fn: call(fn), options)}
        rec["forward_backward"] = measure(fwd_bwd, options)
        y = call(fn)
        grads = torch.autograd.grad((y * dy).float().sum(), ins)
        rec["rel_diff_vs_float64"] = {"y": rel(y, ref), **{f"d{k}": rel(a, r) for k, a, r in zip("xgwb", grads, ref_grads)}}
        out[name] = rec
    base = out["lengthgen"]["forward_backward"]["median_s"]
    out["forward_backward_vs_lengthgen"] = {k: v["forward_backward"]["median_s"] / base
                                            for k, v in out.items() if isinstance(v, dict) and "forward_backward" in v}
    return out


def run(options: Options, section: SectionFile, args=None) -> None:
    from lengthgen.ops import _backend

    why = (None if options.is_cuda else "the kernels run on CUDA only; this run has no CUDA device") or \
        _backend.kernel_unavailable_reason("triton_norm") or _backend.kernel_unavailable_reason("mamba_norm")
    for key, (model, rows, length) in shapes(options).items():
        section.record(key, unavailable(why) if why else guarded(lambda: case(options, model, rows, length)))
