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
# # Figure 4: standard deviation of the whole state over positions
#
# Std over all elements of the recurrent state (all layers), base vs. State Passing.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig04_state_std.pdf", "figures/fig04_state_std.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig04", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(4.2, 3.0))
for e in spec:
    lp.stats_curve(ax, e, color=lp.INTERVENTION_COLORS.get(e.get("intervention"), "k"), label=lp.label(e))
gone = lp.absent(spec, "state_stats")
if not spec or len(gone) == len(spec):
    lp.missing(ax, gone or ["(no models selected)"])
else:
    lp.position_axis(ax, spec[0].get("context"))
    ax.set_ylabel("state std")
    ax.legend()
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
