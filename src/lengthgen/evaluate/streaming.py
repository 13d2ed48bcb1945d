"""Run a recurrent model over a long sequence chunk by chunk, carrying its state.

Every evaluation that reads a long sequence goes through ``stream``: the model sees the chunks
``[0, c), [c, 2c), ...`` in order, each starting from the state the previous one left, which by the
model contract gives the same logits as one forward over the whole sequence while peak memory
depends on the chunk size only.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor


def check_ids(input_ids: Tensor, min_length: int = 1, what: str = "input_ids") -> Tensor:
    """Validate a (batch, length) integer tensor of token ids; return it unchanged."""
    if not isinstance(input_ids, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{what} must have shape (batch, length), got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[0] == 0:
        raise ValueError(f"{what} has an empty batch")
    if input_ids.shape[1] < min_length:
        raise ValueError(f"{what} has {input_ids.shape[1]} tokens per sequence; this evaluation needs at least "
                         f"{min_length} (use longer sequences)")
    return input_ids


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return chunk_size


def model_device(model) -> torch.device:
    """The device of the model's parameters (CPU for a parameterless model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def stream(model, input_ids: Tensor, chunk_size: int, state=None) -> Iterator[tuple[int, Tensor, object]]:
    """Yield ``(start, logits, state)`` for consecutive chunks of ``input_ids``.

    ``logits`` (batch, chunk length, vocab) are the model's outputs on ``input_ids[:, start:end]``
    and ``state`` the state after ``end``; ``end - start`` is ``chunk_size`` except for the last chunk.
    The caller must not keep the logits of every chunk if memory is to stay bounded.
    """
    check_ids(input_ids)
    check_chunk_size(chunk_size)
    length = input_ids.shape[1]
    for start in range(0, length, chunk_size):
        logits, state = model(input_ids[:, start:start + chunk_size], state=state)
        yield start, logits, state
