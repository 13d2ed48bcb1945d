"""Mamba-1 selective scan with an initial state on the GPU: time and memory of the candidate paths.

    python bench/mamba1_scan.py --out mamba1_scan.json            # Mamba-1 130m shape, bf16
    python bench/mamba1_scan.py --sweep --out mamba1_scan.json     # also sweep the Triton launch configs

Paths, each computing y and the final state from (u, delta, A, B, C, initial_state):
  triton        lengthgen's kernel (lengthgen.ops.triton), reads (b, d, l) / (b, n, l) inputs directly
  fla_recurrent fla's fused_recurrent_gla in the Mamba-1 parameterization: one head per channel,
                K = d_state, V = 1; q = C, k = delta*B, v = u, gk = delta*A, all expanded to (b, l, d, n)
                (the expansion is part of the path, so it is timed)
  torch         lengthgen's plain reference (a loop over time)
  mamba_cuda    mamba-ssm's compiled selective_scan_fn (zero initial state) plus the initial state's
                contribution of the paper's eq. 4 (lengthgen.ops.initial_state_contribution);
                only where mamba-ssm's compiled extension imports
"fwd" is inference (no autograd graph); "fwd_bwd" is forward with autograd plus backward into every
input, the initial state included. Memory is the peak allocated beyond the inputs.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback

import torch

GIB = 2**30


def make_inputs(b, d, n, l, dtype, seed=0):
    """Mamba-1 scales: delta = softplus(. + dt_bias) in about [1e-3, 1e-1] (float32, as the model's
    dispatcher passes it), S4D-real A = -(1..n); u, B, C in the benchmark dtype; h0 float32."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device="cuda")
    dt_bias = torch.log(torch.expm1(torch.exp(torch.empty(d, device="cuda").uniform_(-6.9, -2.3, generator=g))))
    delta = torch.nn.functional.softplus(0.5 * r(b, d, l) + dt_bias[:, None])
    A = -torch.arange(1, n + 1, device="cuda", dtype=torch.float32).repeat(d, 1)
    return dict(u=r(b, d, l).to(dtype), delta=delta, A=A, B=r(b, n, l).to(dtype), C=r(b, n, l).to(dtype),
                h0=r(b, d, n))


# ---- the paths: each maps the inputs to (y (b, d, l), final state (b, d, n)) ------------------------

def path_triton(config=None):
    from lengthgen.ops.triton import selective_scan_triton

    def run(u, delta, A, B, C, h0):
        return selective_scan_triton(u, delta, A, B, C, h0, config=config)
    return run


def path_fla_recurrent():
    from fla.ops.gla import fused_recurrent_gla

    def run(u, delta, A, B, C, h0):
        b, d, l = u.shape
        n = A.shape[1]
        q = C.transpose(1, 2)[:, :, None, :].expand(b, l, d, n)
        k = (delta.transpose(1, 2)[..., None] * B.transpose(1, 2)[:, :, None, :]).to(u.dtype)
        gk = delta.transpose(1, 2)[..., None] * A  # log decay, float32
        v = u.transpose(1, 2)[..., None]
        o, hT = fused_recurrent_gla(q=q.contiguous(), k=k, v=v.contiguous(), gk=gk, scale=1.0,
                                    initial_state=h0[..., None], output_final_state=True)
        return o[..., 0].transpose(1, 2).to(u.dtype), hT[..., 0]
    return run


def path_torch():
    from lengthgen.ops.selective_scan import selective_scan_core_reference

    def run(u, delta, A, B, C, h0):
        y, hT = selective_scan_core_reference(u, delta, A, B, C, h0)
        return y.to(u.dtype), hT
    return run


def path_mamba_cuda():
    from lengthgen.ops import _mamba_import
    from lengthgen.ops.initial_state import initial_state_contribution

    if not _mamba_import.compiled_selective_scan_available():
        raise ImportError("mamba-ssm's compiled selective_scan_cuda is not installed")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    def run(u, delta, A, B, C, h0):
        y, hT = selective_scan_fn(u, delta, A, B, C, return_last_state=True)
        log_decay = (delta[..., None] * A[:, None, :]).transpose(1, 2)  # (b, l, d, n)
        y0, h0_part = initial_state_contribution(log_decay, C.transpose(1, 2)[:, :, None, :].float(), h0)
        return (y.float() + y0.transpose(1, 2)).to(u.dtype), hT.float() + h0_part
    return run


PATHS = {"triton": path_triton, "fla_recurrent": path_fla_recurrent, "torch": path_torch,
         "mamba_cuda": path_mamba_cuda}


# ---- measurement ----------------------------------------------------------------------------------

def peak_extra_gib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / GIB


def measure(run, inputs, tokens, warmup, rep):
    """fwd and fwd_bwd median time (ms), tokens/s and peak extra memory (GiB) of one path."""
    from triton.testing import do_bench

    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    names = ("u", "delta", "A", "B", "C", "h0")

    def fwd():
        with torch.no_grad():
            return run(*(inputs[k] for k in names))

    def fwd_bwd():
        y, hT = run(*(leaves[k] for k in names))
        torch.autograd.backward([y, hT], [torch.ones_like(y), torch.ones_like(hT)])

    out = {}
    for name, fn, grads in (("fwd", fwd, None), ("fwd_bwd", fwd_bwd, list(leaves.values()))):
        fn()  # compile / autotune outside the timing
        ms = do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grads, return_mode="median")
        out[name] = {"ms": ms, "tokens_per_s": tokens / (ms / 1e3), "peak_extra_gib": peak_extra_gib(fn)}
    return out


