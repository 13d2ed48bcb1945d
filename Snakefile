"""The lengthgen study as a DAG: data -> pretraining -> post-training -> evaluations -> results/ -> notebooks -> figures/.

    snakemake --cores all figures                      # render every figure/table from the committed results
    snakemake --cores all all                          # recompute what the config describes (GPU)
    snakemake --cores all results                      # the same without rendering (then `figures` anywhere)
    snakemake all --profile profiles/slurm --configfile config/paper.yaml

The grid lives in the config's `study` section (schema: src/lengthgen/schema/config.schema.yaml);
workflow/scripts/study.py expands it; workflow/rules/common.smk holds the rules' helpers. Rules call
only the `lengthgen` command line (plus papermill for the notebooks and workflow/scripts/presets.py
for Table 2's parameter counts). See docs/workflow.md.
"""

import os
import shlex
import shutil
import subprocess
import sys

from pathlib import Path

import yaml
from snakemake.utils import min_version, validate

min_version("8.10")

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
import study as studylib  # noqa: E402
from lengthgen.config import ConfigError, resolve, run_config, schema_path  # noqa: E402


include: "workflow/rules/common.smk"


if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


validate(config, str(schema_path()))

if len(workflow.configfiles) != 1:
    raise ConfigError(
        "pass exactly one --configfile (config/config.yaml, config/paper.yaml, config/smoke.yaml or your own); "
        f"got {[str(p) for p in workflow.configfiles]}"
    )


if "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", detect_gpus())
CONFIGFILE = os.path.relpath(workflow.configfiles[0])
CLI_SETS = studylib.cli_overrides(dict(workflow.config_settings.config or {}))
STUDY = studylib.load(config)
CFG = STUDY.cfg
RUNS, RESULTS = STUDY.runs, STUDY.results
FIGDIR, NBDIR = STUDY.figures_dir, STUDY.notebooks_dir
LOGS, BENCH = f"logs/{STUDY.name}", f"benchmarks/{STUDY.name}"
DATA = f"{RUNS}/prepared-data.txt"  # names the manifest of the prepared corpus (workflow/rules/data.smk)

if STUDY.skipped and workflow.is_main_process:
    print(
        f"lengthgen: skipping {len(STUDY.skipped)} official-checkpoint branch(es), not available locally: "
        + ", ".join(STUDY.skipped)
        + ". To enable them, download each checkpoint on a networked machine "
        "(`huggingface-cli download <hub name>`, into the HF cache or into a folder named by "
        "study.official.local_dir) and rerun.",
        file=sys.stderr,
    )

# Every job's overrides must resolve against the schema now, not hours into the run.
for _job in STUDY.jobs.values():
    try:
        resolve(run_config(CFG), CLI_SETS + _job.overrides)
    except ConfigError as e:
        raise ConfigError(f"study job {_job.output}: {e}") from None


FIGURE_FILES = [
    f"{d}/{studylib.FIGURES[fig]['stem']}.{ext}"
    for fig in studylib.FIGURES
    for d, ext in [(NBDIR, "ipynb")] + [(FIGDIR, e) for e in STUDY.figure_exts(fig)]
]


wildcard_constraints:
    rid="[^/]+",
    tag="[^/]+",
    mid="(pt|post|hub)/[^/]+",
    setting="[^/]+",
    name="[^/]+",
    stem="(fig|table)[0-9]+_[a-z0-9_]+",


localrules:
    all,
    results,
    figures,


rule all:
    """Everything the config describes: runs, results, notebooks and figures."""
    input:
        STUDY.all_runs(),
        STUDY.all_results(),
        f"{RESULTS}/replication.json",
        FIGURE_FILES,


rule results:
    """Every run and result plus results/replication.json, without rendering (a GPU node needs no papermill)."""
    input:
        STUDY.all_runs(),
        STUDY.all_results(),
        f"{RESULTS}/replication.json",


rule figures:
    """Every figure and table, rendered from the results present (committed); never trains or evaluates."""
    input:
        FIGURE_FILES,


include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/posttrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/replication.smk"
