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
# # Figure 12: random-noise post-training at different sigma
#
# Position-wise loss of the base model and its random-noise post-trained versions.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig12_noise_sigma.pdf", "figures/fig12_noise_sigma.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig12", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, "model", lambda e: e.get("sigma"), title=str,
                       line_label=lambda e: "base" if e.get("sigma") is None else f"sigma={e['sigma']}")
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
