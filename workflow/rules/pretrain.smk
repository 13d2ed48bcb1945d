# Pretraining from scratch: one run per point of the study's pretraining grids.
# A run folder keeps its checkpoints: rerunning an interrupted job resumes it exactly.


def pretrain_job(wildcards):
    return job_of(f"{RUNS}/pt/{wildcards.rid}/final/model.safetensors")


def launcher(wildcards, resources):
    """`lengthgen`, or torchrun over the job's GPUs when it has more than one."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node {resources.gpu} -m lengthgen.cli"
    return "lengthgen"


rule pretrain:
    """Train a model from scratch (paper B.1 recipe) with the run's context, budget, warm-up and seed."""
    input:
        DATA,
    output:
        f"{RUNS}/pt/{{rid}}/final/model.safetensors",
        [f"{RUNS}/pt/{{rid}}/milestones/{m}/model.safetensors" for m in CFG["study"]["pretrain"]["milestones"]],
    params:
        config=CONFIGFILE,
        folder=f"{RUNS}/pt/{{rid}}",
        sets=lambda wc: sets(pretrain_job(wc).overrides),
        launcher=launcher,
    resources:
        gpu=lambda wc: pretrain_job(wc).gpus,
    log:
        f"{LOGS}/pretrain/{{rid}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{rid}}.tsv"
    conda:
        "../../" + ENV
    shell:
        "{params.launcher} pretrain --config {params.config} --out {params.folder} {params.sets} > {log} 2>&1"
