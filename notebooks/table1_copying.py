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
# # Table 1: synthetic copying
#
# Character accuracy (mean ± std over seeds) per setting, read from the copying results.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/table1_copying.md", "figures/table1_copying.tex"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("table1", spec, scale)
import numpy as np  # noqa: E402

rows = []
for setting, es in lp.group(spec, "setting").items():
    accs = []
    for e in es:
        res = lp.load_task(e["results"]["copying"], "task-copying")
        if res is not None:
            accs.append(float(res["data"]["char_accuracy"]))
    label = es[0].get("label", setting)
    if accs:
        rows.append((label, f"{np.mean(accs):.2f} ± {np.std(accs):.2f}", str(len(accs))))
    else:
        rows.append((label, "not yet measured", "0"))
md = "| setting | character accuracy | seeds |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
md += "\n\n" + lp.provenance_text(spec, scale)
tex = "\\begin{tabular}{lcc}\n\\toprule\nsetting & character accuracy & seeds \\\\\n\\midrule\n"
pm = "$\\pm$"
tex += "".join(a + " & " + b.replace("±", pm) + " & " + c + " \\\\\n" for a, b, c in rows) + "\\bottomrule\n\\end{tabular}\n"
tex += "% " + lp.provenance_text(spec, scale)
lp.save_table(md, tex, outputs)

# %%
print(md)
