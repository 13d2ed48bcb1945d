"""BABILong qa1-qa5 accuracy by context length (paper Sec. 5.1, Fig. 6).

Samples come from the public datasets (``tasks.babilong.source=hf``: ``tasks.babilong.dataset``, a hub
name or a local folder) or from the offline generator with filler from ``data.corpus``
(``source=generated``).  Few-shot (``few_shot``: in-context examples in the prompt) and finetuned
(``finetune.protocol=standard``: the model is first finetuned on generated tasks of
``finetune.context`` tokens, in ``--work``, default OUT.finetune) protocols.  Writes one JSON result
(kind ``task-babilong``): accuracy per (task, length) and every sample's output.
"""

from __future__ import annotations

import argparse

HELP = "BABILong qa1-qa5 accuracy by length (few-shot or finetuned)"
NAME = "task-babilong"
KIND = "task-babilong"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_model_arguments

    add_model_arguments(p, ".json", work=True)


def run(args) -> int:
    import random

    from lengthgen.config import load_config
    from lengthgen.data import build_corpus
    from lengthgen.evaluate import runtime
    from lengthgen.provenance import provenance
    from lengthgen.results import write_result
    from lengthgen.tasks import babilong

    from ._common import task_model

    cfg = load_config(args.config, args.overrides)
    bl, ev = cfg["tasks"]["babilong"], cfg["eval"]
    tokenizer = runtime.tokenizer(cfg)
    device = runtime.resolve_device(ev["device"])
    ft = bl["finetune"]

    def row_maker():
        pool = babilong.filler_pool(iter(build_corpus(cfg["data"]["corpus"])), tokenizer, 8 * ft["context"])
        tasks = list(bl["tasks"])

        def make_row(rng: random.Random):
            task = rng.choice(tasks)
            return babilong.finetune_example(tokenizer, task, ft["context"], babilong.cycle_from(pool, rng),
                                             bl["few_shot"], rng)

        return make_row

    model = task_model(args, cfg, device, ft, "zero", row_maker)
    filler = babilong.sentences(iter(build_corpus(cfg["data"]["corpus"]))) if bl["source"] == "generated" else None
    accuracy, rows = [], []
    with runtime.autocast(device, ev["precision"]):
        for task in bl["tasks"]:
            for length in bl["lengths"]:
                if filler is None:
                    samples = babilong.load_hf(bl["dataset"], length, task, bl["samples"])
                else:
                    samples = babilong.generate_samples(task, length, bl["samples"], filler, tokenizer, cfg["seed"])
                got = babilong.evaluate(model, tokenizer, task, samples, bl["few_shot"], bl["max_new_tokens"],
                                        ev["chunk_size"], device)
                accuracy.append({"task": task, "length": length, "n": len(got),
                                 "accuracy": sum(r["correct"] for r in got) / len(got)})
                rows += [{"task": task, "length": length, **r} for r in got]
    data = {"model": args.model, "source": bl["source"], "few_shot": bl["few_shot"], "protocol": ft["protocol"],
            "accuracy": accuracy, "samples": rows}
    write_result(args.out, KIND, data, provenance(cfg, device=device))
    mean = sum(a["accuracy"] for a in accuracy) / len(accuracy)
    print(f"{NAME}: mean accuracy {mean:.3f} over {len(accuracy)} (task, length) cells -> {args.out}")
    return 0
