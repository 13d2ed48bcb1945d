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
    from ._common import add_model_arguments

    add_model_arguments(p, ".json", work=True)


def run(args) -> int:
    import functools

    from lengthgen.config import ConfigError, load_config
    from lengthgen.evaluate import runtime
    from lengthgen.provenance import provenance
    from lengthgen.results import write_result
    from lengthgen.tasks import passkey

    from ._common import task_model

    cfg = load_config(args.config, args.overrides)
    pk, ev = cfg["tasks"]["passkey"], cfg["eval"]
    tokenizer = runtime.tokenizer(cfg)
    try:  # before any finetuning: a length too short for the prompt is a config error
        samples = passkey.generate_samples(tokenizer, pk["lengths"], pk["depths"], pk["samples"], cfg["seed"])
    except passkey.PromptTooShort as e:
        raise ConfigError(
            f"tasks.passkey.lengths: {e.target_tokens} tokens cannot hold a passkey prompt with the "
            f"{cfg['data']['tokenizer']['kind']} tokenizer, which needs at least {e.minimum}; "
            f"set every length to {e.minimum} or more"
        ) from None
    device = runtime.resolve_device(ev["device"])
    ft = pk["finetune"]
    if ft["protocol"] != "none":
        import random

        try:  # one finetuning row now, so a context too short for the prompt fails before training
            passkey.finetune_example(tokenizer, ft["context"], random.Random(0))
        except passkey.PromptTooShort as e:
            raise ConfigError(
                f"tasks.passkey.finetune.context={ft['context']} cannot hold a passkey prompt and its answer "
                f"with the {cfg['data']['tokenizer']['kind']} tokenizer (the prompt alone needs {e.minimum} "
                f"tokens); raise tasks.passkey.finetune.context"
            ) from None
    model = task_model(args, cfg, device, ft, PROTOCOL_INTERVENTION.get(ft["protocol"]),
                       lambda: functools.partial(passkey.finetune_example, tokenizer, ft["context"]))
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
