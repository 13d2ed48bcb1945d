"""Summed token cross-entropy over a vocabulary, the training loss, as one op.

The reference is plain torch: the logits upcast to float32, then ``F.cross_entropy(reduction="sum")``
(float64 stays float64). For bf16 logits of N tokens over V entries that writes the float32 logits,
their log-softmax and, in the backward pass, both gradients again: about 5 N V float32 values of
traffic besides the logits themselves (1 GB per copy for the study's 65,536 x 4,096 step).

On CUDA the op is fla's ``cross_entropy_loss`` (``fla.modules.fused_cross_entropy``, the kernel of
fla's training recipes): one Triton pass reads the logits in their own dtype, computes in float32
and writes each row's loss and log-sum-exp; its backward writes the gradient in the logits' dtype,
into the logits' own buffer when ``inplace_backward`` (the caller must not read the logits after the
backward then). Ignored targets (``ignore_index``) add nothing to the loss or the gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import use_kernel


def _check(logits: Tensor, targets: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"cross_entropy_sum: logits must be (tokens, vocab), got shape {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy_sum: targets must be ({logits.shape[0]},), got {tuple(targets.shape)}")
    if targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cross_entropy_sum: targets must be integer token ids, got {targets.dtype}")


def cross_entropy_sum_reference(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """The sum over tokens of ``-log softmax(logits)[target]``, in float32 (float64 for float64)."""
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


def cross_entropy_sum(logits: Tensor, targets: Tensor, ignore_index: int = -100, inplace_backward: bool = False,
                      backend: str = "auto") -> Tensor:
    """``logits`` (tokens, vocab), ``targets`` (tokens,) -> the summed loss (a float32 scalar; float64
    for float64 logits). ``inplace_backward``: the kernel may overwrite ``logits`` with its gradient."""
    _check(logits, targets)
    if use_kernel(backend, "fla_cross_entropy", logits, targets):
        from fla.modules.fused_cross_entropy import cross_entropy_loss

        loss, _ = cross_entropy_loss(logits, targets, ignore_index=ignore_index, inplace_backward=inplace_backward)
        return loss.sum()
    return cross_entropy_sum_reference(logits, targets, ignore_index)
