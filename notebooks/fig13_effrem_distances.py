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
# # Figure 13: Effective Remembrance under three distances
#
# Total variation, Jensen-Shannon distance and 1 - cosine similarity, base (solid) vs. State Passing (dashed).
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig13_effrem_distances.pdf", "figures/fig13_effrem_distances.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig13", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

dists = ["tv", "js", "cosine"]
fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.8), squeeze=False)
gone = lp.absent(spec, "effrem")
for ax, d in zip(axes[0], dists):
    if not spec or len(gone) == len(spec):
        lp.missing(ax, gone or ["(no models selected)"])
    else:
        for i, e in enumerate(spec):
            lp.effrem_curve(ax, e, distance=d, color=plt.get_cmap("tab10")(i % 10),
                            ls="--" if e.get("intervention") else "-", label=lp.label(e))
        lp.position_axis(ax, spec[0].get("context"), "cut point t")
        ax.legend()
    ax.set_title({"tv": "total variation", "js": "Jensen-Shannon", "cosine": "1 - cosine"}[d])
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
