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
# # Figure 1: position-wise loss and Effective Remembrance, base vs. State Passing
#
# Top: loss by position of each base model (solid) and its State Passing post-trained counterpart (dashed). Bottom: Effective Remembrance (total variation) of the same models.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig01_ppl_effrem_state_passing.pdf", "figures/fig01_ppl_effrem_state_passing.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig01", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

archs = lp.group(spec, "arch") or {None: []}
fig, axes = plt.subplots(2, len(archs), figsize=(3.2 * len(archs), 5.4), squeeze=False)
for j, (arch, es) in enumerate(archs.items()):
    top, bottom = axes[0, j], axes[1, j]
    for i, e in enumerate(es):
        kw = dict(color=plt.get_cmap("tab10")(i // 2 % 10), ls="--" if e.get("intervention") else "-", label=lp.label(e))
        lp.ppl_curve(top, e, **kw)
        lp.effrem_curve(bottom, e, **kw)
    for ax, kind, ylabel in ((top, "ppl", "loss (nats)"), (bottom, "effrem", "EffRem (TV)")):
        gone = lp.absent(es, kind)
        if len(gone) == len(es):
            lp.missing(ax, gone)
        else:
            lp.position_axis(ax, es[0].get("context"), "position t" if kind == "ppl" else "cut point t")
            ax.set_ylabel(ylabel)
            ax.legend()
    top.set_title(str(arch))
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
