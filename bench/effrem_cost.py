"""Section ``effrem``: the cost of Effective Remembrance against a bound from counting tokens.

``lengthgen.evaluate.effective_remembrance`` at T = 8192 with 64 log-spaced cut points
(mamba2-130m, bf16 autocast, the stage's default chunk and group sizes). The bound is the time the
tokens it must read would take at the streamed evaluation throughput measured here (batch 1,
chunk 8192)::

    bound_tokens = sum over t in {0} + cut points of (T - t)     (each suffix; t = 0 is the full pass)
    bound_s      = bound_tokens / streamed tokens per second

``measured / bound`` above 1 is the price of batching suffixes in groups (a group runs all its
rows from its smallest cut point: ``grouped_tokens``) and of the small chunks.
"""

from __future__ import annotations

from bench.common import Options, SectionFile, free_memory, guarded, measure, once, synthetic_ids

NAME = "effrem"


def cut_points(length: int, count: int) -> list[int]:
    """At least ``count`` distinct log-spaced cut points (``evaluate.log_cut_points`` dedupes
    rounded distances, so ask for more until enough remain)."""
    from lengthgen.evaluate import log_cut_points

    if count > length:
        raise ValueError(f"cannot place {count} distinct cut points in a sequence of {length} tokens")
    num = count
    while len(cuts := log_cut_points(length, num)) < count:
        num += 1
    return cuts


def bound_tokens(length: int, cuts: list[int]) -> int:
    """Tokens read if every suffix x_{t:T} and the full sequence (t = 0) ran once, nothing shared."""
    return sum(length - t for t in set([0, *cuts]))


def grouped_tokens(length: int, cuts: list[int], group_size: int) -> int:
    """Tokens ``suffix_probs`` actually runs: each group of cut points (with the full pass t = 0)
    as one batch from its smallest cut point."""
    unique = sorted(set([0, *cuts]))
    return sum(len(unique[g:g + group_size]) * (length - unique[g]) for g in range(0, len(unique), group_size))


def measure_effrem(options: Options) -> dict:
    from lengthgen.config import resolve
    from lengthgen.evaluate import effective_remembrance, positionwise_loss, runtime
    from lengthgen.models import build_model

    length, count = options.pick((8192, 64), (8192, 64), (256, 16))
    chunk = options.pick(8192, 8192, 128)
    defaults = resolve({})["eval"]["effrem"]
    model = runtime.prepare_model(build_model("mamba2", options.preset("mamba2-130m"), seed=0),
                                  options.torch_device, "bf16")
    ids = synthetic_ids(1, length, model.config.vocab_size, options.torch_device)
    cuts = cut_points(length, count)

    def streamed() -> None:
        with runtime.autocast(options.torch_device, "bf16"):
            positionwise_loss(model, ids, chunk_size=chunk)

    def effrem() -> None:
        with runtime.autocast(options.torch_device, "bf16"):
            effective_remembrance(model, ids, cuts, chunk_size=defaults["chunk_size"], group_size=defaults["group_size"])

    s = measure(streamed, options, warmup=1, iters=options.pick(3, 2, 1))
    tput = (length - 1) / s["median_s"]
    effrem()  # warm-up: compiles the kernels for the suffix batch shapes
    e = once(effrem, options)
    bound = bound_tokens(length, cuts)
    return {"length": length, "num_cut_points": len(cuts), "chunk_size": defaults["chunk_size"],
            "group_size": defaults["group_size"], "streamed": {**s, "tokens_per_s": tput, "chunk_size": chunk},
            "seconds": e["seconds"], "peak_mem_bytes": e["peak_mem_bytes"], "bound_tokens": bound,
            "grouped_tokens": grouped_tokens(length, cuts, defaults["group_size"]),
            "bound_s": bound / tput, "measured_vs_bound": e["seconds"] / (bound / tput)}


def run(options: Options, section: SectionFile, args=None) -> None:
    section.record("mamba2-130m", guarded(lambda: measure_effrem(options)))
    free_memory()
