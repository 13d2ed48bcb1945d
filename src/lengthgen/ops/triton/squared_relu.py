"""The squared ReLU in one Triton pass each way: y = relu(x)^2, dx = 2 relu(x) dy.

Both compute in float32 and round once to x's dtype; the backward reads x and dy (y is not saved).
The reference is ``lengthgen.ops.activations.squared_relu_reference``.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only where triton is absent
    raise ImportError("lengthgen.ops.triton needs triton (pip install triton); "
                      "use backend='torch' for the plain reference") from exc

BLOCK = 4096
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _fwd_kernel(x_ptr, y_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    r = tl.maximum(tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    tl.store(y_ptr + offs, (r * r).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(x_ptr, dy_ptr, dx_ptr, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    r = tl.maximum(tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32), 0.0)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, (2.0 * r * dy).to(dx_ptr.dtype.element_ty), mask=mask)


def _launch(kernel, *tensors: torch.Tensor) -> None:
    n = tensors[0].numel()
    if n:
        kernel[(triton.cdiv(n, BLOCK),)](*tensors, n, BLOCK=BLOCK, num_warps=8)


class _SquaredReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = torch.empty_like(x)
        _launch(_fwd_kernel, x, y)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        dx = torch.empty_like(x)
        _launch(_bwd_kernel, x, dy.contiguous(), dx)
        return dx


def squared_relu_triton(x: torch.Tensor) -> torch.Tensor:
    if x.dtype not in DTYPES:
        raise TypeError(f"squared_relu_triton: x must be float32, float16 or bfloat16, got {x.dtype}")
    return _SquaredReLU.apply(x)
