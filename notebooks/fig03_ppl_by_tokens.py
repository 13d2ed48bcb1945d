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
# # Figure 3: position-wise loss by number of training tokens
#
# Checkpoints of one run at token milestones (Chinchilla multiples) and its final model.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig03_ppl_by_tokens.pdf", "figures/fig03_ppl_by_tokens.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig03", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

fig, _ = lp.ppl_panels(spec, "model", lambda e: e.get("milestone") or e.get("tokens"),
                       title=lambda m: f"{m}: tokens seen", line_label=lambda e: str(e.get("milestone") or f"final ({e.get('tokens')})"))
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
