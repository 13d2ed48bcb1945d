"""Effective Remembrance (paper Def. 3.3) of a model on validation sequences of T tokens.

Writes one Parquet result (kind ``eval-effrem``): a row per (``distance``, ``cut_point``) with the
mean ``effrem`` over the sequences; the header's data records T and the number of sequences.
"""

from __future__ import annotations

import argparse

HELP = "Effective Remembrance EffRem_T(t) of a model (tv, js, cosine distances)"
NAME = "eval-effrem"
KIND = "eval-effrem"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_model_arguments

    add_model_arguments(p, ".parquet")


def run(args) -> int:
    import pandas as pd
    import torch

    from lengthgen.config import ConfigError
    from lengthgen.evaluate import DISTANCES, log_cut_points, runtime, suffix_probs
    from lengthgen.evaluate.remembrance import check_cut_points
    from lengthgen.provenance import provenance
    from lengthgen.results import write_table

    from ._common import eval_model, table_stage_config

    cfg = table_stage_config(args, NAME)
    ev, er = cfg["eval"], cfg["eval"]["effrem"]
    T = er["length"]
    cuts = er["cut_points"] if er["cut_points"] is not None else log_cut_points(T, er["num_cut_points"])
    try:  # before the model is loaded: cut points the sequences cannot have are a config error
        check_cut_points(cuts, T)
    except ValueError as e:
        raise ConfigError(f"eval.effrem.cut_points (eval.effrem.length={T}): {e}") from None
    device, model = eval_model(args, cfg)
    sums = {d: torch.zeros(len(cuts), dtype=torch.float64) for d in er["distances"]}
    count = 0
    with runtime.autocast(device, ev["precision"]):
        # ValidationSequences yields length + 1 tokens; T tokens make the context x_{0:T}.
        for batch in runtime.validation_batches(cfg, T - 1, er["num_sequences"], ev["batch_size"], model.vocab_size,
                                                keys="eval.effrem.length / eval.effrem.num_sequences"):
            q = suffix_probs(model, batch.to(device), [0, *cuts], er["chunk_size"], er["group_size"])
            for d in er["distances"]:
                sums[d] += DISTANCES[d](q[:1], q[1:]).sum(1).cpu()
            count += batch.shape[0]
    rows = [{"distance": d, "cut_point": int(t), "effrem": float(sums[d][i] / count)}
            for d in er["distances"] for i, t in enumerate(cuts)]
    data = {"model": args.model, "T": T, "num_sequences": count, "distances": list(er["distances"])}
    write_table(args.out, KIND, pd.DataFrame(rows), provenance(cfg, device=device), data=data)
    print(f"{NAME}: T={T}, {len(cuts)} cut points, {count} sequences -> {args.out}")
    return 0
