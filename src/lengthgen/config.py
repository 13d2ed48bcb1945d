"""One config schema for every stage and for the Snakemake workflow.

``load_config(path, overrides)`` reads YAML, applies dotted ``key=value`` overrides, fills the
schema's defaults and validates; an unknown or mistyped key is an error naming it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from lengthgen.errors import UserError

SCHEMA_RESOURCE = "schema/config.schema.yaml"


class ConfigError(UserError, ValueError):
    """A config that does not match the schema (or asks for the impossible); the message names the
    key or file and the fix."""


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path``; a syntax error is a :class:`ConfigError` naming the file and line."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path}{_yaml_where(e)} is not valid YAML ({_yaml_problem(e)}): "
                          "fix the file (see config/ for examples)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file: pass a YAML config") from None


def _yaml_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}," if mark is not None else ""


def _yaml_problem(e: yaml.YAMLError) -> str:
    parts = [getattr(e, "context", None), getattr(e, "problem", None)]
    return " ".join(p for p in parts if p) or type(e).__name__


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    """The parsed schema, read once per process (resolving a study's jobs validates hundreds of configs)."""
    return yaml.safe_load(resources.files("lengthgen").joinpath(SCHEMA_RESOURCE).read_text())


def schema() -> dict:
    return copy.deepcopy(_schema())


@functools.lru_cache(maxsize=1)
def _validator():
    """JSON Schema draft 2020-12, the draft Snakemake's ``validate`` also uses."""
    import jsonschema

    return jsonschema.Draft202012Validator(_schema())


def schema_path() -> Path:
    """Filesystem path of the schema (Snakemake's ``validate`` takes a path)."""
    return Path(str(resources.files("lengthgen").joinpath(SCHEMA_RESOURCE)))


def _fill_defaults(node: dict, value: Any) -> Any:
    if node.get("type") == "object" or "properties" in node:
        value = {} if value is None else value
        if isinstance(value, dict):
            for key, sub in node.get("properties", {}).items():
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    value[key] = _fill_defaults(sub, value[key])
    return value


def _parse_scalar(text: str) -> Any:
    """YAML scalar, except that plain exponent floats such as ``1e-3`` (strings in YAML 1.1) are floats."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"the value {text!r} is not valid YAML ({_yaml_problem(e)}): quote it or fix "
                          "its brackets") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.steps=30)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = _parse_scalar(raw)
        except ConfigError as e:
            raise ConfigError(f"override {item!r}: {e}") from None
    return cfg


def _format_error(err) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"unknown config key(s) {', '.join(repr(f'{where}.{e}' if where != '<top level>' else e) for e in extra)}; valid keys here: {', '.join(allowed)}"
    return f"config key {where!r}: {err.message}"


def validate(cfg: Mapping) -> None:
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        if len(errors) == 1:
            raise ConfigError(f"invalid config: {_format_error(errors[0])}")
        raise ConfigError(f"invalid config, {len(errors)} problems: "
                          + " ".join(f"({i}) {_format_error(e)}" for i, e in enumerate(errors, 1)))


def resolve(cfg: Mapping | None = None, overrides: Iterable[str] = ()) -> dict:
    """Overrides, then validation, then defaults: the fully resolved config."""
    cfg = copy.deepcopy(dict(cfg or {}))
    apply_overrides(cfg, overrides)
    validate(cfg)
    cfg = _fill_defaults(_schema(), cfg)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> dict:
    cfg: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist (see config/ for examples)")
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder: pass a YAML file (see config/ for examples)")
        cfg = read_yaml(path) or {}
        if not isinstance(cfg, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return resolve(cfg, overrides)


def run_config(cfg: Mapping) -> dict:
    """The part of a config that defines a run (the study grid is dropped)."""
    return {k: copy.deepcopy(v) for k, v in cfg.items() if k != "study"}


def config_hash(cfg: Mapping) -> str:
    """Stable short hash of the run-defining part of a resolved config."""
    blob = json.dumps(run_config(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
