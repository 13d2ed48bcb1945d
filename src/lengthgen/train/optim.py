"""AdamW with the paper's betas and the usual split into decayed and non-decayed parameters.

Decayed: matrices and convolution kernels (parameters with >= 2 dims). Not decayed, as in GPT-2 /
nanoGPT / mamba-ssm practice: biases and norm gains (1-D), the token embedding (and the LM head
tied to it), and anything a model marks ``_no_weight_decay`` (Mamba's ``A_log``, ``D``, ``dt_bias``).
"""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, not decayed), each parameter once (tied weights are one parameter)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        if p.dim() < 2 or id(p) in embeddings or getattr(p, "_no_weight_decay", False):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95),
                    eps: float = 1e-8, fused: bool = False) -> torch.optim.AdamW:
    """AdamW whose first group is decayed (its weight decay follows the schedule) and second is not.
    ``fused``: torch's fused AdamW kernel (CUDA: one launch per step instead of one per tensor group)."""
    decay, no_decay = param_groups(model)
    groups = [{"params": decay, "weight_decay": weight_decay, "decayed": True},
              {"params": no_decay, "weight_decay": 0.0, "decayed": False}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **({"fused": True} if fused else {}))


def set_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group.get("decayed") else 0.0
