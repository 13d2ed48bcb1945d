"""Section ``train``: training throughput of our models against the reference implementations.

One training step = forward + backward + gradient clipping + AdamW step, bf16 autocast over fp32
master weights (the training recipe), the same token batch and the same weights for both sides;
the loss is the same fp32 cross-entropy on the logits for both. Also the forward-only throughput
at the training shape (no grad, logits + loss), MFU against the reference ceiling
(``flops.train_flops``) and the scan kernel's roofline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench import flops, upstream
from bench.profile_calls import profile_table
from bench.common import PEAK_BF16_FLOPS, COPY_BANDWIDTH, Options, SectionFile, autocast, free_memory, guarded, \
    measure, rate, synthetic_ids

NAME = "train"
CASES = (("mamba2", "mamba2-45m"), ("mamba2", "mamba2-130m"), ("gla", "gla-70m"), ("rwkv6", "rwkv6-70m"))
QUICK_CASES = CASES[:3]  # --quick skips RWKV-6: its fla kernels are a separate (slow) compile


GPU_BOUND = ":gpu_bound"  # result-key suffix of the GPU-bound shape


def shape(options: Options, gpu_bound: bool = False) -> tuple[int, int]:
    """(rows, context): the same tokens per step for every case and both implementations.

    At 8 x 2048 tokens these models' steps are set by Python launching kernels, not by the GPU
    (``profile`` section); at 24 x 2048 the GPU sets them, as in a run that fills the GPU. The
    ratios (bench/report.py) use the GPU-bound shape."""
    if gpu_bound:
        return options.pick((24, 2048), (12, 2048), (4, 64))
    return options.pick((8, 2048), (4, 2048), (2, 64))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_step_fn(model, logits_fn, inputs, targets, options: Options):
    """A closure running one optimizer step of ``model`` on the fixed batch."""
    from lengthgen.train.optim import build_optimizer

    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step() -> None:
        with autocast(options):
            logits = logits_fn(model, inputs)
        lm_loss(logits, targets).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def forward_fn(model, logits_fn, inputs, targets, options: Options):
    @torch.no_grad()
    def forward() -> None:
        with autocast(options):
            logits = logits_fn(model, inputs)
        lm_loss(logits, targets)

    return forward


def measure_model(model, kind: str, step_flops: int, inputs, targets, options: Options, setup=None,
                  profile: bool = False) -> dict:
    """Train-step and forward timings of one model on the device (moved back to the CPU after).
    ``step_flops`` (counted on our model: both sides do the same work) gives the MFU; ``profile``
    adds ``train_profile``, torch.profiler's table of one more step (``profile_calls.profile_table``)."""
    if setup is not None:
        setup()
    model.to(options.torch_device, dtype=torch.float32).train()
    logits_fn = upstream.logits_of(kind)
    tokens = inputs.numel()
    try:
        step, optimizer = train_step_fn(model, logits_fn, inputs, targets, options)
        t = measure(step, options)
        prof = profile_table(step, options) if profile else None
        del optimizer
        free_memory()
        model.eval()
        f = measure(forward_fn(model, logits_fn, inputs, targets, options), options)
    finally:
        model.to("cpu")
        free_memory()
    seconds = t["median_s"]
    return {"train_step": t, "train_tokens_per_s": rate(tokens, seconds),
            "mfu": flops.mfu(step_flops, seconds, PEAK_BF16_FLOPS),
            "forward": f, "forward_tokens_per_s": rate(tokens, f["median_s"]),
            **({"train_profile": prof} if profile else {})}


def measure_reference(theirs, arch: str, step_flops: int, inputs, targets, options: Options,
                      profile: bool = False) -> dict:
    """The reference model; for mamba-ssm, the first of its code paths that trains here."""
    kind = upstream.reference_kind(arch)
    if kind != "mamba_ssm":
        return measure_model(theirs, kind, step_flops, inputs, targets, options, profile=profile)
    attempts = []
    for name, setup in upstream.mamba_ssm_variants(theirs):
        got = guarded(lambda: measure_model(theirs, kind, step_flops, inputs, targets, options, setup, profile))
        attempts.append({"variant": name, **({"error": got["error"]} if "error" in got else {"ok": True})})
        if "error" not in got:
            return {**got, "variant": name, "attempts": attempts}
    return {"error": "no mamba-ssm code path trains on this install", "attempts": attempts}


def bench_case(arch: str, preset: str, options: Options, gpu_bound: bool = False, profile: bool = False) -> dict:
    ours, theirs, info = upstream.pair(arch, options.preset(preset), seed=0)
    rows, context = shape(options, gpu_bound)
    ids = synthetic_ids(rows, context + 1, ours.config.vocab_size, options.torch_device)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    tokens = rows * context
    step_flops = flops.train_flops(ours, arch, tokens)
    out = {"arch": arch, "preset": options.preset(preset), "rows": rows, "context": context, "tokens_per_step": tokens,
           "params": ours.num_parameters(), "matmul_params": flops.matmul_params(ours),
           "scan_flops_per_token": flops.scan_flops_per_token(arch, ours.config),
           "train_flops_per_step": step_flops,
           "scan_roofline_per_token": flops.scan_roofline(arch, ours.config, PEAK_BF16_FLOPS, COPY_BANDWIDTH),
           "reference": info}
    out["ours"] = guarded(lambda: measure_model(ours, "ours", step_flops, inputs, targets, options, profile=profile))
    if theirs is not None:
        out["theirs"] = guarded(lambda: measure_reference(theirs, arch, step_flops, inputs, targets, options, profile))
        a, b = out["ours"].get("train_tokens_per_s"), out["theirs"].get("train_tokens_per_s")
        out["ratio_ours_vs_theirs"] = a / b if a and b else None
    return out


def run(options: Options, section: SectionFile, args=None) -> None:
    wanted = getattr(args, "train_presets", None)
    shapes = getattr(args, "train_shapes", None) or ("host_bound", "gpu_bound")
    gpu_bounds = [g for g in (False, True) if ("gpu_bound" if g else "host_bound") in shapes]
    for arch, preset in (QUICK_CASES if options.quick else CASES):
        if wanted and options.preset(preset) not in wanted and preset not in wanted:
            continue
        for gpu_bound in gpu_bounds:
            key = preset + (GPU_BOUND if gpu_bound else "")
            section.record(key, guarded(lambda: bench_case(arch, preset, options, gpu_bound,
                                                           getattr(args, "train_profile", False))))
            free_memory()
