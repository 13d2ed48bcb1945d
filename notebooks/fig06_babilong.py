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
# # Figure 6: BABILong accuracy by context length
#
# One panel per setting (few-shot, finetuned), one curve per model.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig06_babilong.pdf", "figures/fig06_babilong.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig06", spec, scale)
lp.style()
fig, _ = lp.accuracy_by_length_panels(spec, "babilong", "task-babilong", xlabel="context length",
                                      ylabel="accuracy (mean over tasks)", named_lengths=True)
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
