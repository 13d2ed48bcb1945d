"""environment.yml (conda, GPU clusters) carries the same packages and pins as pyproject.toml."""

from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip if not p.startswith("-")}
    assert listed == wanted, f"only in environment.yml: {sorted(listed - wanted)}; only in pyproject: {sorted(wanted - listed)}"


def test_gpu_packages_only_in_the_gpu_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for pkg in ("mamba-ssm", "causal-conv1d", "flash-linear-attention", "triton"):
        assert pkg not in base
        assert any(d.startswith(pkg) for d in project["optional-dependencies"]["gpu"])
