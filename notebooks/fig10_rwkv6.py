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
# # Figure 10: RWKV-6 pretrained and post-trained with State Passing
#
# Position-wise loss of the RWKV-6 model before and after State Passing post-training.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig10_rwkv6.pdf", "figures/fig10_rwkv6.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig10", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, "model", "intervention", title=str, line_label=lp.label)
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
