# One papermill-executed notebook per figure/table. Notebooks only read results and plot.
#
# Rendering never computes: a figure depends on the results that exist when the DAG is built
# (the committed ones on a fresh clone), marked ancient() so that checkout mtimes trigger nothing.
# Only target `all` (or no target) adds the missing results, so they are computed first.

STEMS = {info["stem"]: fig for fig, info in studylib.FIGURES.items()}


rule render_figure:
    input:
        notebook="notebooks/{stem}.py",
        results=figure_results,
    output:
        notebook=f"{NBDIR}/{{stem}}.ipynb",
        pdf=f"{FIGDIR}/{{stem}}.pdf",
        png=f"{FIGDIR}/{{stem}}.png",
    log:
        f"{LOGS}/notebooks/{{stem}}.log",
    benchmark:
        f"{BENCH}/notebooks/{{stem}}.tsv"
    """Execute notebooks/<stem>.py with papermill; it writes the figure (PDF + PNG)."""
    wildcard_constraints:
        stem="fig[0-9]+_[a-z0-9_]+",
    conda:
        CONDA_ENV
    params:
        parameters=notebook_params,
    shell:
        "python -m lengthgen.plotting execute {input.notebook} {output.notebook} --parameters {params.parameters} "
        "> {log} 2>&1"


use rule render_figure as render_table with:
    output:
        notebook=f"{NBDIR}/{{stem}}.ipynb",
        md=f"{FIGDIR}/{{stem}}.md",
        tex=f"{FIGDIR}/{{stem}}.tex",
    wildcard_constraints:
        stem="table[0-9]+_[a-z0-9_]+",


# Table 1 draws its accuracy by position within the copy beside the table (STUDY.figure_exts).
use rule render_figure as render_table_with_figure with:
    output:
        notebook=f"{NBDIR}/{{stem}}.ipynb",
        md=f"{FIGDIR}/{{stem}}.md",
        tex=f"{FIGDIR}/{{stem}}.tex",
        pdf=f"{FIGDIR}/{{stem}}.pdf",
        png=f"{FIGDIR}/{{stem}}.png",
    wildcard_constraints:
        stem="table1_copying",


ruleorder: render_table_with_figure > render_table
