# results/replication.json: the claims computed from the raw result files (never typed by hand).
# Part of target `all` only, after every evaluation and task; `figures` never plans it.


rule replication:
    """The replication's claims (docs/replication.md) from every result of the study."""
    input:
        STUDY.all_results(),
    output:
        f"{RESULTS}/replication.json",
    log:
        f"{LOGS}/replication.log",
    benchmark:
        f"{BENCH}/replication.tsv"
    conda:
        CONDA_ENV
    params:
        config=CONFIGFILE,
        results=lambda wc, output: os.path.dirname(output[0]),
        sets=sets([]),
    shell:
        "lengthgen replication --config {params.config} --results {params.results} --out {output} {params.sets} > {log} 2>&1"
