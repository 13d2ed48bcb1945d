"""BABILong (Kuratov et al. 2024; paper Sec. 5.1, Fig. 6): bAbI questions whose facts hide in long text.

Two sources of samples (``input`` = the long context, ``question``, ``target``):

* ``load_hf(dataset, length, task)``: the public datasets (``RMT-team/babilong``, configs by length
  ``"0k"``..``"128k"``, splits ``qa1``..``qa5``) through ``datasets``; or a local folder laid out
  ``<folder>/<length>/<task>.{jsonl,json,parquet}`` with the same fields.
* ``generate_samples(...)``: offline, the bAbI-style generator of :mod:`lengthgen.tasks.babi` with
  its facts scattered, in order, among sentences of our own corpus (any iterator of documents)
  until the context reaches the target length in tokens (``"Nk"`` = N * 1024 tokens).

Prompt (BABILong's layout): ``{instruction}\\n{examples}\\n{post_prompt}\\n<context>\\n{input}\\n
</context>\\nQuestion: {question}\\nAnswer:``.  The trailing ``Answer:`` (not in BABILong, whose
models are chat models) lets a base language model answer by continuation.  ``examples`` are
in-context examples made by the generator (few-shot) or empty.

Answer matching follows BABILong: lowercase the output, keep its first sentence (and nothing from a
``<context>``, ``<example>`` or ``Question`` it starts to write), collect the task's answer labels it
mentions, drop those the question mentions; correct iff the target is the only label left.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from lengthgen.evaluate.generate import greedy_generate

from . import babi

TEMPLATE = "{instruction}\n{examples}\n{post_prompt}\n<context>\n{context}\n</context>\nQuestion: {question}\nAnswer:"
INSTRUCTIONS = {
    "qa1": "The context below hides facts about where people go among unrelated text. Answer the question "
           "from those facts only; when a person moved several times, their last location is the answer.",
    "qa2": "The context below hides facts about people moving and carrying objects among unrelated text. Answer "
           "the question from those facts only. An object someone carries goes where that person goes; an "
           "object someone put down stays in the room where it was put down.",
    "qa3": "The context below hides facts about people moving and carrying objects among unrelated text. Answer "
           "the question from those facts only. An object someone carries goes where that person goes; an "
           "object someone put down stays in the room where it was put down.",
    "qa4": "The context below hides facts about how rooms are placed relative to each other among unrelated "
           "text. Answer the question from those facts only.",
    "qa5": "The context below hides facts about people handing objects to each other among unrelated text. "
           "Answer the question from those facts only.",
}
POST_PROMPT = "Answer with a single word and nothing else."
FIELDS = ("input", "question", "target")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def parse_length(name: str) -> int:
    """``"4k"`` -> 4096 tokens of context (``"0k"``: the facts alone)."""
    m = re.fullmatch(r"(\d+)k", name)
    if not m:
        raise ValueError(f"a BABILong length is written like '0k', '4k' or '128k', got {name!r}")
    return int(m.group(1)) * 1024


def examples_block(task: str, count: int = 2, seed: int = 12345) -> str:
    """In-context examples for ``task`` (fixed, from the generator)."""
    rng = random.Random(f"examples:{task}:{seed}")
    blocks = []
    for _ in range(count):
        s = babi.generate(task, rng, num_facts=5)
        blocks.append(f"<example>\n{' '.join(s.facts)} {s.question}\nAnswer: {s.answer}\n</example>")
    return "\n".join(blocks)


def format_prompt(task: str, context: str, question: str, few_shot: bool = True) -> str:
    if task not in INSTRUCTIONS:
        raise ValueError(f"unknown BABILong task {task!r}; choose one of {sorted(INSTRUCTIONS)}")
    return TEMPLATE.format(instruction=INSTRUCTIONS[task], examples=examples_block(task) if few_shot else "",
                           post_prompt=POST_PROMPT, context=context.strip(), question=question.strip())


def _first_sentence(output: str) -> str:
    out = output.lower().split(".")[0]
    for stop in ("<context>", "<example>", "question"):
        out = out.split(stop)[0]
    return out


def is_correct(target: str, output: str, question: str, task: str) -> bool:
    """BABILong-style matching (see the module docstring)."""
    labels = {label.lower() for label in babi.ANSWER_LABELS[task]}
    out = _first_sentence(output)
    mentioned = {label for label in labels if re.search(rf"\b{label}\b", out)}
    mentioned -= {label for label in labels if re.search(rf"\b{label}\b", question.lower())}
    return mentioned == {target.lower()}


# ------------------------------------------------------------------------------ samples
def load_hf(dataset: str, length: str, task: str, limit: int | None = None) -> list[dict]:
    """BABILong samples (dicts with input, question, target) from the hub or a local folder."""
    import datasets

    from lengthgen.data.errors import DataError

    fix = ("download the BABILong datasets (RMT-team/babilong) into tasks.babilong.dataset, or use "
           "tasks.babilong.source=generated")
    folder = Path(dataset)
    if folder.is_dir():
        files = sorted(p for p in (folder / length).glob(f"{task}.*") if p.suffix in (".jsonl", ".json", ".parquet"))
        if not files:
            raise DataError(f"no {length}/{task}.jsonl, .json or .parquet in {folder}: {fix}")
        if all(f.stat().st_size == 0 for f in files):
            raise DataError(f"{dataset} {length}/{task} is empty: {fix}")
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    else:
        try:
            ds = datasets.load_dataset(dataset, length, split=task)
        except (ConnectionError, FileNotFoundError, OSError) as e:  # offline, or not in the local cache
            raise DataError(f"BABILong {dataset} {length}/{task} could not be loaded ({type(e).__name__}): {fix}") from e
    missing = [f for f in FIELDS if f not in ds.column_names]
    if missing:
        raise DataError(f"{dataset} {length}/{task} lacks the fields {missing} (BABILong has input, question, "
                        f"target): {fix}")
    rows = [{f: str(r[f]) for f in FIELDS} for r in ds.select(range(min(len(ds), limit or len(ds))))]
    if not rows:
        raise DataError(f"{dataset} {length}/{task} is empty: {fix}")
    return rows


def sentences(documents: Iterable[str]) -> Iterator[str]:
    """Non-empty sentences (or lines) of the documents, in order."""
    for doc in documents:
        for s in _SENTENCE_END.split(doc):
            s = s.strip()
            if s:
                yield s


def hide_facts(facts: Sequence[str], filler: Iterator[str], tokenizer, target_tokens: int,
               rng: random.Random) -> str:
    """The facts, in order, at random places among filler sentences totalling about ``target_tokens``
    tokens (counted sentence by sentence)."""
    budget = target_tokens - sum(len(tokenizer.encode(" " + f)) for f in facts)
    chosen = []
    while budget > 0:
        try:
            s = next(filler)
        except StopIteration:
            raise ValueError(f"the filler corpus ran out before {target_tokens} tokens: use a larger corpus "
                             "or shorter lengths") from None
        chosen.append(s)
        budget -= len(tokenizer.encode(" " + s))
    slots = sorted(rng.randint(0, len(chosen)) for _ in facts)
    out = []
    for i in range(len(chosen) + 1):
        out += [f for f, slot in zip(facts, slots) if slot == i]
        if i < len(chosen):
            out.append(chosen[i])
    return " ".join(out)


def generate_samples(task: str, length: str, count: int, filler: Iterator[str], tokenizer,
                     seed: int) -> list[dict]:
    """``count`` offline samples (input, question, target) of ``task`` at ``length``."""
    rng = random.Random(f"babilong:{task}:{length}:{seed}")
    rows = []
    for _ in range(count):
        s = babi.generate(task, rng)
        rows.append({"input": hide_facts(s.facts, filler, tokenizer, parse_length(length), rng),
                     "question": s.question, "target": s.answer})
    return rows


def finetune_example(tokenizer, task: str, context: int, filler: Iterator[str], few_shot: bool,
                     rng: random.Random) -> tuple[list[int], list[int]]:
    """A finetuning row of ``context + 1`` tokens: prompt + `` answer``, left-padded with EOS; the
    mask is 1 on the answer."""
    s = babi.generate(task, rng)
    answer = list(tokenizer.encode(f" {s.answer}"))
    shell = len(tokenizer.encode(format_prompt(task, "", s.question, few_shot))) + len(answer)
    room = context + 1 - shell
    if room < 0:
        raise ValueError(f"a {task} prompt needs {shell} tokens, more than the finetuning context {context}")
    text = hide_facts(s.facts, filler, tokenizer, room - 2 * len(s.facts) - 8, rng)
    prompt = list(tokenizer.encode(format_prompt(task, text, s.question, few_shot)))
    while len(prompt) + len(answer) > context + 1:      # sentence-wise token counts can overshoot a little
        text = text[:len(text) * 9 // 10]
        prompt = list(tokenizer.encode(format_prompt(task, text, s.question, few_shot)))
    pad = context + 1 - len(prompt) - len(answer)
    eos = int(getattr(tokenizer, "eos_id", 0))
    return [eos] * pad + prompt + answer, [0] * (pad + len(prompt)) + [1] * len(answer)


@torch.no_grad()
def evaluate(model, tokenizer, task: str, samples: Sequence[dict], few_shot: bool = True,
             max_new_tokens: int = 16, chunk_size: int = 2048, device=None) -> list[dict]:
    """One row per sample: prompt length, target, the model's output and whether it matches."""
    rows = []
    for s in samples:
        ids = torch.tensor([tokenizer.encode(format_prompt(task, s["input"], s["question"], few_shot))],
                           dtype=torch.long, device=device)
        output = tokenizer.decode(greedy_generate(model, ids, max_new_tokens, chunk_size)[0].tolist())
        rows.append({"num_tokens": ids.shape[1], "question": s["question"], "target": s["target"], "output": output,
                     "correct": is_correct(s["target"], output, s["question"], task)})
    return rows


def filler_pool(documents: Iterable[str], tokenizer, tokens: int) -> list[str]:
    """The first sentences of ``documents`` totalling at least ``tokens`` tokens (finetuning filler)."""
    pool, total = [], 0
    for s in sentences(documents):
        pool.append(s)
        total += len(tokenizer.encode(" " + s))
        if total >= tokens:
            return pool
    raise ValueError(f"the corpus has only {total} tokens of filler, {tokens} needed: use a larger corpus")


def cycle_from(pool: Sequence[str], rng: random.Random) -> Iterator[str]:
    """The pool's sentences from a random start, wrapping around."""
    start = rng.randrange(len(pool))
    while True:
        for i in range(len(pool)):
            yield pool[(start + i) % len(pool)]
