# Evaluations of one model each: position-wise perplexity, Effective Remembrance, state statistics.


PPL = eval_rule("ppl")
EFFREM = eval_rule("effrem")
STATS = eval_rule("state_stats")


rule eval_ppl:
    """Position-wise loss, perplexity and the length-generalization verdict (paper Def. 3.1-3.2)."""
    input:
        PPL["input"],
    output:
        PPL["out"],
    log:
        PPL["log"],
    benchmark:
        PPL["bench"]
    conda:
        CONDA_ENV
    resources:
        gpu=PPL["gpu"],
    params:
        config=CONFIGFILE,
        model=PPL["ref"],
        sets=PPL["sets"],
    shell:
        "lengthgen eval-ppl --config {params.config} --model {params.model} --out {output} {params.sets} > {log} 2>&1"


rule eval_effrem:
    """Effective Remembrance (paper Def. 3.3) under total variation, Jensen-Shannon and cosine."""
    input:
        EFFREM["input"],
    output:
        EFFREM["out"],
    log:
        EFFREM["log"],
    benchmark:
        EFFREM["bench"]
    conda:
        CONDA_ENV
    resources:
        gpu=EFFREM["gpu"],
    params:
        config=CONFIGFILE,
        model=EFFREM["ref"],
        sets=EFFREM["sets"],
    shell:
        "lengthgen eval-effrem --config {params.config} --model {params.model} --out {output} {params.sets} > {log} 2>&1"


rule eval_state_stats:
    """Standard deviation and norm of the state over positions, whole and per layer/head (Figs. 4, 9)."""
    input:
        STATS["input"],
    output:
        STATS["out"],
    log:
        STATS["log"],
    benchmark:
        STATS["bench"]
    conda:
        CONDA_ENV
    resources:
        gpu=STATS["gpu"],
    params:
        config=CONFIGFILE,
        model=STATS["ref"],
        sets=STATS["sets"],
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
        CONDA_ENV
    shell:
        "python workflow/scripts/presets.py --out {output} > {log} 2>&1"
