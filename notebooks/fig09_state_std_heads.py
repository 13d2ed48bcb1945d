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
# # Figure 9: standard deviation of parts of the state
#
# Per layer and head: the heads of the base model whose std varies most over positions, base vs. State Passing.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
# spec: the entries to show, passed by the workflow (None: those of config/config.yaml)
spec = None
study = "reduced"
scale = None
outputs = ["figures/fig09_state_std_heads.pdf", "figures/fig09_state_std_heads.png"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("fig09", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402
base = [e for e in spec if not e.get("intervention")]
loaded = {e["id"]: lp.load_stats(e["results"]["state_stats"]) for e in spec}
picks = []
if base and loaded.get(base[0]["id"]) is not None:
    df = loaded[base[0]["id"]][0]
    heads = df[(df["layer"] >= 0) & (df["head"] >= 0)]
    spread = heads.groupby(["layer", "head"])["std"].agg(lambda s: float(s.max() / max(s.min(), 1e-12)))
    picks = list(spread.sort_values(ascending=False).index[:6])
n = max(1, len(picks))
fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.6), squeeze=False)
if not picks:
    lp.missing(axes[0, 0], lp.absent(spec, "state_stats") or ["(no models selected)"])
for ax, (layer, head) in zip(axes[0], picks):
    for e in spec:
        lp.stats_curve(ax, e, layer=int(layer), head=int(head), color=lp.INTERVENTION_COLORS.get(e.get("intervention"), "k"),
                       label=lp.label(e))
    lp.position_axis(ax, spec[0].get("context"))
    ax.set_title(f"layer {layer}, head {head}")
    ax.legend()
lp.footnote(fig, spec, scale)
lp.save(fig, outputs)

# %%
from IPython.display import Image, display  # noqa: E402

display(Image(filename=[o for o in outputs if o.endswith(".png")][0]))
