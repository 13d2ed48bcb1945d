"""Section ``eval``: long-context position-wise loss, streamed against one full-sequence call.

``lengthgen.evaluate.positionwise_loss`` on one sequence (batch 1) of 8k, 32k, 128k and 512k
tokens, mamba2-130m with fp32 weights under bf16 autocast (``eval.precision=bf16``):

* streamed in chunks of ``CHUNK`` tokens (state carried), and at 128k also with the library's
  default ``eval.chunk_size``;
* in one call (``chunk_size = length``): where it runs out of memory or fails (mamba-ssm's int32
  indexing past ~61k tokens, state-spaces/mamba issue #1015; our SSD op splits long inputs into
  segments for that reason), the error text is recorded.

Every measurement uses one ``loss_graphs`` object for the whole section, as ``lengthgen eval-ppl``
does for a whole evaluation: a chunk shape is captured once into a CUDA graph and replayed after
(``lengthgen.evaluate.graphs``). ``*_eager`` entries run the same calls without graphs
(``graphs=False``), the library's behaviour before graphs; so do the one-call ``full`` runs (a one-off
shape, whose graph would keep its memory pool reserved).

The reference for throughput is the forward at the training shape (8 x 2048 tokens, same function,
same model, same graphs): ``eval_128k_tput_vs_train_fwd`` compares the two.
"""

from __future__ import annotations

from bench.common import Options, SectionFile, free_memory, guarded, measure, rate, synthetic_ids

NAME = "eval"
CHUNK = 8192


def lengths(options: Options) -> list[int]:
    return options.pick([8192, 32768, 131072, 524288], [8192, 32768, 131072, 524288], [256, 1024])


def loss_run(model, ids, chunk: int, options: Options, iters: int, graphs) -> dict:
    """``positionwise_loss`` timings; ``graphs``: the section's ``loss_graphs`` object, or False."""
    from lengthgen.evaluate import positionwise_loss, runtime

    def fn() -> None:
        with runtime.autocast(options.torch_device, "bf16"):
            positionwise_loss(model, ids, chunk_size=chunk, graphs=graphs)

    replays = getattr(graphs, "replays", 0)
    m = measure(fn, options, warmup=2 if graphs else 1, iters=iters)  # graphs: capture before timing
    tokens = ids.numel() - ids.shape[0]  # positions scored
    return {**m, "tokens": tokens, "tokens_per_s": rate(tokens, m["median_s"]), "chunk_size": chunk,
            "cuda_graphs": bool(graphs), "graph_replays": getattr(graphs, "replays", 0) - replays}


def run(options: Options, section: SectionFile, args=None) -> None:
    from lengthgen.config import resolve
    from lengthgen.evaluate import loss_graphs, runtime
    from lengthgen.models import build_model

    preset = options.preset("mamba2-130m")
    chunk = options.pick(CHUNK, CHUNK, 128)
    model = runtime.prepare_model(build_model("mamba2", preset, seed=0), options.torch_device, "bf16")
    graphs = loss_graphs(model)
    vocab = model.config.vocab_size
    iters = options.pick(3, 2, 1)
    short, long = options.pick((8192, 131072), (8192, 131072), (256, 1024))
    section.data.update(model=preset, chunk_size=chunk, library_chunk_size=resolve({})["eval"]["chunk_size"],
                        ratio_lengths={"short": short, "long": long})

    rows, context = options.pick((8, 2048), (4, 2048), (2, 64))
    train_ids = synthetic_ids(rows, context + 1, vocab, options.torch_device)
    for key, g in (("train_shape_forward", graphs), ("train_shape_forward_eager", False)):
        section.record(key, {"rows": rows, "context": context,
                             **guarded(lambda: loss_run(model, train_ids, context, options, iters, g))})
    del train_ids
    for length in lengths(options):
        ids = synthetic_ids(1, length + 1, vocab, options.torch_device, seed=length)
        n = iters if length <= 131072 else 1
        entry = {"length": length, "streamed": guarded(lambda: loss_run(model, ids, chunk, options, n, graphs))}
        if length in (short, long):
            entry["streamed_eager"] = guarded(lambda: loss_run(model, ids, chunk, options, n, False))
        if length == long:
            default_chunk = section.data["library_chunk_size"]
            entry["streamed_library_chunk"] = guarded(lambda: loss_run(model, ids, default_chunk, options, n, graphs))
        free_memory()
        # eager: a one-off shape, and a graph would keep its (tens of GB) memory pool reserved
        entry["full"] = guarded(lambda: loss_run(model, ids, length, options, 1, False))
        section.record(str(length), entry)
        del ids
        free_memory()
