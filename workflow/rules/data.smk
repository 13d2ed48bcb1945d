# Tokenized corpus: `lengthgen prepare-data` writes <data.root>/<corpus>-<tokenizer>/ (manifest + shards).


rule prepare_data:
    """Tokenize the config's corpus into memory-mapped shards (a no-op when up to date)."""
    output:
        directory(DATA_ROOT),
    params:
        config=CONFIGFILE,
        sets=sets([]),
        data=studylib._flow(CFG["data"]),
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCH}/prepare_data.tsv"
    conda:
        "../../" + ENV
    shell:
        "lengthgen prepare-data --config {params.config} {params.sets} > {log} 2>&1"
