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
# # Figure 2: position-wise loss by training context
#
# One panel per model, one curve per training context T (dotted line: T of the first curve).
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig02_ppl_by_context.pdf", "figures/fig02_ppl_by_context.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig02", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, "model", "context", title=lambda m: f"{m}", line_label=lambda e: f"T={e['context']}")
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
