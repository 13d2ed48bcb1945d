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
# # Figure 8: passkey retrieval accuracy by depth and length
#
# One heatmap per (setting, model): rows = depth of the passkey, columns = context length.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig08_passkey_depth_length.pdf", "figures/fig08_passkey_depth_length.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig08", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

cells = spec or [{"id": "(none)", "results": {"passkey": "(no models selected)"}}]
cols = min(3, len(cells))
rows = -(-len(cells) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
for ax in axes.flat[len(cells):]:
    ax.set_visible(False)
for ax, e in zip(axes.flat, cells):
    res = lp.load_task(e["results"]["passkey"], "task-passkey")
    if res is None:
        lp.missing(ax, [e["results"]["passkey"]])
    else:
        grid = lp.accuracy_frame(res).pivot_table(index="depth", columns="length", values="accuracy")
        im = ax.imshow(grid.values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=90)
        ax.set_yticks(range(grid.shape[0]), [f"{d:.2f}" for d in grid.index])
        ax.set_xlabel("length")
        ax.set_ylabel("depth")
    ax.set_title(f"{e.get('setting', '')}: {lp.label(e)}", fontsize=6)
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
