"""Synthetic copying (paper Sec. 5.3, Table 1): train a model from scratch, then test longer strings.

The model is ``model.arch`` / ``model.preset`` (+ ``model.overrides``) with the copying vocabulary,
trained through the project's trainer on strings of ``tasks.copying.min_length..max_length`` with the
config's intervention (``intervention.name``: ``zero`` or ``state_passing`` for Table 1), in
``--work`` (default: the result path + ``.train``).  Writes one JSON result (kind ``task-copying``):
teacher-forced and greedy character/string accuracy (and character accuracy by position) at
``max_length`` and at ``eval_length``, with the model's ``parameters``.
"""

from __future__ import annotations

import argparse

HELP = "train a model on synthetic copying and measure accuracy on longer strings"
NAME = "task-copying"
KIND = "task-copying"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--out", required=True, help="result file (.json)")
    p.add_argument("--work", default=None, help="training run folder (default: OUT.train)")


def run(args) -> int:
    import functools

    from lengthgen.config import ConfigError, load_config
    from lengthgen.evaluate import runtime
    from lengthgen.models import build_model
    from lengthgen.provenance import provenance
    from lengthgen.results import write_result
    from lengthgen.tasks import copying
    from lengthgen.tasks.finetune import finetune

    cfg = load_config(args.config, args.overrides)
    cp, ev = cfg["tasks"]["copying"], cfg["eval"]
    if cp["min_length"] > cp["max_length"]:
        raise ConfigError(f"tasks.copying.min_length={cp['min_length']} exceeds tasks.copying.max_length="
                          f"{cp['max_length']}: lower min_length or raise max_length")
    overrides = {**cfg["model"]["overrides"], "vocab_size": copying.VOCAB_SIZE}
    model = build_model(cfg["model"]["arch"], preset=cfg["model"]["preset"], seed=cfg["seed"], **overrides)
    summary = finetune(model, functools.partial(copying.train_row, min_length=cp["min_length"],
                                                max_length=cp["max_length"]),
                       cfg, args.work or f"{args.out}.train", intervention=cfg["intervention"]["name"],
                       steps=cp["steps"], context=copying.row_context(cp["max_length"]),
                       batch_size=cp["batch_size"], lr=cp["lr"])
    device = runtime.resolve_device(ev["device"])
    model = runtime.prepare_model(model, device, ev["precision"])
    results = {}
    with runtime.autocast(device, ev["precision"]):
        for name, length in (("train_length", cp["max_length"]), ("eval_length", cp["eval_length"])):
            strings = copying.eval_strings(length, cp["eval_sequences"], cfg["seed"])
            results[name] = copying.evaluate(model, strings, ev["chunk_size"], cp["batch_size"])
    data = {"arch": cfg["model"]["arch"], "preset": cfg["model"]["preset"], "overrides": cfg["model"]["overrides"],
            "parameters": sum(p.numel() for p in model.parameters()), "intervention": cfg["intervention"]["name"],
            "train": {"steps": cp["steps"], "batch_size": cp["batch_size"], "lr": cp["lr"],
                      "sequences": cp["steps"] * cp["batch_size"], "min_length": cp["min_length"],
                      "max_length": cp["max_length"], "final_loss": summary["loss"]},
            **results}
    write_result(args.out, KIND, data, provenance(cfg, device=device))
    e = results["eval_length"]
    print(f"{NAME}: length {e['length']}: char acc {e['teacher_forced']['char_accuracy']:.3f} (teacher forced), "
          f"{e['greedy']['char_accuracy']:.3f} (greedy) -> {args.out}")
    return 0
