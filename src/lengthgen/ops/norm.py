"""RMSNorm (and LayerNorm), plain or gated and grouped, as one op with a torch reference and Triton kernels.

    plain:                       y = x / rms(x) * weight
    gated, norm_before_gate=F:   y = rmsnorm(x * silu(z)) * weight      (Mamba-2's output norm)
    gated, norm_before_gate=T:   y = rmsnorm(x) * weight * silu(z)

with rms over groups of ``group_size`` channels (None: the whole last dimension) and
rms(x) = sqrt(mean(x^2) + eps).  The reference computes in float32 (float64 stays float64) and
returns x's dtype, like mamba-ssm's reference norms.

``layer_norm`` is the same for LayerNorm with a bias (RWKV-6's norms; with groups, its per-head
GroupNorm; with ``z``, that norm times ``silu(z)``): ``y = (x - mean) / sqrt(var + eps) * weight +
bias`` per group, times ``silu(z)`` if given.

``add_rms_norm`` is a pre-norm block's residual add and the next norm in one op:
``residual + x`` and its plain RMSNorm (the residual kept in float32), so the sum is written once
and read by nobody else; ``add_layer_norm`` the same with a LayerNorm.

Which kernel runs what on CUDA (float32 / float16 / bfloat16 inputs; the CPU and float64 run the
torch reference):

* lengthgen's Triton norm (``lengthgen.ops.triton.rms_norm``, kernel family ``triton_norm``):
  ``rms_norm`` plain or gated (either side of the norm: Mamba-2's and GLA's output norms) and
  ``layer_norm`` plain or gated after the norm (RWKV-6's norms and per-head GroupNorm), with groups
  (the whole dim without them) of at most 1024 channels; ``add_rms_norm`` and ``add_layer_norm``
  (float32 residual, at most 1024 channels).
  Blocks of rows per program, fixed tiles: deterministic, bit-identical gradients across runs.
* mamba-ssm's Triton kernels, where triton_norm does not apply (wider groups) or is unavailable:
  ``rmsnorm_fn`` / ``layernorm_fn`` (``mamba_ssm.ops.triton.layernorm_gated``, which fuse the gate
  and save no float32 copies for the backward pass); for the adds ``layer_norm.rms_norm_fn`` /
  ``layer_norm_fn`` with ``residual``, ``prenorm=True``, ``residual_in_fp32=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import kernel_unavailable_reason, use_kernel

_TRITON_NORM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms compute in: float32 for low-precision inputs, float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm_reference(x: Tensor, weight: Tensor, eps: float, z: Tensor | None = None,
                       group_size: int | None = None, norm_before_gate: bool = False) -> Tensor:
    ct = compute_dtype(x.dtype)
    xf = x.to(ct)
    zf = None if z is None else z.to(ct)
    if zf is not None and not norm_before_gate:
        xf = xf * F.silu(zf)
    g = xf.unflatten(-1, (-1, group_size or x.shape[-1]))
    out = (g * torch.rsqrt(g.square().mean(-1, keepdim=True) + eps)).flatten(-2) * weight.to(ct)
    if zf is not None and norm_before_gate:
        out = out * F.silu(zf)
    return out.to(x.dtype)


def _triton_norm_takes(x: Tensor, width: int, backend: str) -> bool:
    """Whether lengthgen's Triton RMSNorm is the kernel to ask ``use_kernel`` for: x on CUDA in a
    dtype it takes, triton importable, groups (or the whole dim) of at most its width."""
    if backend == "torch" or not x.is_cuda or x.dtype not in _TRITON_NORM_DTYPES:
        return False
    if kernel_unavailable_reason("triton_norm") is not None:
        return False
    from lengthgen.ops.triton.rms_norm import MAX_WIDTH

    return width <= MAX_WIDTH


def rms_norm(x: Tensor, weight: Tensor, eps: float, z: Tensor | None = None, group_size: int | None = None,
             norm_before_gate: bool = False, backend: str = "auto") -> Tensor:
    """RMSNorm of ``x`` (..., d) with ``weight`` (d,); optional gate ``z`` (x's shape) and groups."""
    d = x.shape[-1]
    if weight.shape != (d,):
        raise ValueError(f"rms_norm: weight must have shape ({d},), got {tuple(weight.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"rms_norm: the gate z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    if group_size is not None and (group_size < 1 or d % group_size):
        raise ValueError(f"rms_norm: {d} channels are not a whole number of groups of {group_size}")
    triton = _triton_norm_takes(x, group_size or d, backend)
    if use_kernel(backend, "triton_norm" if triton else "mamba_norm", x, weight, z):
        if triton:
            from lengthgen.ops.triton.rms_norm import rms_norm_triton

            return rms_norm_triton(x, weight, eps, z=z, group_size=group_size, norm_before_gate=norm_before_gate)
        from lengthgen.ops._mamba_import import mamba_rmsnorm_fn

        shape = x.shape
        x2 = x.reshape(-1, d).contiguous()
        z2 = None if z is None else z.reshape(-1, d).contiguous()
        out = mamba_rmsnorm_fn()(x2, weight, None, z=z2, eps=eps, group_size=group_size,
                                 norm_before_gate=norm_before_gate)
        return out.reshape(shape)
    return rms_norm_reference(x, weight, eps, z, group_size, norm_before_gate)


def layer_norm_reference(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float, z: Tensor | None = None,
                         group_size: int | None = None) -> Tensor:
    ct = compute_dtype(x.dtype)
    d = x.shape[-1]
    g = group_size or d
    flat = x.to(ct).reshape(-1, d)
    b = None if bias is None else bias.to(ct)
    if g == d:
        out = F.layer_norm(flat, (d,), weight.to(ct), b, eps)
    else:
        out = F.group_norm(flat, d // g, weight.to(ct), b, eps)
    out = out.view(x.shape)
    if z is not None:
        out = out * F.silu(z.to(ct))
    return out.to(x.dtype)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, eps: float, z: Tensor | None = None,
               group_size: int | None = None, backend: str = "auto") -> Tensor:
    """LayerNorm of ``x`` (..., d) over groups of ``group_size`` channels (None: all d), with
    ``weight`` and ``bias`` (d,) over the whole dim, times ``silu(z)`` if given; x's dtype out."""
    d = x.shape[-1]
    if weight.shape != (d,) or (bias is not None and bias.shape != (d,)):
        raise ValueError(f"layer_norm: weight and bias must have shape ({d},), got {tuple(weight.shape)} and "
                         f"{None if bias is None else tuple(bias.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"layer_norm: the gate z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    if group_size is not None and (group_size < 1 or d % group_size):
        raise ValueError(f"layer_norm: {d} channels are not a whole number of groups of {group_size}")
    triton = _triton_norm_takes(x, group_size or d, backend)
    if use_kernel(backend, "triton_norm" if triton else "mamba_norm", x, weight, bias, z):
        if triton:
            from lengthgen.ops.triton.rms_norm import layer_norm_triton

            return layer_norm_triton(x, weight, bias, eps, z=z, group_size=group_size)
        from lengthgen.ops._mamba_import import mamba_layernorm_fn

        shape = x.shape
        z2 = None if z is None else z.reshape(-1, d).contiguous()
        out = mamba_layernorm_fn()(x.reshape(-1, d).contiguous(), weight, bias, z=z2, eps=eps,
                                   group_size=group_size, norm_before_gate=True, is_rms_norm=False)
        return out.reshape(shape)
    return layer_norm_reference(x, weight, bias, eps, z, group_size)


def add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float,
                 backend: str = "auto") -> tuple[Tensor, Tensor]:
    """``(rms_norm(residual + x) in x's dtype, residual + x)``: x (..., d) is a sub-block's output,
    ``residual`` (x's shape) the stream it is added to, in float32 (float64 stays float64)."""
    return _add_norm(x, residual, weight, None, eps, backend, rms=True)


def add_layer_norm(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor | None, eps: float,
                   backend: str = "auto") -> tuple[Tensor, Tensor]:
    """``(layer_norm(residual + x) in x's dtype, residual + x)``, as :func:`add_rms_norm` (GPU:
    mamba-ssm's ``layer_norm.layer_norm_fn`` with ``residual``, ``prenorm=True``)."""
    return _add_norm(x, residual, weight, bias, eps, backend, rms=False)


def _add_norm(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor | None, eps: float,
              backend: str, rms: bool) -> tuple[Tensor, Tensor]:
    op = "add_rms_norm" if rms else "add_layer_norm"
    d = x.shape[-1]
    if weight.shape != (d,) or (bias is not None and bias.shape != (d,)):
        raise ValueError(f"{op}: weight{'' if rms else ' and bias'} must have shape ({d},), got "
                         f"{tuple(weight.shape)}{'' if bias is None else f' and {tuple(bias.shape)}'}")
    if residual.shape != x.shape:
        raise ValueError(f"{op}: the residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    triton = _triton_norm_takes(x, d, backend)
    if residual.dtype == torch.float32 and use_kernel(backend, "triton_norm" if triton else "mamba_add_norm",
                                                      x, residual, weight, bias):
        if triton:
            from lengthgen.ops.triton.rms_norm import add_layer_norm_triton, add_rms_norm_triton

            if rms:
                return add_rms_norm_triton(x, residual, weight, eps)
            return add_layer_norm_triton(x, residual, weight, bias, eps)
        from lengthgen.ops import _mamba_import

        fn = _mamba_import.mamba_add_rms_norm_fn() if rms else _mamba_import.mamba_add_layer_norm_fn()
        out, new_residual = fn(x, weight, bias, residual=residual, eps=eps, prenorm=True, residual_in_fp32=True)
        return out, new_residual
    new_residual = residual + x
    normed = rms_norm_reference(new_residual, weight, eps) if rms else layer_norm_reference(new_residual, weight, bias, eps)
    return normed.to(x.dtype), new_residual
