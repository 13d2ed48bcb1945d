# Long-context tasks: passkey retrieval and BABILong per (setting, model); synthetic copying per (setting, seed).
# Training done by a task (finetuning first, or copying's from-scratch model) keeps its run folder under
# <runs>/<study>/tasks/ (--work), not next to the result.


PASSKEY = f"{RESULTS}/passkey/{{setting}}/{{mid}}.json"
BABILONG = f"{RESULTS}/babilong/{{setting}}/{{mid}}.json"
COPYING = f"{RESULTS}/copying/{{name}}.json"


rule task_passkey:
    """Passkey retrieval accuracy by context length and depth, under one setting (zero-shot, finetuned, ...)."""
    input:
        lambda wc: [DATA] + model_input(wc.mid),
    output:
        PASSKEY,
    log:
        f"{LOGS}/passkey/{{setting}}/{{mid}}.log",
    benchmark:
        f"{BENCH}/passkey/{{setting}}/{{mid}}.tsv"
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: task_job(PASSKEY)(wc).gpus,
    params:
        config=CONFIGFILE,
        model=lambda wc: STUDY.models[wc.mid].ref,
        work=lambda wc: task_job(PASSKEY)(wc).folder,
        sets=lambda wc: sets(task_job(PASSKEY)(wc).overrides),
    shell:
        "lengthgen task-passkey --config {params.config} --model {params.model} --out {output} --work {params.work} "
        "{params.sets} > {log} 2>&1"


rule task_babilong:
    """BABILong accuracy by context length, under one setting (few-shot, finetuned, ...)."""
    input:
        lambda wc: [DATA] + model_input(wc.mid),
    output:
        BABILONG,
    log:
        f"{LOGS}/babilong/{{setting}}/{{mid}}.log",
    benchmark:
        f"{BENCH}/babilong/{{setting}}/{{mid}}.tsv"
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: task_job(BABILONG)(wc).gpus,
    params:
        config=CONFIGFILE,
        model=lambda wc: STUDY.models[wc.mid].ref,
        work=lambda wc: task_job(BABILONG)(wc).folder,
        sets=lambda wc: sets(task_job(BABILONG)(wc).overrides),
    shell:
        "lengthgen task-babilong --config {params.config} --model {params.model} --out {output} --work {params.work} "
        "{params.sets} > {log} 2>&1"


rule task_copying:
    """Synthetic copying (Table 1): train from scratch on short strings, measure accuracy on long ones."""
    output:
        COPYING,
    log:
        f"{LOGS}/copying/{{name}}.log",
    benchmark:
        f"{BENCH}/copying/{{name}}.tsv"
    conda:
        CONDA_ENV
    resources:
        gpu=lambda wc: task_job(COPYING)(wc).gpus,
    params:
        config=CONFIGFILE,
        work=lambda wc: task_job(COPYING)(wc).folder,
        sets=lambda wc: sets(task_job(COPYING)(wc).overrides),
    shell:
        "lengthgen task-copying --config {params.config} --out {output} --work {params.work} {params.sets} > {log} 2>&1"
