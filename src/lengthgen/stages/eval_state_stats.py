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
    from ._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--model", required=True, help="model folder or hub name")
    p.add_argument("--out", required=True, help="result file (.parquet)")


def run(args) -> int:
    from lengthgen.config import load_config
    from lengthgen.evaluate import StatsMean, runtime, state_statistics
    from lengthgen.provenance import provenance
    from lengthgen.results import write_table

    if not args.out.endswith(".parquet"):
        raise SystemExit(f"{NAME}: --out must name a .parquet file, got {args.out}")
    cfg = load_config(args.config, args.overrides)
    ev, ss = cfg["eval"], cfg["eval"]["state_stats"]
    runtime.check_tokenizer_matches(cfg, args.model)
    device = runtime.resolve_device(ev["device"])
    model = runtime.load_eval_model(args.model, device, ev["precision"])
    acc = StatsMean()
    with runtime.autocast(device, ev["precision"]):
        # ValidationSequences yields length + 1 tokens: the state is measured on the first `length`.
        for batch in runtime.validation_batches(cfg, ss["length"], ss["num_sequences"], ev["batch_size"],
                                                model.vocab_size):
            acc.update(state_statistics(model, batch[:, :-1].to(device), ss["stride"], ss["components"],
                                        ss["per_head"]))
    data = {"model": args.model, "length": ss["length"], "stride": ss["stride"], "components": ss["components"],
            "num_sequences": acc.count}
    write_table(args.out, KIND, acc.frame(), provenance(cfg, device=device), data=data)
    print(f"{NAME}: {acc.count} sequences, stride {ss['stride']} -> {args.out}")
    return 0
