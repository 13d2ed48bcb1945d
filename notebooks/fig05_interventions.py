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
# # Figure 5: the four interventions
#
# Position-wise loss of each base model and its post-trained versions (random noise, fitted noise, State Passing, TBTT).
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig05_interventions.pdf", "figures/fig05_interventions.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig05", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, lambda e: e.get("base", e["id"]), "intervention", title=lambda b: str(b).split("/")[-1],
                       line_label=lp.label)
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
