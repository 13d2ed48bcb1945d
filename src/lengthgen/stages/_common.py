"""Arguments and helpers shared by the stages."""

from __future__ import annotations

import argparse


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=False, default=None,
                   help="YAML config (see config/ and the schema in config/schema.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.steps=30 (repeatable)")
