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
# # Figure 7: passkey retrieval accuracy by context length
#
# One panel per setting (zero-shot, finetuned, finetuned with fitted noise), one curve per model; accuracy averaged over depths.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig07_passkey_by_length.pdf", "figures/fig07_passkey_by_length.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig07", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

settings = lp.group(spec, "setting") or {None: []}
fig, axes = plt.subplots(1, len(settings), figsize=(3.4 * len(settings), 2.8), squeeze=False)
for ax, (setting, es) in zip(axes[0], settings.items()):
    shown = 0
    for e in es:
        res = lp.load_task(e["results"]["passkey"], "task-passkey")
        if res is None:
            continue
        acc = lp.accuracy_frame(res).groupby("length")["accuracy"].mean()
        ax.plot(acc.index, acc.values, marker="o", color=lp.INTERVENTION_COLORS.get(e.get("intervention"), "k"), label=lp.label(e))
        shown += 1
    if not shown:
        lp.missing(ax, lp.absent(es, "passkey") or ["(no models selected)"])
    else:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    ax.set_title(str(setting))
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
