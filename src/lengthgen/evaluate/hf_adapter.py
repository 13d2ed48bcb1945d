"""A Hugging Face causal LM behind the project's forward contract ``logits, state = model(ids, state)``.

So that the perplexity, Effective Remembrance and decoding code runs unchanged on a Transformer
baseline.  A Transformer has no fixed-size recurrent state: the "state" here is its KV cache plus,
per row, an attention mask over the cached positions and the next position id.  Costs, for a
sequence of L tokens read in chunks of c: memory O(L) per row for the cache (it grows with the
context, unlike a recurrent state), and attention work O(c * L) per chunk, O(L^2) in all.

``state.mask(keep)`` (used by Effective Remembrance to restart rows) hides a row's cached
positions from attention and restarts its position ids at 0, which is exactly a fresh start for
the tokens that follow (the hidden entries get zero attention weight).  The cache is updated in
place by each forward: a state must not be reused once it has been passed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class KVState:
    cache: object          # transformers Cache (None before the first token)
    attention: Tensor      # (batch, cached positions) bool: visible cached positions
    position: Tensor       # (batch,) long: position id of the next token

    @property
    def batch_size(self) -> int:
        return int(self.position.shape[0])

    def mask(self, keep: Tensor, components=None) -> "KVState":
        """Rows where ``keep`` is False start afresh (empty context)."""
        keep = torch.as_tensor(keep, device=self.position.device)
        if keep.dtype != torch.bool or keep.shape != self.position.shape:
            raise ValueError(f"mask(keep) needs a bool tensor of shape ({self.batch_size},)")
        return KVState(self.cache, self.attention & keep[:, None], torch.where(keep, self.position, 0))


class HFCausalLM(nn.Module):
    """Wraps ``transformers.AutoModelForCausalLM``-style models (``model(input_ids, attention_mask,
    position_ids, past_key_values, use_cache) -> .logits, .past_key_values``)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "HFCausalLM":
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs))

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_output_embeddings().weight.shape[0])

    def forward(self, input_ids: Tensor, state: KVState | None = None) -> tuple[Tensor, KVState]:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        b, length = input_ids.shape
        device = input_ids.device
        if state is None:
            state = KVState(None, torch.zeros(b, 0, dtype=torch.bool, device=device),
                            torch.zeros(b, dtype=torch.long, device=device))
        elif state.batch_size != b:
            raise ValueError(f"state batch size {state.batch_size} != input batch size {b}")
        attention = torch.cat([state.attention, torch.ones(b, length, dtype=torch.bool, device=device)], 1)
        positions = state.position[:, None] + torch.arange(length, device=device)
        out = self.hf(input_ids=input_ids, attention_mask=attention.long(), position_ids=positions,
                      past_key_values=state.cache, use_cache=True)
        return out.logits, KVState(out.past_key_values, attention, state.position + length)
