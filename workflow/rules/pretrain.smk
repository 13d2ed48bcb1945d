# Pretraining from scratch: one run per point of the study's pretraining grids.
# A run folder keeps its checkpoints: rerunning an interrupted job resumes it exactly.


rule pretrain:
    """Train a model from scratch (paper B.1 recipe) with the run's context, budget, warm-up and seed."""
    input:
        DATA,
    output:
        f"{RUNS}/pt/{{rid}}/final/model.safetensors",  # milestones/<m>/ too, written before it (common.smk: model_input)
    log:
        f"{LOGS}/pretrain/{{rid}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{rid}}.tsv"
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: pretrain_job(wc).gpus,
    params:
        config=CONFIGFILE,
        folder=f"{RUNS}/pt/{{rid}}",
        sets=lambda wc: sets(pretrain_job(wc).overrides),
        launcher=launcher,
    shell:
        "{params.launcher} pretrain --config {params.config} --out {params.folder} {params.sets} > {log} 2>&1"
