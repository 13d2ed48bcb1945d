"""Passkey retrieval accuracy by prompt length and key depth (paper Sec. 5.2, Fig. 7).

Optionally finetunes the model first (``tasks.passkey.finetune.protocol``: ``standard`` or
``fitted_noise``, paper B.4) in ``--work`` (default: the result path + ``.finetune``).  Writes one
JSON result (kind ``task-passkey``): a row per prompt and the accuracy per (length, depth).
"""

from __future__ import annotations

import argparse

HELP = "passkey retrieval accuracy by length and depth (zero shot or after finetuning)"
NAME = "task-passkey"
KIND = "task-passkey"
PROTOCOL_INTERVENTION = {"standard": "zero", "fitted_noise": "fitted_noise"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--model", required=True, help="model folder or hub name")
    p.add_argument("--out", required=True, help="result file (.json)")
    p.add_argument("--work", default=None, help="finetuning run folder (default: OUT.finetune)")


def run(args) -> int:
    import functools

    from lengthgen.config import load_config
    from lengthgen.evaluate import runtime
    from lengthgen.provenance import provenance
    from lengthgen.results import write_result
    from lengthgen.tasks import passkey
    from lengthgen.tasks.finetune import finetune

    cfg = load_config(args.config, args.overrides)
    pk, ev = cfg["tasks"]["passkey"], cfg["eval"]
    tokenizer = runtime.tokenizer(cfg)
    device = runtime.resolve_device(ev["device"])
    ft = pk["finetune"]
    if ft["protocol"] != "none":
        from lengthgen.models import load_model

        model = load_model(args.model)
        finetune(model, functools.partial(passkey.finetune_example, tokenizer, ft["context"]), cfg,
                 args.work or f"{args.out}.finetune", intervention=PROTOCOL_INTERVENTION[ft["protocol"]],
                 steps=ft["steps"], context=ft["context"], batch_size=ft["batch_size"], lr=ft["lr"])
        model = runtime.prepare_model(model, device, ev["precision"])
    else:
        model = runtime.load_eval_model(args.model, device, ev["precision"])
    samples = passkey.generate_samples(tokenizer, pk["lengths"], pk["depths"], pk["samples"], cfg["seed"])
    with runtime.autocast(device, ev["precision"]):
        rows = passkey.evaluate(model, tokenizer, samples, pk["max_new_tokens"], ev["chunk_size"], device)
    cells = {}
    for r in rows:
        cells.setdefault((r["target_tokens"], r["depth"]), []).append(r["correct"])
    accuracy = [{"length": L, "depth": d, "accuracy": sum(c) / len(c), "n": len(c)} for (L, d), c in cells.items()]
    data = {"model": args.model, "protocol": ft["protocol"], "accuracy": accuracy, "samples": rows,
            "overall_accuracy": sum(r["correct"] for r in rows) / len(rows)}
    write_result(args.out, KIND, data, provenance(cfg, device=device))
    print(f"{NAME}: accuracy {data['overall_accuracy']:.3f} over {len(rows)} prompts -> {args.out}")
    return 0
