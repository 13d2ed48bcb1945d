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
# # Figure 11: learning-rate warm-up length
#
# The same model and context trained with warm-ups of different lengths (fraction of training).
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig11_warmup.pdf", "figures/fig11_warmup.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig11", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, "model", "warmup", title=str, line_label=lambda e: f"warm-up {e['warmup']:.0%}")
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
