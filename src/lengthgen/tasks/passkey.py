"""Passkey retrieval (Mohtashami & Jaggi 2023; paper Sec. 5.2), in the landmark-attention format.

A prompt is: an instruction line; the filler sentence block repeated; the key sentence
``The pass key is K. Remember it. K is the pass key.`` inserted after a fraction ``depth`` of the
filler repetitions; more filler; and the question ``What is the pass key? The pass key is``.
Keys are 5-digit integers drawn from a seeded generator.  Prompts are built to a target length in
tokens of the model's tokenizer: the largest number of filler repetitions whose prompt fits.

The model answers by greedy decoding from the carried state (the prompt is read once in chunks,
then tokens are generated one at a time); the answer is the first run of digits in the decoded
continuation, and is correct when it equals the key.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from lengthgen.evaluate.generate import greedy_generate

INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
               "I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
KEY_RANGE = (10000, 99999)
_NEEDLE_RE = re.compile(r"The pass key is (\d+)\. Remember it\. \1 is the pass key\.")
_DIGITS = re.compile(r"\d+")


class PromptTooShort(ValueError):
    """A target length below the shortest passkey prompt (no filler) with the tokenizer."""

    def __init__(self, target_tokens: int, minimum: int):
        super().__init__(f"a passkey prompt needs at least {minimum} tokens with this tokenizer; "
                         f"target {target_tokens} is too short")
        self.target_tokens, self.minimum = target_tokens, minimum


@dataclass(frozen=True)
class PasskeySample:
    text: str
    key: int
    depth: float
    target_tokens: int
    ids: list[int]


def passkey_text(key: int, num_filler: int, depth: float) -> str:
    """The prompt with ``num_filler`` filler blocks, the key after ``round(depth * num_filler)`` of them."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    before = round(depth * num_filler)
    return "\n".join([INSTRUCTION, " ".join([FILLER] * before), NEEDLE.format(key=key),
                      " ".join([FILLER] * (num_filler - before)), QUESTION])


def build_sample(tokenizer, target_tokens: int, depth: float, key: int) -> PasskeySample:
    """The longest prompt of at most ``target_tokens`` tokens (binary search on the filler count)."""
    count = lambda n: len(tokenizer.encode(passkey_text(key, n, depth)))  # noqa: E731
    if count(0) > target_tokens:
        raise PromptTooShort(target_tokens, count(0))
    lo, hi = 0, 1
    while count(hi) <= target_tokens:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target_tokens else (lo, mid)
    text = passkey_text(key, lo, depth)
    return PasskeySample(text, key, depth, target_tokens, list(tokenizer.encode(text)))


def generate_samples(tokenizer, lengths: Sequence[int], depths: Sequence[float], samples: int,
                     seed: int) -> list[PasskeySample]:
    """``samples`` prompts per (length, depth), keys from ``random.Random(seed)`` (deterministic)."""
    rng = random.Random(seed)
    return [build_sample(tokenizer, length, depth, rng.randint(*KEY_RANGE))
            for length in lengths for depth in depths for _ in range(samples)]


def key_in_text(text: str) -> int:
    """The key hidden in a prompt (what a perfect reader answers)."""
    m = _NEEDLE_RE.search(text)
    if m is None:
        raise ValueError("no pass key sentence in the text")
    return int(m.group(1))


def parse_answer(continuation: str) -> int | None:
    """The first run of digits in the model's continuation, or None."""
    m = _DIGITS.search(continuation)
    return int(m.group(0)) if m else None


def evaluate(model, tokenizer, samples: Iterable[PasskeySample], max_new_tokens: int = 8,
             chunk_size: int = 2048, device=None) -> list[dict]:
    """One row per sample: length, depth, key, the decoded answer and whether it is correct."""
    rows = []
    for s in samples:
        ids = torch.tensor([s.ids], dtype=torch.long, device=device)
        out = greedy_generate(model, ids, max_new_tokens, chunk_size)
        continuation = tokenizer.decode(out[0].tolist())
        answer = parse_answer(continuation)
        rows.append({"target_tokens": s.target_tokens, "num_tokens": len(s.ids), "depth": s.depth, "key": s.key,
                     "answer": answer, "continuation": continuation, "correct": answer == s.key})
    return rows


def finetune_example(tokenizer, context: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """One finetuning sequence of exactly ``context + 1`` tokens: a passkey prompt (random depth)
    followed by the answer `` K.``, left-padded with EOS (a document boundary) to the exact length.
    Returns (tokens, mask), the mask 1 on the answer's tokens, the only ones scored."""
    key = rng.randint(*KEY_RANGE)
    answer = list(tokenizer.encode(f" {key}."))
    prompt = build_sample(tokenizer, context + 1 - len(answer), rng.random(), key).ids
    pad = context + 1 - len(prompt) - len(answer)
    eos = int(getattr(tokenizer, "eos_id", 0))
    return [eos] * pad + prompt + answer, [0] * (pad + len(prompt)) + [1] * len(answer)