def rel_diff(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def run_path(name, make, inputs, tokens, args, reference=None):
    try:
        run = make()
    except ImportError as e:
        return {"status": "unavailable", "reason": str(e)}
    try:
        res = {"status": "ok", **measure(run, inputs, tokens, args.warmup, args.rep)}
        if reference is not None:
            with torch.no_grad():
                y, hT = run(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "h0")))
            res["rel_diff_vs_triton"] = {"y": rel_diff(y, reference[0]), "final_state": rel_diff(hT, reference[1])}
        return res
    except torch.cuda.OutOfMemoryError as e:
        return {"status": "oom", "reason": str(e).splitlines()[0]}
    except Exception as e:  # a path that fails is recorded, the others still run
        traceback.print_exc()
        return {"status": "error", "reason": f"{type(e).__name__}: {e}"}
    finally:
        torch.cuda.empty_cache()


def sweep(inputs, tokens, args):
    """Triton launch configs: forward blocks per chunk size, then backward blocks at the best forward."""
    from lengthgen.ops.triton import ScanConfig

    rows = []
    for chunk in (16, 32):
        fwd_rows = []
        for bd, w in ((8, 4), (16, 4), (16, 8), (32, 8)):
            cfg = ScanConfig(chunk=chunk, block_d_fwd=bd, warps_fwd=w)
            r = run_path("triton", lambda: path_triton(cfg), inputs, tokens, args)
            fwd_rows.append((r.get("fwd", {}).get("ms", math.inf), cfg))
            rows.append({"config": vars(cfg), "fwd_ms": r.get("fwd", {}).get("ms"), "status": r["status"]})
        best_fwd = min(fwd_rows, key=lambda x: x[0])[1]
        for bd, w in ((8, 4), (8, 8), (16, 8), (32, 8)):
            cfg = ScanConfig(chunk=chunk, block_d_fwd=best_fwd.block_d_fwd, warps_fwd=best_fwd.warps_fwd,
                             block_d_bwd=bd, warps_bwd=w)
            r = run_path("triton", lambda: path_triton(cfg), inputs, tokens, args)
            rows.append({"config": vars(cfg), "fwd_ms": r.get("fwd", {}).get("ms"),
                         "fwd_bwd_ms": r.get("fwd_bwd", {}).get("ms"), "peak_fwd_bwd_gib":
                         r.get("fwd_bwd", {}).get("peak_extra_gib"), "status": r["status"]})
            print(f"  sweep {vars(cfg)}: {rows[-1]}", flush=True)
    done = [r for r in rows if r.get("fwd_bwd_ms") is not None]
    return {"rows": rows, "best": min(done, key=lambda r: r["fwd_bwd_ms"])["config"] if done else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d", type=int, default=1536, help="channels (Mamba-1 130m: d_inner = 1536)")
    p.add_argument("--n", type=int, default=16, help="d_state")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--torch-seqlen", type=int, default=None,
                   help="shorter length for the slow torch reference (default: --seqlen)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--sweep", action="store_true", help="also time a grid of Triton launch configs")
    p.add_argument("--warmup", type=int, default=25, help="ms of warm-up per measurement (triton do_bench)")
    p.add_argument("--rep", type=int, default=200, help="ms of repetitions per measurement")
    p.add_argument("--out", help="write the results (with provenance) as JSON here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("bench/mamba1_scan.py needs a CUDA GPU (it times GPU kernels)")
    unknown = set(args.paths.split(",")) - set(PATHS)
    if unknown:
        sys.exit(f"unknown --paths {sorted(unknown)}; choose from {list(PATHS)}")

    from lengthgen.provenance import provenance

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    shape = dict(batch=args.batch, d=args.d, n=args.n, seqlen=args.seqlen, dtype=args.dtype)
    inputs = make_inputs(args.batch, args.d, args.n, args.seqlen, dtype)
    tokens = args.batch * args.seqlen
    with torch.no_grad():
        reference = path_triton()(*(inputs[k] for k in ("u", "delta", "A", "B", "C", "h0")))

    results = {}
    for name in args.paths.split(","):
        l = args.torch_seqlen if name == "torch" and args.torch_seqlen else args.seqlen
        inp = inputs if l == args.seqlen else {k: (v[..., :l] if v.dim() == 3 and v.shape[-1] == args.seqlen else v)
                                              for k, v in inputs.items()}
        ref = reference if l == args.seqlen and name != "triton" else None
        res = run_path(name, PATHS[name], inp, args.batch * l, args, ref)
        res["seqlen"] = l
        results[name] = res
        line = f"{name:14s} L={l:5d} {res['status']:11s}"
        for k in ("fwd", "fwd_bwd"):
            if k in res:
                line += (f" | {k}: {res[k]['ms']:8.3f} ms {res[k]['tokens_per_s'] / 1e6:8.2f} Mtok/s "
                         f"{res[k]['peak_extra_gib']:6.2f} GiB")
        if "rel_diff_vs_triton" in res:
            line += " | vs triton y {y:.1e} state {final_state:.1e}".format(**res["rel_diff_vs_triton"])
        if "reason" in res:
            line += f" ({res['reason']})"
        print(line, flush=True)

    out = {"bench": "mamba1_scan", "shape": shape, "results": results}
    if args.sweep:
        out["sweep"] = sweep(inputs, tokens, args)
        print(f"best Triton config (fwd_bwd): {out['sweep']['best']}")
    out["provenance"] = provenance(device="cuda", bench_args=vars(args))
    if args.out:
        from lengthgen.io import write_json

        write_json(args.out, out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
