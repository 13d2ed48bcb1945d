"""Arguments and setup shared by the stages.

The measurement stages all read ``--config``/``--set``, a ``--model`` and an ``--out`` result file;
the evaluation stages then load the model for evaluation, and the task stages may finetune it first
(in ``--work``). Imports of the library happen inside the functions so ``lengthgen --help`` stays fast.

Bad input is a :class:`lengthgen.errors.UserError` (``lengthgen.cli.main`` prints it on one line and
exits 2), raised before a stage writes anything: the config and ``--out`` first, then the model.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=False, default=None,
                   help="YAML config (see config/ and the schema in config/schema.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.steps=30 (repeatable)")


def add_model_arguments(p: argparse.ArgumentParser, out: str, model_help: str = "model folder or hub name",
                        work: bool = False) -> None:
    """``--config``/``--set``, ``--model``, ``--out`` (a result file of type ``out``, e.g. ``.json``)
    and, with ``work``, ``--work`` (the finetuning run folder, default OUT.finetune)."""
    add_config_arguments(p)
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--out", required=True, help=f"result file ({out})")
    if work:
        p.add_argument("--work", default=None, help="finetuning run folder (default: OUT.finetune)")


def table_stage_config(args, name: str) -> dict:
    """The resolved config of a stage that writes a Parquet table to ``--out`` (checked first)."""
    from lengthgen.config import load_config
    from lengthgen.errors import UserError

    if not args.out.endswith(".parquet"):
        raise UserError(f"--out must name a .parquet file, got {args.out}: pass e.g. --out {args.out}.parquet")
    return load_config(args.config, args.overrides)


def eval_model(args, cfg: dict) -> tuple[Any, Any]:
    """(device, model) for an evaluation of ``--model`` (a model folder, a run folder or a hub name),
    after checking that its run (if any) used the config's tokenizer; device and precision are
    ``eval.device`` / ``eval.precision``."""
    from lengthgen.evaluate import runtime

    ev = cfg["eval"]
    source = runtime.model_source(args.model)
    runtime.check_tokenizer_matches(cfg, source)
    device = runtime.resolve_device(ev["device"])
    return device, runtime.load_eval_model(source, device, ev["precision"])


def task_model(args, cfg: dict, device, finetune_cfg: dict, intervention: str,
               row_maker: Callable[[], Callable]) -> Any:
    """The model a task stage evaluates, ready on ``device``: ``--model`` as it is when
    ``finetune_cfg["protocol"]`` is ``none``, else first finetuned (in ``--work``, default
    OUT.finetune) with ``intervention`` on rows from ``row_maker()`` (called only then, since
    building the rows may read a corpus). The model and one row are made before ``--work`` is."""
    import random

    from lengthgen.evaluate import runtime

    precision = cfg["eval"]["precision"]
    source = runtime.model_source(args.model)
    if finetune_cfg["protocol"] == "none":
        return runtime.load_eval_model(source, device, precision)
    from lengthgen.models import load_model
    from lengthgen.tasks.finetune import finetune

    ft = finetune_cfg
    model = load_model(source)
    make_row = row_maker()
    make_row(random.Random(0))  # a row that cannot be made fails here, before --work exists
    finetune(model, make_row, cfg, args.work or f"{args.out}.finetune", intervention=intervention,
             steps=ft["steps"], context=ft["context"], batch_size=ft["batch_size"], lr=ft["lr"])
    return runtime.prepare_model(model, device, precision)
