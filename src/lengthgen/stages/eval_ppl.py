"""Position-wise loss of a model on validation sequences, and its length-generalization verdict.

Writes one Parquet result (kind ``eval-ppl``): a row per position (``position``, mean ``loss``
in nats; position i is the loss on token i + 1) and, in the header's data, the log-spaced bucket
means with their bootstrap intervals over the sequences (``ci_lo``, ``ci_hi``), the perplexity, the
verdict of paper Def. 3.2 with intervals for p*, the far loss and their gap (docs/evaluation.md), and
each sequence's far-bucket loss (``sequence_loss_far``) with the id of the windows (``windows``), so
that two models evaluated on the same windows can be compared sequence by sequence.
"""

from __future__ import annotations

import argparse

HELP = "position-wise loss, perplexity and length-generalization verdict of a model"
NAME = "eval-ppl"
KIND = "eval-ppl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_model_arguments

    add_model_arguments(p, ".parquet", model_help="model folder (a run's final/ or a checkpoint) or hub name")


def run(args) -> int:
    import pandas as pd

    from lengthgen.evaluate import PositionwiseMean, bucket_means, length_generalization, log_buckets, perplexity
    from lengthgen.evaluate.verdict import bootstrap_buckets
    from lengthgen.evaluate import loss_graphs, positionwise_loss, runtime
    from lengthgen.provenance import provenance
    from lengthgen.results import write_table

    from ._common import eval_model, table_stage_config

    cfg = table_stage_config(args, NAME)
    ev = cfg["eval"]
    T, t_source = runtime.train_context(cfg, args.model)
    device, model = eval_model(args, cfg)
    acc = PositionwiseMean(ev["length"], keep_rows=True)
    seconds = 0.0
    graphs = loss_graphs(model, enabled=ev["cuda_graphs"])  # one capture per chunk shape for all batches
    with runtime.autocast(device, ev["precision"]):
        for batch in runtime.validation_batches(cfg, ev["length"], ev["num_sequences"], ev["batch_size"],
                                                model.vocab_size):
            start = runtime.synchronized_time(device)
            acc.update(positionwise_loss(model, batch.to(device), ev["chunk_size"], graphs=graphs))
            seconds += runtime.synchronized_time(device) - start
    curve, rows = acc.mean(), acc.rows()
    buckets = log_buckets(curve.numel())
    v = ev["verdict"]
    boot = {"ci_level": v["ci_level"], "num_bootstrap": v["num_bootstrap"], "seed": cfg["seed"]}
    verdict = length_generalization(None, T, smoothing=v["smoothing"], window=v["window"], tolerance=v["tolerance"],
                                    far_factor=v["far_factor"], far_margin=v["far_margin"], losses=rows, **boot)
    cis = bootstrap_buckets(rows, buckets, level=boot["ci_level"], num_bootstrap=boot["num_bootstrap"],
                            seed=boot["seed"]) or [(None, None)] * len(buckets)
    data = {
        "model": args.model, "train_context": T, "train_context_source": t_source,
        "num_sequences": acc.count, "length": ev["length"], "perplexity": perplexity(curve),
        "mean_loss": float(curve.mean()),
        "buckets": [{"lo": lo, "hi": hi, "loss": m, "ci_lo": c[0], "ci_hi": c[1]}
                    for (lo, hi), m, c in zip(buckets, bucket_means(curve, buckets), cis)],
        "verdict": verdict.to_dict(),
        # per sequence, the mean loss over the far bucket: evaluations of one `windows` id pair by sequence
        "windows": runtime.validation_windows_id(cfg, ev["length"], acc.count),
        "sequence_loss_far": [round(float(x), 6) for x in rows[:, slice(*verdict.far_bucket)].double().mean(1)],
        "eval_seconds": seconds, "cuda_graph_replays": graphs.replays, "tokens_per_s": acc.count * (ev["length"] + 1) / max(seconds, 1e-9),
    }
    frame = pd.DataFrame({"position": range(curve.numel()), "loss": curve.float().numpy()})
    write_table(args.out, KIND, frame, provenance(cfg, device=device), data=data)
    print(f"{NAME}: T={T} ppl={data['perplexity']:.3f} p*={verdict.p_star:.4f}@{verdict.t_star} "
          f"loss_far={verdict.loss_far:.4f} far_gap_ci={verdict.far_gap_ci} generalizes={verdict.generalizes} "
          f"({data['tokens_per_s']:,.0f} tokens/s) -> {args.out}")
    return 0
