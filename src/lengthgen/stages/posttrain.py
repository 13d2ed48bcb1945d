"""Post-train a model with an initial-state intervention (paper section 4) into a new run folder.

``--init`` is a pretrain run folder (its final/ model), any model folder, or an official
checkpoint's hub name (``state-spaces/mamba2-130m``); the config's ``intervention`` section picks
the intervention and ``train`` the (short) schedule; ``train.lr`` defaults to the preset's.
The run folder, resume and DDP behave as for ``lengthgen pretrain``.
"""

from __future__ import annotations

from ._common import add_config_arguments

NAME = "posttrain"
HELP = "continue training a model with an initial-state intervention into a new run folder"


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--init", required=True, metavar="MODEL",
                   help="pretrain run folder (uses its final/), model folder, or hub name")
    p.add_argument("--out", required=True, metavar="RUN_DIR2", help="run folder (created, or continued)")


def run(args) -> int:
    from ..config import load_config
    from ..models import resolve_model_path
    from .pretrain import train_stage

    cfg = load_config(args.config, args.overrides)
    cfg["model"]["init_from"] = resolve_model_path(args.init)
    return train_stage(cfg, args.out, NAME)
