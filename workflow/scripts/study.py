"""Expand a study config (its ``study`` section) into the jobs of the Snakemake DAG.

The Snakefile and the tests import this module; it has no Snakemake dependency. One study
produces, under ``study.runs_dir`` / ``study.results_dir`` / ``study.figures_dir``:

* models, each with an id that is also its path below the results folders:
  ``pt/<run>`` pretrained from scratch (``<run>`` = ``<model>_T<context>_<tokens>_w<warmup>_s<seed>``),
  ``pt/<run>@<milestone>`` an intermediate checkpoint of that run (Fig. 3),
  ``post/<base>+<intervention>`` post-trained from a pretrained run or an official checkpoint,
  ``hub/<name>`` an official checkpoint (Hugging Face hub or a local copy);
* results ``<results>/<kind>/<model id>.<ext>`` and ``<results>/<task>/<setting>/<model id>.json``;
* one notebook per figure/table, fed a *spec*: the list of models it shows, their metadata and
  the result paths it reads (present or not: a notebook marks what is missing).

Official checkpoints not present locally are dropped at DAG construction, with a message
(``skipped``) saying how to enable them; models derived from them are dropped too.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

# Evaluations: file extension and the `lengthgen` stage that writes them (its name is also the
# result kind recorded in the file, read back by lengthgen.plotting).
EVAL_KINDS = {
    "ppl": ("parquet", "eval-ppl"),
    "effrem": ("parquet", "eval-effrem"),
    "state_stats": ("parquet", "eval-state-stats"),
}
# Tasks: the stage (= result kind) writing <results>/<task>/<setting>/<model id>.json.
TASK_KINDS = {"passkey": "task-passkey", "babilong": "task-babilong"}

# Every figure and table of the paper: file stem, and what each one reads.
#   models: the result kinds read for every model the figure's patterns select
#   tasks:  the task whose settings x models it reads;  copying: Table 1;  presets: Table 2
#   (<results>/presets.json, written by workflow/scripts/presets.py)
FIGURES = {
    "fig01": {"stem": "fig01_ppl_effrem_state_passing", "models": ["ppl", "effrem"]},
    "fig02": {"stem": "fig02_ppl_by_context", "models": ["ppl"]},
    "fig03": {"stem": "fig03_ppl_by_tokens", "models": ["ppl"]},
    "fig04": {"stem": "fig04_state_std", "models": ["state_stats"]},
    "fig05": {"stem": "fig05_interventions", "models": ["ppl"]},
    "fig06": {"stem": "fig06_babilong", "tasks": "babilong"},
    "fig07": {"stem": "fig07_passkey_by_length", "tasks": "passkey"},
    "fig08": {"stem": "fig08_passkey_depth_length", "tasks": "passkey"},
    "fig09": {"stem": "fig09_state_std_heads", "models": ["state_stats"]},
    "fig10": {"stem": "fig10_rwkv6", "models": ["ppl"]},
    "fig11": {"stem": "fig11_warmup", "models": ["ppl"]},
    "fig12": {"stem": "fig12_noise_sigma", "models": ["ppl"]},
    "fig13": {"stem": "fig13_effrem_distances", "models": ["effrem"]},
    "table1": {"stem": "table1_copying", "copying": True},
    "table2": {"stem": "table2_presets", "presets": True},
}


class StudyError(ValueError):
    """A study config that cannot be expanded; the message names the key and the fix."""


def _num(x) -> str:
    """Compact, path-safe text of a number or budget ('20x', 0.1 -> '0.1', 1e-05 -> '1e-05')."""
    return str(x)


@dataclass
class Model:
    id: str
    kind: str  # pretrain | milestone | posttrain | official
    ref: str  # what `--model` / `--init` receives: a model folder or a hub name
    meta: dict = field(default_factory=dict)


@dataclass
class Job:
    """One stage invocation: output path(s), the stage, its arguments and config overrides."""

    rule: str
    output: str
    stage: str
    overrides: list
    model: str | None = None  # model id read (evaluations, tasks, post-training)
    gpus: int = 1
    outputs: list = field(default_factory=list)  # every output (training: final + milestones)
    folder: str | None = None  # run folder (training)

    def __post_init__(self):
        self.outputs = self.outputs or [self.output]


def hub_local_path(name: str, local_dir: str | None) -> str | None:
    """A local copy of hub checkpoint ``name`` (``org/model``), or None.

    Looks in ``local_dir`` (``<dir>/<model>`` or ``<dir>/<org>--<model>``, each a folder with a
    config.json) and then in the Hugging Face cache (a complete snapshot with config.json).
    """
    org_model = name.split("/")
    if local_dir:
        for cand in (Path(local_dir) / org_model[-1], Path(local_dir) / name.replace("/", "--")):
            if (cand / "config.json").exists():
                return str(cand)
    if Path(name, "config.json").exists():
        return name
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    snaps = cache / f"models--{name.replace('/', '--')}" / "snapshots"
    if snaps.is_dir():
        for snap in sorted(snaps.iterdir()):
            if (snap / "config.json").exists():
                return name  # the loader finds it in the cache by name
    return None


class Study:
    """The study grid of one resolved config (``lengthgen.config.resolve`` output)."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        s = cfg["study"]
        self.s = s
        self.name = s["name"]
        self.runs = s["runs_dir"].rstrip("/") + "/" + self.name
        self.results = s["results_dir"].rstrip("/")
        self.figures_dir = s["figures_dir"].rstrip("/")
        self.notebooks_dir = s["notebooks_dir"].rstrip("/")
        self.models: dict[str, Model] = {}
        self.jobs: dict[str, Job] = {}  # output path -> job
        self.skipped: list[str] = []
        self._expand_models()
        self._expand_evaluations()

    # ------------------------------------------------------------------ models
    def _model_def(self, name: str) -> dict:
        defs = self.s["models"]
        if name not in defs:
            raise StudyError(f"study model {name!r} is not defined; add it under study.models (defined: {', '.join(sorted(defs)) or 'none'})")
        return defs[name]

    def _pretrain_runs(self):
        pre = self.s["pretrain"]
        for grid in pre["grids"]:
            for model, ctx, tok, wu, seed in itertools.product(
                grid["models"], grid.get("contexts", pre["contexts"]), grid.get("tokens", pre["tokens"]),
                grid.get("warmups", pre["warmups"]), grid.get("seeds", pre["seeds"]),
            ):
                yield model, ctx, tok, wu, seed, grid.get("milestones", pre["milestones"])

    def _expand_models(self) -> None:
        pre = self.s["pretrain"]
        for model, ctx, tok, wu, seed, milestones in self._pretrain_runs():
            d = self._model_def(model)
            rid = f"{model}_T{ctx}_{_num(tok)}_w{_num(wu)}_s{seed}"
            folder = f"{self.runs}/pt/{rid}"
            meta = {"model": model, "arch": d["arch"], "preset": d.get("preset", "tiny"), "context": ctx, "tokens": tok,
                    "warmup": wu, "seed": seed, "intervention": None, "milestone": None, "official": False}
            mid = f"pt/{rid}"
            self.models[mid] = Model(mid, "pretrain", f"{folder}/final", meta)
            overrides = [f"model.arch={d['arch']}", f"model.preset={d.get('preset', 'tiny')}",
                         f"model.overrides={_flow(d.get('overrides', {}))}", f"train.context={ctx}",
                         f"train.tokens={tok}" if isinstance(tok, str) else f"train.tokens={int(tok)}",
                         f"train.warmup_frac={wu}", f"seed={seed}", "intervention.name=zero",
                         f"train.milestones={_flow(milestones)}", *pre["set"], *d.get("set", [])]
            outs = [f"{folder}/final/model.safetensors"] + [
                f"{folder}/milestones/{m}/model.safetensors" for m in milestones]
            self.jobs[outs[0]] = Job("pretrain", outs[0], "pretrain", overrides, gpus=pre["gpus"],
                                     outputs=outs, folder=folder)
            for m in milestones:
                msid = f"{mid}@{m}"
                self.models[msid] = Model(msid, "milestone", f"{folder}/milestones/{m}", {**meta, "milestone": m})

        off = self.s["official"]
        for name, spec in off["checkpoints"].items():
            local = hub_local_path(spec["hub"], off["local_dir"])
            if local is None:
                self.skipped.append(f"hub/{name} ({spec['hub']})")
                continue
            meta = {"model": name, "arch": spec["arch"], "preset": None, "context": spec["context"],
                    "tokens": spec.get("tokens"), "warmup": None, "seed": None, "intervention": None,
                    "milestone": None, "official": True, "hub": spec["hub"]}
            self.models[f"hub/{name}"] = Model(f"hub/{name}", "official", local, meta)

        post = self.s["posttrain"]
        for grid in post["grids"]:
            bases = self.select(grid["bases"], kinds=("pretrain", "official"))
            for base, iv in itertools.product(bases, grid["interventions"]):
                sigmas = grid.get("sigmas", [None]) if iv == "random_noise" else [None]
                for sigma in sigmas:
                    b = self.models[base]
                    slug = base.split("/", 1)[1] if b.kind == "pretrain" else "hub-" + base.split("/", 1)[1]
                    tag = iv if sigma is None else f"{iv}-s{_num(sigma)}"
                    mid = f"post/{slug}+{tag}"
                    folder = f"{self.runs}/post/{slug}+{tag}"
                    steps = grid.get("steps", post["steps"])
                    meta = {**b.meta, "intervention": iv, "sigma": sigma, "base": base, "steps": steps}
                    self.models[mid] = Model(mid, "posttrain", f"{folder}/final", meta)
                    ov = [f"intervention.name={iv}", f"train.steps={steps}", f"train.context={b.meta['context']}",
                          f"model.arch={b.meta['arch']}", *post["set"], *grid.get("set", [])]
                    if sigma is not None:
                        ov.append(f"intervention.sigma={sigma}")
                    out = f"{folder}/final/model.safetensors"
                    self.jobs[out] = Job("posttrain", out, "posttrain", ov, model=base, gpus=post["gpus"],
                                         folder=folder)
        if self.skipped:
            self._drop_skipped_dependents()

    def _drop_skipped_dependents(self) -> None:
        """Nothing left refers to a skipped official checkpoint (post-training needs its base)."""
        gone = {s.split(" ")[0] for s in self.skipped}
        for mid in [m for m, x in self.models.items() if x.meta.get("base") in gone]:
            del self.models[mid]

    def select(self, patterns, kinds=None) -> list[str]:
        """Model ids matching any glob pattern (``*`` crosses ``/``), in definition order.

        Milestone checkpoints (``pt/<run>@<milestone>``) match only patterns containing ``@``.
        """
        out = []
        for mid, m in self.models.items():
            if kinds is not None and m.kind not in kinds:
                continue
            if any(fnmatch.fnmatchcase(mid, p) and ("@" in p or m.kind != "milestone") for p in patterns):
                out.append(mid)
        return out

    # ------------------------------------------------------------------ evaluations
    def result_path(self, kind: str, mid: str) -> str:
        return f"{self.results}/{kind}/{mid}.{EVAL_KINDS[kind][0]}"

    def presets_path(self) -> str:
        """Table 2's data: the model presets and their measured parameter counts."""
        return f"{self.results}/presets.json"

    def task_path(self, task: str, setting: str, mid: str) -> str:
        return f"{self.results}/{task}/{setting}/{mid}.json"

    def _eval_job(self, kind: str, mid: str) -> str:
        path = self.result_path(kind, mid)
        if path not in self.jobs:
            ev = self.s["evaluate"]
            ov = [f"eval.train_context={self.models[mid].meta['context']}", *ev["set"], *ev[kind + "_set"]]
            self.jobs[path] = Job("eval_" + kind, path, EVAL_KINDS[kind][1], ov, model=mid, gpus=ev["gpus"])
        return path

    def _expand_evaluations(self) -> None:
        ev = self.s["evaluate"]
        for mid in self.select(ev["ppl"]):
            self._eval_job("ppl", mid)
        self.figure_specs = {}
        for fig, info in FIGURES.items():
            spec = []
            pats = self.s["figures"].get(fig, [])
            if "models" in info:
                for mid in self.select(pats):
                    spec.append({"id": mid, **self.models[mid].meta,
                                 "results": {k: self._eval_job(k, mid) for k in info["models"]}})
            elif "tasks" in info:
                task = info["tasks"]
                for setting in self.s["tasks"][task]:
                    for mid in self.select(setting["models"]):
                        path = self.task_path(task, setting["name"], mid)
                        if path not in self.jobs:
                            ov = [*self.s["tasks"]["set"], *setting.get("set", [])]
                            self.jobs[path] = Job("task_" + task, path, TASK_KINDS[task], ov, model=mid,
                                                  gpus=self.s["tasks"]["gpus"],
                                                  folder=f"{self.runs}/tasks/{task}/{setting['name']}/{mid}")
                        spec.append({"id": mid, "setting": setting["name"], **self.models[mid].meta,
                                     "results": {task: path}})
            elif "copying" in info:
                for setting in self.s["tasks"]["copying"]:
                    for seed in setting.get("seeds", [0]):
                        path = f"{self.results}/copying/{setting['name']}_s{seed}.json"
                        ov = [f"seed={seed}", *self.s["tasks"]["set"], *setting.get("set", [])]
                        self.jobs[path] = Job("task_copying", path, "task-copying", ov, gpus=self.s["tasks"]["gpus"],
                                              folder=f"{self.runs}/tasks/copying/{setting['name']}_s{seed}")
                        spec.append({"id": f"copying/{setting['name']}", "setting": setting["name"],
                                     "label": setting.get("label", setting["name"]), "seed": seed,
                                     "results": {"copying": path}})
            elif "presets" in info:
                path = self.presets_path()
                self.jobs[path] = Job("presets", path, "presets", [], gpus=0)
                spec.append({"id": "presets", "results": {"presets": path}})
            self.figure_specs[fig] = spec

    # ------------------------------------------------------------------ figures
    @staticmethod
    def figure_exts(fig: str) -> tuple[str, str]:
        if fig == "table1":  # the table, and its accuracy by position within the copy
            return ("md", "tex", "pdf", "png")
        return ("md", "tex") if fig.startswith("table") else ("pdf", "png")

    def figure_outputs(self, fig: str) -> list[str]:
        stem = FIGURES[fig]["stem"]
        return [f"{self.figures_dir}/{stem}.{e}" for e in self.figure_exts(fig)]

    def figure_inputs(self, fig: str) -> list[str]:
        return [p for entry in self.figure_specs[fig] for p in entry["results"].values()]

    def all_results(self) -> list[str]:
        return sorted(p for p, j in self.jobs.items() if j.rule not in ("pretrain", "posttrain"))

    def all_runs(self) -> list[str]:
        return sorted(p for p, j in self.jobs.items() if j.rule in ("pretrain", "posttrain"))


def _flow(obj) -> str:
    """YAML flow text of a value, for a ``--set key=value`` override."""
    import yaml

    return yaml.safe_dump(obj, default_flow_style=True, width=10**9).strip()


def cli_overrides(cfg: dict, prefix: str = "") -> list[str]:
    """Flatten ``snakemake --config a.b=1`` style overrides into ``--set`` strings."""
    out = []
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out += cli_overrides(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={_flow(v)}")
    return out


def load(cfg: dict) -> Study:
    from lengthgen.config import resolve

    return Study(resolve(copy.deepcopy(cfg)))


__all__ = ["Study", "StudyError", "FIGURES", "hub_local_path", "load", "cli_overrides"]
