"""The squared ReLU, ``relu(x) ** 2`` (RWKV-6's channel mix), with a torch reference and a Triton kernel.

On CUDA (float32 / float16 / bfloat16) it is lengthgen's one-pass Triton kernel
(``lengthgen.ops.triton.squared_relu``, kernel family ``triton_squared_relu``): one read and one
write forward, two reads and one write backward, computing in float32, where torch's
``relu(x).square()`` takes two kernels forward and three backward (fla's ``sqrelu`` is one
``torch.compile`` kernel each way).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import use_kernel


def squared_relu_reference(x: Tensor) -> Tensor:
    return F.relu(x).square()


def squared_relu(x: Tensor, backend: str = "auto") -> Tensor:
    """``relu(x) ** 2`` elementwise, in x's dtype."""
    if use_kernel(backend, "triton_squared_relu", x):
        from lengthgen.ops.triton.squared_relu import squared_relu_triton

        return squared_relu_triton(x)
    return squared_relu_reference(x)
