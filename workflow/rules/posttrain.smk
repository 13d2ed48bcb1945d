# Post-training with an initial-state intervention, from a pretrained run or an official checkpoint.


rule posttrain:
    """Continue training a model with an intervention (state passing, noise, TBTT, ...)."""
    input:
        DATA,
        lambda wc: model_input(posttrain_job(wc).model),
    output:
        f"{RUNS}/post/{{tag}}/final/model.safetensors",
    log:
        f"{LOGS}/posttrain/{{tag}}.log",
    benchmark:
        f"{BENCH}/posttrain/{{tag}}.tsv"
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: posttrain_job(wc).gpus,
    params:
        config=CONFIGFILE,
        init=lambda wc: STUDY.models[posttrain_job(wc).model].ref,
        folder=f"{RUNS}/post/{{tag}}",
        sets=lambda wc: sets(posttrain_job(wc).overrides),
        launcher=launcher,
    shell:
        "{params.launcher} posttrain --config {params.config} --init {params.init} --out {params.folder} "
        "{params.sets} > {log} 2>&1"
