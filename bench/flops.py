"""FLOP and byte counts behind MFU and the roofline verdicts (the formulas, in one place).

Training FLOPs of one step over ``tokens`` tokens::

    6 * matmul_params * tokens  +  3 * scan_forward_flops_per_token * tokens

``matmul_params`` counts the weights of every ``nn.Linear`` (the LM head included, also when it is
tied to the embedding, since it is a matmul; the embedding lookup, norms, biases, the depthwise
convolution and the per-head scalars are not matmuls and are left out). 2 FLOPs per weight and
token forward, 4 backward. The scan is counted from its chunked algorithm (forward; backward = 2x
forward), with every block of a chunk computed densely (the causal mask is not halved, as the
kernels compute whole tiles):

* SSD (Mamba-2; heads H, head dim P, state N, groups G, chunk Q):
  ``G * 2QN`` (C B^T) ``+ H * (2QP`` (masked scores times x) ``+ 2NP`` (chunk states)
  ``+ 2NP)`` (output from the carried state) per token and layer;
* chunked GLA / RWKV-6 (heads H, key dim K, value dim V per head, fla's chunk C = 64):
  ``H * (2C(K + V) + 4KV)`` (intra-chunk scores and outputs, inter-chunk output and state update);
* Mamba-1 selective scan (channels D, state N): ``8DN`` (dA, exp, dB*u, state update, readout).

Bytes of one scan call (forward, per token and layer): every input read and every output written
once, bf16 activations (2 bytes) and fp32 for decays/steps the kernels keep in fp32. The
arithmetic intensity FLOPs/bytes against the ridge point ``peak FLOP/s / bandwidth`` says whether
bytes (below the ridge) or FLOPs (above) set the kernel's floor.
"""

from __future__ import annotations

from torch import nn

FLA_CHUNK = 64
BF16, FP32 = 2, 4


def matmul_params(model: nn.Module) -> int:
    """Weights that multiply activations in a matmul: every ``nn.Linear`` weight (tied head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def scan_flops_per_token(arch: str, config) -> int:
    """Forward FLOPs of the recurrence per token, summed over layers."""
    c = config
    if arch == "mamba2":
        h, p, n, g, q = c.nheads, c.headdim, c.d_state, c.ngroups, c.chunk_size
        per_layer = g * 2 * q * n + h * (2 * q * p + 4 * n * p)
    elif arch in ("gla", "rwkv6"):
        h = c.num_heads
        k, v = c.key_dim // h, c.value_dim // h
        per_layer = h * (2 * FLA_CHUNK * (k + v) + 4 * k * v)
    elif arch == "mamba1":
        per_layer = 8 * c.d_inner * c.d_state
    else:
        raise ValueError(f"no scan FLOP count for arch {arch!r}")
    return per_layer * c.n_layers


def scan_bytes_per_token(arch: str, config) -> int:
    """Forward bytes moved by the recurrence kernel per token, summed over layers."""
    c = config
    if arch == "mamba2":
        h, p, n, g = c.nheads, c.headdim, c.d_state, c.ngroups
        per_layer = BF16 * (h * p + 2 * g * n) + FP32 * h + BF16 * h * p      # x, B, C, dt in; y out
    elif arch in ("gla", "rwkv6"):
        k, v = c.key_dim, c.value_dim
        per_layer = BF16 * (2 * k + v) + FP32 * k + BF16 * v                  # q, k, v, log-decay in; o out
    elif arch == "mamba1":
        d, n = c.d_inner, c.d_state
        per_layer = BF16 * (2 * d + 2 * n) + BF16 * d                           # u, delta, B, C in; y out
    else:
        raise ValueError(f"no scan byte count for arch {arch!r}")
    return per_layer * c.n_layers


def forward_flops(model: nn.Module, arch: str, tokens: int) -> int:
    return 2 * matmul_params(model) * tokens + scan_flops_per_token(arch, model.config) * tokens


def train_flops(model: nn.Module, arch: str, tokens: int) -> int:
    """FLOPs of one training step (forward + backward) over ``tokens`` tokens."""
    return 3 * forward_flops(model, arch, tokens)


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the ``peak`` FLOP/s."""
    if seconds <= 0 or peak <= 0:
        raise ValueError(f"mfu needs positive seconds and peak, got {seconds}, {peak}")
    return flops / seconds / peak


def roofline(flops: float, bytes_moved: float, peak: float, bandwidth: float) -> dict:
    """Arithmetic intensity against the ridge point, the bound it implies and the time floor."""
    if bytes_moved <= 0:
        raise ValueError("roofline needs a positive byte count")
    intensity = flops / bytes_moved
    ridge = peak / bandwidth
    return {"flops": flops, "bytes": bytes_moved, "intensity_flop_per_byte": intensity, "ridge_flop_per_byte": ridge,
            "bound": "compute" if intensity >= ridge else "memory",
            "floor_s": max(flops / peak, bytes_moved / bandwidth)}


def scan_roofline(arch: str, config, peak: float, bandwidth: float) -> dict:
    """Roofline of the arch's scan kernel, per token (intensity does not depend on the length)."""
    return roofline(scan_flops_per_token(arch, config), scan_bytes_per_token(arch, config), peak, bandwidth)
