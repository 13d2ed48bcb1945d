"""Table 2's data: every model preset (paper Table 2) with its parameter count measured on the built model.

    python workflow/scripts/presets.py --out results/presets.json

Writes one result (kind ``presets``): a row per (arch, preset) with layers, width, the measured
parameter count (tied embeddings counted once) and the preset's peak learning rate. The models are
built on the meta device, so this takes seconds on a CPU; the Table 2 notebook then reads numbers
without importing torch.
"""

from __future__ import annotations

import argparse
import sys


def preset_rows() -> list[dict]:
    import torch

    from lengthgen.models import ARCHS, build_model, preset_lr, presets

    rows = []
    for arch in ARCHS:
        for name, kw in presets(arch).items():
            if name == "tiny":  # the CPU test size, not a paper configuration
                continue
            with torch.device("meta"):
                model = build_model(arch, preset=name)
            rows.append({"arch": arch, "preset": name, "n_layers": kw.get("n_layers"), "d_model": kw.get("d_model"),
                         "parameters": sum(p.numel() for p in model.parameters()), "peak_lr": preset_lr(arch, name)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from lengthgen.provenance import provenance
    from lengthgen.results import write_result

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="result file (.json)")
    args = p.parse_args(argv)
    rows = preset_rows()
    write_result(args.out, "presets", {"presets": rows}, provenance({}, seed=0, device="cpu"))
    print(f"presets: {len(rows)} presets -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
