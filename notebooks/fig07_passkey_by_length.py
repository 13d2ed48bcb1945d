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
# # Figure 7: passkey retrieval accuracy by context length
#
# One panel per setting (zero-shot, finetuned, finetuned with fitted noise), one curve per model; accuracy averaged over depths.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig07_passkey_by_length.pdf", "figures/fig07_passkey_by_length.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig07", spec, scale)
lp.style()
fig, _ = lp.accuracy_by_length_panels(spec, "passkey", "task-passkey", xlabel="context length (tokens)",
                                      ylabel="accuracy")
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
