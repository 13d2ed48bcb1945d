# Evaluations of one model each: position-wise perplexity, Effective Remembrance, state statistics.


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


PPL = eval_rule("ppl")
EFFREM = eval_rule("effrem")
STATS = eval_rule("state_stats")


rule eval_ppl:
    """Position-wise loss, perplexity and the length-generalization verdict (paper Def. 3.1-3.2)."""
    input:
        PPL["input"],
    output:
        PPL["out"],
    params:
        config=CONFIGFILE,
        model=PPL["ref"],
        sets=PPL["sets"],
    resources:
        gpu=PPL["gpu"],
    log:
        PPL["log"],
    benchmark:
        PPL["bench"]
    conda:
        "../../" + ENV
    shell:
        "lengthgen eval-ppl --config {params.config} --model {params.model} --out {output} {params.sets} > {log} 2>&1"


rule eval_effrem:
    """Effective Remembrance (paper Def. 3.3) under total variation, Jensen-Shannon and cosine."""
    input:
        EFFREM["input"],
    output:
        EFFREM["out"],
    params:
        config=CONFIGFILE,
        model=EFFREM["ref"],
        sets=EFFREM["sets"],
    resources:
        gpu=EFFREM["gpu"],
    log:
        EFFREM["log"],
    benchmark:
        EFFREM["bench"]
    conda:
        "../../" + ENV
    shell:
        "lengthgen eval-effrem --config {params.config} --model {params.model} --out {output} {params.sets} > {log} 2>&1"


rule eval_state_stats:
    """Standard deviation and norm of the state over positions, whole and per layer/head (Figs. 4, 9)."""
    input:
        STATS["input"],
    output:
        STATS["out"],
    params:
        config=CONFIGFILE,
        model=STATS["ref"],
        sets=STATS["sets"],
    resources:
        gpu=STATS["gpu"],
    log:
        STATS["log"],
    benchmark:
        STATS["bench"]
    conda:
        "../../" + ENV
    shell:
        "lengthgen eval-state-stats --config {params.config} --model {params.model} --out {output} {params.sets} "
        "> {log} 2>&1"


rule presets:
    """Table 2's data: every model preset with its parameter count measured on the built model (CPU, seconds)."""
    output:
        STUDY.presets_path(),
    log:
        f"{LOGS}/presets.log",
    benchmark:
        f"{BENCH}/presets.tsv"
    conda:
        "../../" + ENV
    shell:
        "python workflow/scripts/presets.py --out {output} > {log} 2>&1"
