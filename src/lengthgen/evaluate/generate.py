"""Greedy decoding from the carried state: read the prompt once (streamed in chunks), then feed one
token at a time with the state, never recomputing the context (cost: one pass over the prompt plus
one single-token step per generated token)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from .streaming import check_chunk_size, check_ids, model_device, stream


@torch.no_grad()
def greedy_generate(model, prompt_ids: Tensor, max_new_tokens: int, chunk_size: int = 2048,
                    stop_ids: Iterable[int] = (), state=None) -> Tensor:
    """Greedy continuation (batch, max_new_tokens) of equal-length prompts (batch, length).

    After a row emits a token of ``stop_ids`` it keeps repeating it; decoding ends early when every
    row has stopped (the output is then padded with each row's stop token).
    """
    check_ids(prompt_ids)
    check_chunk_size(chunk_size)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompt_ids = prompt_ids.to(model_device(model))
    logits = None
    for _, logits, state in stream(model, prompt_ids, chunk_size, state):
        logits = logits[:, -1]
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long, device=prompt_ids.device)
    out = []
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    token = logits.argmax(-1)
    for i in range(max_new_tokens):
        token = torch.where(done, out[-1] if out else token, token)
        out.append(token)
        done |= torch.isin(token, stops)
        if i == max_new_tokens - 1 or bool(done.all()):
            break
        logits, state = model(token[:, None], state=state)
        token = logits[:, -1].argmax(-1)
    result = torch.stack(out, 1)
    if result.shape[1] < max_new_tokens:
        result = torch.cat([result, result[:, -1:].expand(-1, max_new_tokens - result.shape[1])], 1)
    return result
