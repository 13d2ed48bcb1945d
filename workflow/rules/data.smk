# Tokenized corpus: `lengthgen prepare-data` writes <data.root>/<corpus id>-<tokenizer id>/ (manifest +
# shards) and prints the manifest's path. That folder's name depends on the corpus and tokenizer
# (resolved by the stage), and <data.root> may hold other corpora, so the rule's output is a small
# file under the study's runs naming the manifest; Snakemake never deletes the shards.


rule prepare_data:
    """Tokenize the config's corpus into memory-mapped shards (a no-op when up to date)."""
    output:
        DATA,
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCH}/prepare_data.tsv"
    conda:
        CONDA_ENV
    params:
        config=CONFIGFILE,
        sets=sets([]),
        data=studylib._flow(CFG["data"]),
    shell:
        "lengthgen prepare-data --config {params.config} {params.sets} > {log} 2>&1 && tail -n 1 {log} > {output}"
