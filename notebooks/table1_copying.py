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
# true prefix), the model's size, and the greedy accuracy over each third of the copy (where copying
# breaks; results that predate `by_position` show "-"). Reads the task-copying results only; missing
# results are marked, not invented.

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


def thirds(curves):
    """Mean greedy accuracy over each third of the copy, averaged over seeds: "a / b / c"."""
    if not curves:
        return "-"
    mean = np.mean(curves, axis=0)
    return " / ".join(f"{part.mean():.2f}" for part in np.array_split(mean, 3))


header = ("setting", "parameters", "eval length", "character accuracy (greedy)",
          "character accuracy (teacher forced)", "greedy by third of the copy", "seeds")
rows = []
for setting, es in lp.group(spec, "setting").items():
    greedy, forced, lengths, params, curves = [], [], set(), set(), []
    for e in es:
        res = lp.load_task(e["results"]["copying"], "task-copying")
        if res is not None:
            ev = res["data"]["eval_length"]
            greedy.append(ev["greedy"]["char_accuracy"])
            forced.append(ev["teacher_forced"]["char_accuracy"])
            lengths.add(ev["length"])
            params.add(f"{res['data']['parameters'] / 1e6:.1f}M" if res["data"].get("parameters") else "-")
            if "by_position" in ev["greedy"]:
                curves.append(ev["greedy"]["by_position"])
    label = es[0].get("label", setting)
    if greedy:
        rows.append((label, "/".join(sorted(params)), "/".join(map(str, sorted(lengths))), mean_std(greedy),
                     mean_std(forced), thirds(curves), str(len(greedy))))
    else:
        rows.append((label, "-", "-", "not yet measured", "not yet measured", "-", "0"))
md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)
md += "\n\nStd over seeds (population). " + lp.provenance_text(spec, scale)
tex = "\\begin{tabular}{lcccccc}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
tex += "".join(" & ".join(c.replace("±", "$\\pm$") for c in r) + " \\\\\n" for r in rows) + "\\bottomrule\n\\end{tabular}\n"
tex += "% Std over seeds (population). " + lp.provenance_text(spec, scale)
lp.save_table(md, tex, outputs)

# %%
print(md)
