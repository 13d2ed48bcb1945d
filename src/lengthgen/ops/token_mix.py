"""RWKV-6's token-shift interpolations, all of one layer's in one op.

With delta_t = x_{t-1} - x_t along dim 1 (x_{-1} = ``previous``, None = zeros: fla's padding),

    out_i = x + delta * (mu_i + bias_i),   i < n

for a static ``mu`` (n, D) (``LerpLinear``'s, the channel mix's two) or a data-dependent one
(B, T, n, D) (the time mix's five, ``x_bias`` as the bias). The reference is plain torch in the
inputs' promoted dtype (exact in float64) and returns that dtype.

On CUDA (float32 / float16 / bfloat16) the op is lengthgen's Triton kernel
(``lengthgen.ops.triton.token_mix``, kernel family ``triton_token_mix``): one pass over x that
writes all n outputs, delta never materialised, in float32 inside. Its outputs are in the autocast
dtype under CUDA autocast (the linears that read them cast to it anyway), else the promoted dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lengthgen.ops._backend import use_kernel


def _promoted(*tensors: Tensor | None) -> torch.dtype:
    present = [t for t in tensors if t is not None]
    dtype = present[0].dtype
    for t in present[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check(x: Tensor, previous: Tensor | None, mu: Tensor, bias: Tensor | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"token_shift_lerp: x must be (B, T, D), got {tuple(x.shape)}")
    b, t, d = x.shape
    if t < 1:
        raise ValueError("token_shift_lerp: x must have at least one token (T >= 1)")
    if mu.dim() not in (2, 4) or mu.shape[-1] != d or mu.shape[-2] < 1:
        raise ValueError(f"token_shift_lerp: mu must be (n, {d}) or (B, T, n, {d}) with n >= 1, "
                         f"got {tuple(mu.shape)}")
    if mu.dim() == 4 and mu.shape[:2] != (b, t):
        raise ValueError(f"token_shift_lerp: a data-dependent mu must be ({b}, {t}, n, {d}) like x, "
                         f"got {tuple(mu.shape)}")
    if previous is not None and previous.shape != (b, d):
        raise ValueError(f"token_shift_lerp: previous must be ({b}, {d}), got {tuple(previous.shape)}")
    n = mu.shape[-2]
    if bias is not None and bias.shape != (n, d):
        raise ValueError(f"token_shift_lerp: bias must be ({n}, {d}), got {tuple(bias.shape)}")


def token_shift_lerp_reference(x: Tensor, previous: Tensor | None, mu: Tensor,
                               bias: Tensor | None = None) -> tuple[Tensor, ...]:
    ct = _promoted(x, previous, mu, bias)
    x = x.to(ct)
    first = torch.zeros_like(x[:, :1]) if previous is None else previous.to(ct).unsqueeze(1)
    delta = torch.cat([first, x[:, :-1]], dim=1) - x
    mix = mu.to(ct) if bias is None else mu.to(ct) + bias.to(ct)
    return tuple(x + delta * m for m in mix.unbind(-2))


def token_shift_lerp(x: Tensor, previous: Tensor | None, mu: Tensor, bias: Tensor | None = None,
                     backend: str = "auto") -> tuple[Tensor, ...]:
    """delta_t = x_{t-1} - x_t (x_{-1} = previous, None = zeros); returns the n tensors
    x + delta * (mu_i + bias_i), i < n.  x (B, T, D); previous (B, D) or None; mu (n, D) static
    or (B, T, n, D) data-dependent; bias (n, D) or None."""
    _check(x, previous, mu, bias)
    if use_kernel(backend, "triton_token_mix", x, previous, mu, bias):
        from lengthgen.ops.triton.token_mix import token_shift_lerp_triton

        autocast = torch.is_autocast_enabled("cuda")
        out_dtype = torch.get_autocast_dtype("cuda") if autocast else _promoted(x, previous, mu, bias)
        return token_shift_lerp_triton(x, previous, mu, bias, out_dtype)
    return token_shift_lerp_reference(x, previous, mu, bias)
