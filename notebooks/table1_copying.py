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
# breaks; results that predate `by_position` show "-"). The figure beside the table draws the character
# accuracy at every position of the copy, greedy and teacher forced, mean over seeds (thin lines: each
# seed). Reads the task-copying results only; missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/table1_copying.md", "figures/table1_copying.tex", "figures/table1_copying.pdf",
           "figures/table1_copying.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("table1", spec, scale)
import numpy as np  # noqa: E402


def mean_std(values):
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else f"{values[0]:.2f} (one seed)"


def trained_on(label, res):
    """What a setting's model is and what it was trained on, from its result (the table's caption)."""
    d = res["data"]
    t, ev = d["train"], d["eval_length"]
    size = f"{d['parameters'] / 1e6:.1f}M parameters" if d.get("parameters") else f"preset {d.get('preset')}"
    strings = f"{t['sequences']:,} strings" if "sequences" in t else "strings"  # older results lack it
    recipe = f"{t['steps']:,} steps" + (f" of {t['batch_size']}, peak lr {t['lr']:g}" if "lr" in t else "")
    return (f"{label}: {d['arch']} with {size}, trained from scratch on {strings} of {t['min_length']}-"
            f"{t['max_length']} letters ({recipe}), evaluated on {ev['num_strings']} strings of {ev['length']}.")


def thirds(curves):
    """Mean greedy accuracy over each third of the copy, averaged over seeds: "a / b / c"."""
    if not curves:
        return "-"
    mean = np.mean(curves, axis=0)
    return " / ".join(f"{part.mean():.2f}" for part in np.array_split(mean, 3))


header = ("setting", "parameters", "eval length", "character accuracy (greedy)",
          "character accuracy (teacher forced)", "greedy by third of the copy",
          "greedy at the training length (each seed)", "seeds")
rows, by_position, captions = [], {}, []  # by_position[label] = (greedy curves, teacher-forced curves)
for setting, es in lp.group(spec, "setting").items():
    greedy, forced, lengths, params, curves, tf_curves, first = [], [], set(), set(), [], [], None
    at_train = []  # greedy character accuracy on strings of the longest training length, per seed
    for e in es:
        res = lp.load_task(e["results"]["copying"], "task-copying")
        if res is not None:
            first = first or res
            ev = res["data"]["eval_length"]
            greedy.append(ev["greedy"]["char_accuracy"])
            forced.append(ev["teacher_forced"]["char_accuracy"])
            lengths.add(ev["length"])
            if "train_length" in res["data"]:
                at_train.append(f"{res['data']['train_length']['greedy']['char_accuracy']:.2f}")
            params.add(f"{res['data']['parameters'] / 1e6:.1f}M" if res["data"].get("parameters") else "-")
            if "by_position" in ev["greedy"]:
                curves.append(ev["greedy"]["by_position"])
                tf_curves.append(ev["teacher_forced"]["by_position"])
    label = es[0].get("label", setting)
    by_position[label] = (curves, tf_curves)
    if first is not None:
        captions.append(trained_on(label, first))
    if greedy:
        rows.append((label, "/".join(sorted(params)), "/".join(map(str, sorted(lengths))), mean_std(greedy),
                     mean_std(forced), thirds(curves), " / ".join(at_train) or "-", str(len(greedy))))
    else:
        rows.append((label, "-", "-", "not yet measured", "not yet measured", "-", "-", "0"))
md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows)
caption = " ".join(captions) + " Std over seeds (population). " + lp.provenance_text(spec, scale)
md += "\n\n" + caption
tex = "\\begin{tabular}{lccccccc}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
tex += "".join(" & ".join(c.replace("±", "$\\pm$") for c in r) + " \\\\\n" for r in rows) + "\\bottomrule\n\\end{tabular}\n"
tex += "% " + caption
lp.save_table(md, tex, [o for o in outputs if o.endswith((".md", ".tex"))])

# %%
import matplotlib.pyplot as plt  # noqa: E402

lp.style()
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
drawn = []
for i, (label, (curves, tf_curves)) in enumerate(by_position.items()):
    for ax, cs in zip(axes, (curves, tf_curves)):
        if cs:
            color = f"C{i}"
            for c in cs:
                ax.plot(np.arange(1, len(c) + 1), c, color=color, lw=0.4, alpha=0.35)
            ax.plot(np.arange(1, len(cs[0]) + 1), np.mean(cs, axis=0), color=color, lw=1.2,
                    label=f"{label} ({len(cs)} seed{'s' if len(cs) > 1 else ''})")
    if curves:
        drawn.append(label)
for ax, title in zip(axes, ("greedy", "teacher forced")):
    ax.set_title(f"{title}: character accuracy by position")
    ax.set_xlabel("position in the copy")
    ax.axhline(1 / 26, color="0.5", ls=":", lw=0.8)  # one letter in 26: a guess
if drawn:
    axes[0].set_ylabel("character accuracy")
    axes[1].legend(fontsize=6)
else:
    lp.missing(axes[0], [e["results"]["copying"] for e in spec], "no result with accuracy by position yet")
lp.footnote(fig, spec, " ".join(captions) + " The study's language models (not these): " + scale)
lp.save(fig, [o for o in outputs if o.endswith((".pdf", ".png"))])

# %%
print(md)
