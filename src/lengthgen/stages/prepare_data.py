"""Tokenize the config's corpus into memory-mapped token shards with a manifest (paper B.1).

Writes <data.root>/<corpus id>-<tokenizer id>/ (shards, manifest.json) and prints the manifest's
path; does nothing when that folder is already up to date.
"""

from __future__ import annotations

from ._common import add_config_arguments

NAME = "prepare-data"
HELP = "tokenize the corpus into token shards (train/val split by document)"


def add_arguments(p) -> None:
    add_config_arguments(p)


def run(args) -> int:
    from ..config import load_config
    from ..data import prepare
    from ..data.shards import MANIFEST

    cfg = load_config(args.config, args.overrides)
    folder = prepare(cfg, log=print)  # corpus, tokenizer and shard errors are DataErrors (cli: exit 2)
    print(folder / MANIFEST)
    return 0
