# Helpers shared by the rules (Snakemake's linter wants functions apart from rules).
# They read the globals the Snakefile defines (STUDY, CFG, CLI_SETS, ...) when called.

CONDA_ENV = "../../environment.yml"  # conda: paths are relative to the including file, workflow/rules/


def detect_gpus():
    """GPUs visible to this machine: CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() not in ("", "-1")])
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True
        ).stdout
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def sets(overrides):
    """`--set` arguments, shell-quoted."""
    return " ".join(f"--set {shlex.quote(o)}" for o in CLI_SETS + list(overrides))


def job_of(path):
    job = STUDY.jobs.get(path)
    if job is None:
        raise ValueError(
            f"{path} is not part of study {STUDY.name!r} (see {CONFIGFILE})"
        )
    return job


def model_input(mid):
    """Snakemake input for a model id: its weights file, or nothing for a hub checkpoint. A
    milestone depends on its run's final model (the run writes its milestones before it): the
    milestones are not declared outputs, since their list is the grid's, not the rule's."""
    m = STUDY.models[mid]
    if m.kind == "official":
        return []
    if m.kind == "milestone":
        return [f"{m.ref.rsplit('/milestones/', 1)[0]}/final/model.safetensors"]
    return [f"{m.ref}/model.safetensors"]


def pretrain_job(wildcards):
    return job_of(f"{RUNS}/pt/{wildcards.rid}/final/model.safetensors")


def launcher(wildcards, resources):
    """`lengthgen`, or torchrun over the job's GPUs when it has more than one."""
    if resources.gpu > 1:
        return (
            f"torchrun --standalone --nproc_per_node {resources.gpu} -m lengthgen.cli"
        )
    return "lengthgen"


def posttrain_job(wildcards):
    return job_of(f"{RUNS}/post/{wildcards.tag}/final/model.safetensors")


def eval_rule(kind):
    """The arguments shared by the evaluation rules of one result kind."""
    ext, stage = studylib.EVAL_KINDS[kind]
    out = f"{RESULTS}/{kind}/{{mid}}.{ext}"
    job = lambda wc: job_of(out.format(mid=wc.mid))
    return dict(
        out=out,
        stage=stage,
        input=lambda wc: [DATA] + model_input(wc.mid),
        ref=lambda wc: STUDY.models[wc.mid].ref,
        sets=lambda wc: sets(job(wc).overrides),
        gpu=lambda wc: job(wc).gpus,
        log=f"{LOGS}/{kind}/{{mid}}.log",
        bench=f"{BENCH}/{kind}/{{mid}}.tsv",
    )


def task_job(path):
    return lambda wc: job_of(path.format(**wc))


def computing():
    """True when the requested targets ask for recomputation (`all`, or no target given)."""
    targets = set(workflow.dag_settings.targets or ())
    return (
        not targets
        and not workflow.dag_settings.target_jobs
        or bool(targets & {"all", "results"})
    )


def figure_results(wildcards):
    paths = STUDY.figure_inputs(STEMS[wildcards.stem])
    if computing():
        return [ancient(p) if os.path.exists(p) else p for p in paths]
    return [ancient(p) for p in paths if os.path.exists(p)]


def notebook_params(wildcards):
    """Papermill parameters (YAML): what the figure shows, where its results are, the study's scale."""
    fig = STEMS[wildcards.stem]
    params = {
        "spec": STUDY.figure_specs[fig],
        "study": STUDY.name,
        "scale": CFG["study"]["scale"],
        "outputs": STUDY.figure_outputs(fig),
    }
    return shlex.quote(
        yaml.safe_dump(params, default_flow_style=True, width=10**9, sort_keys=True)
    )
