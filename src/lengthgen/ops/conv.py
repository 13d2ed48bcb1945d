"""Depthwise causal 1-d convolution with a carried window state (Mamba-1/2's short conv).

Output ``t`` of channel ``c`` is ``sum_k weight[c, k] * z[c, t + k]`` over the sequence
``z = [state, x]`` (the state holds the ``w - 1`` inputs that precede ``x``), plus the bias,
then the activation.  The new state is the last ``w - 1`` entries of ``z``, so when ``x`` is
shorter than the window the old state fills the rest.  Splitting a sequence anywhere and carrying
the state is therefore exact.

GPU, in order of preference: causal-conv1d's ``causal_conv1d_fn`` when its compiled extension is
installed (its ``initial_states`` path wants channel-last tensors, which this module arranges);
lengthgen's Triton conv (``ops/triton/causal_conv1d.py``: forward and backward fused with the bias
and SiLU, reading the channel-last view Mamba's ``in_proj`` produces without a copy, recomputing the
pre-activation in the backward instead of storing it); otherwise the torch path, which runs on CUDA
too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import kernel_unavailable_reason, state_dtype, use_kernel

ACTIVATIONS = (None, "silu")


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor | None, activation) -> None:
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (batch, channels, length), got shape {tuple(x.shape)}")
    b, d, _ = x.shape
    if weight.dim() != 2 or weight.shape[0] != d or weight.shape[1] < 1:
        raise ValueError(f"causal_conv1d: weight must be (channels, width) with channels = {d}, got {tuple(weight.shape)}")
    w = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (d,):
        raise ValueError(f"causal_conv1d: bias must be (channels,) = ({d},), got {tuple(bias.shape)}")
    if conv_state is not None and tuple(conv_state.shape) != (b, d, w - 1):
        raise ValueError(
            f"causal_conv1d: conv_state must be (batch, channels, width - 1) = {(b, d, w - 1)}, "
            f"got {tuple(conv_state.shape)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}")


def causal_conv1d_reference(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, conv_state: Tensor | None = None, activation="silu"
) -> tuple[Tensor, Tensor]:
    """Plain-torch causal conv; returns y in x's dtype and the new window in float32 (float64)."""
    b, d, _ = x.shape
    w = weight.shape[1]
    if conv_state is None:
        conv_state = x.new_zeros(b, d, w - 1)
    z = torch.cat([conv_state.to(x.dtype), x], dim=-1)
    wt = weight.to(x.dtype)
    if x.is_cuda:  # cuDNN's depthwise conv
        y = F.conv1d(z, wt.unsqueeze(1), None if bias is None else bias.to(x.dtype), groups=d)
    else:  # a sum of w shifted products: same result, ~1000x faster than grouped conv1d on CPU
        length = x.shape[-1]
        y = sum(wt[:, k, None] * z[:, :, k : k + length] for k in range(w))
        if bias is not None:
            y = y + bias.to(x.dtype)[:, None]
    if activation == "silu":
        y = F.silu(y)
    return y, z[:, :, z.shape[-1] - (w - 1) :].to(state_dtype(x, weight, conv_state))


def _conv_kernel(x, weight, bias, conv_state, activation) -> tuple[Tensor, Tensor]:
    from lengthgen.ops._mamba_import import causal_conv1d_fn

    fn = causal_conv1d_fn()
    b, d, _ = x.shape
    w = weight.shape[1]
    channel_last = lambda t: t.transpose(1, 2).contiguous().transpose(1, 2)  # noqa: E731
    if conv_state is None:
        conv_state = x.new_zeros(b, d, w - 1)
    y, state = fn(
        channel_last(x), weight, bias,
        initial_states=channel_last(conv_state.to(x.dtype)), return_final_states=True, activation=activation,
    )  # fmt: skip
    return y.contiguous(), state.to(state_dtype(x, weight, conv_state))


def _triton_conv_kernel(x, weight, bias, conv_state, activation) -> tuple[Tensor, Tensor]:
    from lengthgen.ops.triton.causal_conv1d import causal_conv1d_triton

    y, window = causal_conv1d_triton(x, weight, bias, conv_state, activation)
    return y, window.to(state_dtype(x, weight, conv_state))


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    conv_state: Tensor | None = None,
    activation: str | None = "silu",
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv: x (b, d, l), weight (d, w), bias (d,), conv_state (b, d, w - 1) or None.

    Returns y (b, d, l) and the new conv state (b, d, w - 1): the last w - 1 inputs (padded on the
    left with the old state when l < w - 1), in float32 (float64 for float64 inputs).
    """
    _check(x, weight, bias, conv_state, activation)
    compiled = x.is_cuda and kernel_unavailable_reason("causal_conv1d") is None
    if use_kernel(backend, "causal_conv1d" if compiled else "triton_conv", x, weight, bias, conv_state):
        if not compiled:
            return _triton_conv_kernel(x, weight, bias, conv_state, activation)
        # causal-conv1d takes widths 2-4 and at least w - 1 steps; shorter sequences stay on the torch path
        if 2 <= weight.shape[1] <= 4 and x.shape[-1] >= weight.shape[1] - 1:
            return _conv_kernel(x, weight, bias, conv_state, activation)
        if backend == "kernel":
            raise ValueError(f"causal_conv1d: causal-conv1d takes widths 2-4 and at least width - 1 steps, got "
                             f"width {weight.shape[1]} and {x.shape[-1]} steps; use backend='torch'")
    return causal_conv1d_reference(x, weight, bias, conv_state, activation)
