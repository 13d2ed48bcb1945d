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
# # Table 2: model configurations
#
# Rendered from the model presets (configuration, not results), with parameter counts measured on the built models.
# Reads result files only (never trains or evaluates); missing results are marked, not invented.

# %% tags=["parameters"]
spec = None  # the workflow passes the entries to show; None = those of config/config.yaml
study = "reduced"
scale = None
outputs = ["figures/table2_presets.md", "figures/table2_presets.tex"]

# %%
from lengthgen import plotting as lp

spec, scale = lp.resolve_spec("table2", spec, scale)
lp.style()
import matplotlib.pyplot as plt  # noqa: E402

import torch  # noqa: E402

from lengthgen.models import ARCHS, build_model, preset_lr, presets  # noqa: E402

rows = []
for arch in ARCHS:
    for name, kw in presets(arch).items():
        if name == "tiny":
            continue
        with torch.device("meta"):
            model = build_model(arch, preset=name)
        n = sum(p.numel() for p in model.parameters())
        lr = preset_lr(arch, name)
        rows.append((name, arch, kw.get("n_layers", "-"), kw.get("d_model", "-"), f"{n / 1e6:.1f}M", f"{lr:g}" if lr else "-"))
header = ("preset", "arch", "layers", "d_model", "parameters", "peak LR")
md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)
md += "\n\nParameters counted on the built model, tied embeddings once. Scale: configuration (paper Table 2 presets)."
tex = "\\begin{tabular}{llrrrr}\n\\toprule\n" + " & ".join(header) + " \\\\\n\\midrule\n"
tex += "".join(" & ".join(map(str, r)) + " \\\\\n" for r in rows) + "\\bottomrule\n\\end{tabular}\n"
lp.save_table(md, tex, outputs)

# %%
print(md)
