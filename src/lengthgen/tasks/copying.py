"""Synthetic copying (Jelassi et al. 2024; paper Sec. 5.3, Table 1).

Vocabulary: the 26 lowercase letters (ids 0-25), then BOS, SEP, EOS and PAD.  An example is
``BOS s SEP s EOS`` for a random string s; the model is trained from scratch to produce the copy
(only the tokens after SEP, the copy and EOS, are scored) on lengths [min_length, max_length] and
evaluated on longer strings.  Training rows have a fixed size of ``2 * max_length + 3`` tokens, so
shorter examples are left-padded with PAD: the example then ends exactly at the row's end, and the
final state handed on by state passing is the state right after an EOS.

Metrics on a string of length L, teacher-forced (the model reads the true copy; its prediction of
copy token i is scored) and greedy (the model reads BOS s SEP and generates L tokens from the
carried state): character accuracy (fraction of the L positions right), string accuracy (all L
right) and the character accuracy at each of the L positions (``by_position``).
"""

from __future__ import annotations

import random
import string
from typing import Sequence

import torch

from lengthgen.evaluate.generate import greedy_generate
from lengthgen.evaluate.streaming import model_device

LETTERS = string.ascii_lowercase
BOS, SEP, EOS, PAD = 26, 27, 28, 29
VOCAB_SIZE = 30
_NAMES = {BOS: "<bos>", SEP: "<sep>", EOS: "<eos>", PAD: "<pad>"}


def encode(s: str) -> list[int]:
    bad = sorted(set(c for c in s if c not in LETTERS))
    if bad:
        raise ValueError(f"copying strings use the letters a-z only, got {bad}")
    return [LETTERS.index(c) for c in s]


def decode(ids: Sequence[int]) -> str:
    return "".join(LETTERS[i] if 0 <= i < 26 else _NAMES.get(i, f"<{i}>") for i in ids)


def random_string(rng: random.Random, length: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(length))


def example(s: str) -> list[int]:
    """``BOS s SEP s EOS``."""
    ids = encode(s)
    return [BOS, *ids, SEP, *ids, EOS]


def answer_of(tokens: Sequence[int]) -> str:
    """The copy in an example (the letters between SEP and EOS)."""
    tokens = list(tokens)
    try:
        sep = tokens.index(SEP)
        end = tokens.index(EOS, sep)
    except ValueError:
        raise ValueError("not a copying example: it needs SEP and then EOS") from None
    return decode(tokens[sep + 1:end])


def row_context(max_length: int) -> int:
    """Training context T (row of T + 1 tokens) that holds the longest example."""
    return 2 * max_length + 2


def train_row(rng: random.Random, min_length: int, max_length: int) -> tuple[list[int], list[int]]:
    """A left-padded training row of ``row_context(max_length) + 1`` tokens and its mask (1 on the
    copy and EOS)."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
    n = rng.randint(min_length, max_length)
    tokens = example(random_string(rng, n))
    pad = row_context(max_length) + 1 - len(tokens)
    return [PAD] * pad + tokens, [0] * (pad + n + 2) + [1] * (n + 1)


def eval_strings(length: int, count: int, seed: int) -> list[str]:
    rng = random.Random(f"copying-eval:{seed}")
    return [random_string(rng, length) for _ in range(count)]


@torch.no_grad()
def evaluate(model, strings: Sequence[str], chunk_size: int = 2048, batch_size: int = 32) -> dict:
    """Character and string accuracy, teacher-forced and greedy, over equal-length ``strings``."""
    lengths = {len(s) for s in strings}
    if len(lengths) != 1:
        raise ValueError(f"evaluate() takes strings of one length, got lengths {sorted(lengths)}")
    n = lengths.pop()
    device = model_device(model)
    tf_chars, gr_chars = [], []
    for i in range(0, len(strings), batch_size):
        ids = torch.tensor([example(s) for s in strings[i:i + batch_size]], device=device)
        truth = ids[:, n + 2:2 * n + 2]
        logits, _ = model(ids[:, :2 * n + 1])                 # position n + 1 + j predicts copy token j
        tf_chars.append((logits[:, n + 1:2 * n + 1].argmax(-1) == truth).cpu())
        greedy = greedy_generate(model, ids[:, :n + 2], n, chunk_size)
        gr_chars.append((greedy == truth).cpu())
    tf, gr = torch.cat(tf_chars), torch.cat(gr_chars)
    return {"length": n, "num_strings": len(strings),
            "teacher_forced": _accuracies(tf), "greedy": _accuracies(gr)}


def _accuracies(right) -> dict:
    """Character and string accuracy of a (strings, length) bool tensor, and the character accuracy
    at every position of the copy (``by_position[j]``: copy token j), which shows where copying breaks."""
    return {"char_accuracy": float(right.float().mean()), "string_accuracy": float(right.all(1).float().mean()),
            "by_position": [round(float(x), 6) for x in right.float().mean(0)]}
