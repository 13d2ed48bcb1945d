# One papermill-executed notebook per figure/table. Notebooks only read results and plot.
#
# Rendering never computes: a figure depends on the results that exist when the DAG is built
# (the committed ones on a fresh clone), marked ancient() so that checkout mtimes trigger nothing.
# Only target `all` (or no target) adds the missing results, so they are computed first.

STEMS = {info["stem"]: fig for fig, info in studylib.FIGURES.items()}


def computing():
    """True when the requested targets ask for recomputation (`all`, or no target given)."""
    targets = set(workflow.dag_settings.targets or ())
    return not targets and not workflow.dag_settings.target_jobs or "all" in targets


def figure_results(wildcards):
    paths = STUDY.figure_inputs(STEMS[wildcards.stem])
    if computing():
        return [ancient(p) if os.path.exists(p) else p for p in paths]
    return [ancient(p) for p in paths if os.path.exists(p)]


def notebook_params(wildcards):
    """Papermill parameters (YAML): what the figure shows, where its results are, the study's scale."""
    fig = STEMS[wildcards.stem]
    params = {
        "spec": STUDY.figure_specs[fig],
        "study": STUDY.name,
        "scale": CFG["study"]["scale"],
        "outputs": STUDY.figure_outputs(fig),
    }
    return shlex.quote(yaml.safe_dump(params, default_flow_style=True, width=10**9, sort_keys=True))


rule render_figure:
    """Execute notebooks/<stem>.py with papermill; it writes the figure (PDF + PNG)."""
    wildcard_constraints:
        stem="fig[0-9]+_[a-z0-9_]+",
    input:
        notebook="notebooks/{stem}.py",
        results=figure_results,
    output:
        notebook=f"{NBDIR}/{{stem}}.ipynb",
        pdf=f"{FIGDIR}/{{stem}}.pdf",
        png=f"{FIGDIR}/{{stem}}.png",
    params:
        parameters=notebook_params,
    log:
        f"{LOGS}/notebooks/{{stem}}.log",
    benchmark:
        f"{BENCH}/notebooks/{{stem}}.tsv"
    conda:
        "../../" + ENV
    shell:
        "python -m lengthgen.plotting execute {input.notebook} {output.notebook} --parameters {params.parameters} "
        "> {log} 2>&1"


use rule render_figure as render_table with:
    wildcard_constraints:
        stem="table[0-9]+_[a-z0-9_]+",
    output:
        notebook=f"{NBDIR}/{{stem}}.ipynb",
        md=f"{FIGDIR}/{{stem}}.md",
        tex=f"{FIGDIR}/{{stem}}.tex",
