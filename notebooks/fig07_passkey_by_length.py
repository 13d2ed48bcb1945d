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
spec = None  # the workflow passes the entries to show; None = those of config/config.yaml
study = "reduced"
scale = None
outputs = ["figures/fig07_passkey_by_length.pdf", "figures/fig07_passkey_by_length.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig07", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402


def accuracy_table(result):
    """{(length, depth): accuracy} from a task result, whatever its container (JSON data or Parquet rows)."""
    if isinstance(result, tuple):
        df = result[0]
    else:
        import pandas as pd

        rows = result["data"].get("rows") or result["data"].get("results") or []
        df = pd.DataFrame(rows)
    if df.empty or "length" not in df or "accuracy" not in df:
        raise ValueError("task result without length/accuracy rows")
    if "depth" not in df:
        df = df.assign(depth=float("nan"))
    return df


settings = lp.group(spec, "setting") or {None: []}
fig, axes = plt.subplots(1, len(settings), figsize=(3.4 * len(settings), 2.8), squeeze=False)
for ax, (setting, es) in zip(axes[0], settings.items()):
    shown = 0
    for e in es:
        res = lp.load_task(e["results"]["passkey"])
        if res is None:
            continue
        df = accuracy_table(res).groupby("length")["accuracy"].mean()
        ax.plot(df.index, df.values, marker="o", color=lp.INTERVENTION_COLORS.get(e.get("intervention"), "k"), label=lp.label(e))
        shown += 1
    if not shown:
        lp.missing(ax, lp.absent(es, "passkey") or ["(no models selected)"])
    else:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend()
    ax.set_title(str(setting))
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
