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
# Character accuracy at the evaluation length (longer than any training string), mean ± std over seeds
# per setting: greedy copies (the model writes the copy) and teacher forced (next character given the
# true prefix). Reads the task-copying results only; missing results are marked, not invented.

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


def mean_std(values):
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


header = ("setting", "eval length", "character accuracy (greedy)", "character accuracy (teacher forced)", "seeds")
rows = []
for setting, es in lp.group(spec, "setting").items():
    greedy, forced, lengths = [], [], set()
    for e in es:
        res = lp.load_task(e["results"]["copying"], "task-copying")
        if res is not None:
            ev = res["data"]["eval_length"]
            greedy.append(ev["greedy"]["char_accuracy"])
            forced.append(ev["teacher_forced"]["char_accuracy"])
            lengths.add(ev["length"])
    label = es[0].get("label", setting)
    if greedy:
        rows.append((label, "/".join(map(str, sorted(lengths))), mean_std(greedy), mean_std(forced), str(len(greedy))))
    else:
        rows.append((label, "-", "not yet measured", "not yet measured", "0"))
md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)
md += "\n\nStd over seeds (population). " + lp.provenance_text(spec, scale)
tex = "\\begin{tabular}{lcccc}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
tex += "".join(" & ".join(c.replace("±", "$\\pm$") for c in r) + " \\\\\n" for r in rows) + "\\bottomrule\n\\end{tabular}\n"
tex += "% Std over seeds (population). " + lp.provenance_text(spec, scale)
lp.save_table(md, tex, outputs)

# %%
print(md)
