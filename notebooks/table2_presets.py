# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Table 2: model configurations
#
# The model presets (configuration, not results) with parameter counts measured on the built models,
# read from the `presets` result (workflow/scripts/presets.py), so this notebook never imports torch.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/table2_presets.md", "figures/table2_presets.tex"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("table2", spec, scale)

header = ("preset", "arch", "layers", "d_model", "parameters", "peak LR")
res = lp.load_task(spec[0]["results"]["presets"], "presets")
rows = [] if res is None else [
    (r["preset"], r["arch"], r["n_layers"] or "-", r["d_model"] or "-", f"{r['parameters'] / 1e6:.1f}M",
     f"{r['peak_lr']:g}" if r["peak_lr"] else "-") for r in res["data"]["presets"]]
md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)
if res is None:
    md += "\n\nnot yet measured: " + spec[0]["results"]["presets"]
note = "Parameters counted on the built model, tied embeddings once. " + lp.provenance_text(spec, "configuration (paper Table 2 presets)")
md += "\n\n" + note
tex = "\\begin{tabular}{llrrrr}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
tex += "".join(" & ".join(map(str, r)) + " \\\\\n" for r in rows) + "\\bottomrule\n\\end{tabular}\n"
tex += "% " + note
lp.save_table(md, tex, outputs)

# %%
print(md)
