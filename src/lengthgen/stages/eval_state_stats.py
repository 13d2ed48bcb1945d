"""Standard deviation and norm of a model's state over positions (paper Sec. 3.5, Figs. 4 and 9).

Writes one Parquet result (kind ``eval-state-stats``): rows (``position``, ``layer``, ``head``,
``std``, ``norm``) averaged over the validation sequences; ``layer = -1`` is the whole state (all
layers), ``head = -1`` a whole layer.
"""

from __future__ import annotations

import argparse

HELP = "std and norm of the recurrent state over positions, whole and per layer/head"
NAME = "eval-state-stats"
KIND = "eval-state-stats"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_model_arguments

    add_model_arguments(p, ".parquet")


def run(args) -> int:
    from lengthgen.evaluate import StatsMean, runtime, state_statistics
    from lengthgen.provenance import provenance
    from lengthgen.results import write_table

    from ._common import eval_model, table_stage_config

    cfg = table_stage_config(args, NAME)
    ev, ss = cfg["eval"], cfg["eval"]["state_stats"]
    device, model = eval_model(args, cfg)
    acc = StatsMean()
    with runtime.autocast(device, ev["precision"]):
        # ValidationSequences yields length + 1 tokens: the state is measured on the first `length`.
        for batch in runtime.validation_batches(cfg, ss["length"], ss["num_sequences"], ev["batch_size"],
                                                model.vocab_size,
                                                keys="eval.state_stats.length / eval.state_stats.num_sequences"):
            acc.update(state_statistics(model, batch[:, :-1].to(device), ss["stride"], ss["components"],
                                        ss["per_head"]))
    data = {"model": args.model, "length": ss["length"], "stride": ss["stride"], "components": ss["components"],
            "num_sequences": acc.count}
    write_table(args.out, KIND, acc.frame(), provenance(cfg, device=device), data=data)
    print(f"{NAME}: {acc.count} sequences, stride {ss['stride']} -> {args.out}")
    return 0
