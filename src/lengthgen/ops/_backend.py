"""Choosing between a GPU kernel and the plain torch reference, in one place.

Every op calls :func:`use_kernel` with its ``backend`` argument, its input tensors and the name
of the kernel family it would call.  The rule (docs/architecture.md, section 1):

* ``"torch"``  always the reference (exact in float64, runs anywhere);
* ``"kernel"`` always the kernel; an error that says what to install when it is unavailable;
* ``"auto"``   the kernel iff every input is on CUDA, none is float64, and the kernel imports.

Kernel packages are imported lazily (only when a CUDA input asks for them) and the outcome of
each import attempt is cached, so CPU-only installs never touch Triton, fla or mamba-ssm.
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable

import torch

BACKENDS = ("auto", "torch", "kernel")

_INSTALL_HINT = (
    "install the GPU extras as described in the README section 'GPU install' "
    "(offline machines: build them with `make wheelhouse`), or pass backend='torch'"
)


def _import_mamba_ssd() -> None:
    from lengthgen.ops._mamba_import import mamba_chunk_scan_combined

    mamba_chunk_scan_combined()


def _import_mamba_norm() -> None:
    from lengthgen.ops._mamba_import import mamba_layernorm_fn, mamba_rmsnorm_fn

    mamba_rmsnorm_fn()
    mamba_layernorm_fn()


def _import_mamba_add_norm() -> None:
    from lengthgen.ops._mamba_import import mamba_add_layer_norm_fn, mamba_add_rms_norm_fn

    mamba_add_rms_norm_fn()
    mamba_add_layer_norm_fn()


def _import_fla() -> None:
    importlib.import_module("fla.ops.gla")
    importlib.import_module("fla.ops.rwkv6")


def _import_fla_swiglu() -> None:
    importlib.import_module("fla.modules.activations")


def _import_triton_selective_scan() -> None:
    importlib.import_module("lengthgen.ops.triton.selective_scan")


def _import_triton_ssd_one_chunk() -> None:
    importlib.import_module("lengthgen.ops.triton.ssd_one_chunk")


def _import_fla_cross_entropy() -> None:
    importlib.import_module("fla.modules.fused_cross_entropy")


def _import_triton_conv() -> None:
    importlib.import_module("lengthgen.ops.triton.causal_conv1d")


def _import_triton_norm() -> None:
    importlib.import_module("lengthgen.ops.triton.rms_norm")


def _import_triton_token_mix() -> None:
    importlib.import_module("lengthgen.ops.triton.token_mix")


def _import_triton_squared_relu() -> None:
    importlib.import_module("lengthgen.ops.triton.squared_relu")


def _import_causal_conv1d() -> None:
    from lengthgen.ops._mamba_import import causal_conv1d_fn

    if causal_conv1d_fn() is None:
        raise ImportError("causal-conv1d is not installed with its compiled extension (causal_conv1d_cuda)")


# kernel family -> (what provides it, how to try importing it)
KERNELS: dict[str, tuple[str, Callable[[], None]]] = {
    "mamba_ssd": ("mamba-ssm (its Triton SSD kernels)", _import_mamba_ssd),
    "mamba_norm": ("mamba-ssm (its Triton RMSNorm and LayerNorm)", _import_mamba_norm),
    "mamba_add_norm": ("mamba-ssm (its Triton RMSNorm / LayerNorm with a fused residual add)", _import_mamba_add_norm),
    "fla": ("flash-linear-attention (fla-core)", _import_fla),
    "fla_swiglu": ("flash-linear-attention (fla-core, its SwiGLU kernel)", _import_fla_swiglu),
    "triton_selective_scan": ("triton (lengthgen's Mamba-1 selective-scan kernel)", _import_triton_selective_scan),
    "triton_ssd_one_chunk": ("triton (lengthgen's one-chunk Mamba-2 SSD kernel)", _import_triton_ssd_one_chunk),
    "causal_conv1d": ("causal-conv1d built with its CUDA extension", _import_causal_conv1d),
    "triton_conv": ("triton (lengthgen's depthwise causal conv1d kernel)", _import_triton_conv),
    "triton_norm": ("triton (lengthgen's RMSNorm and LayerNorm kernel: plain, gated, grouped, with a residual add)", _import_triton_norm),
    "triton_token_mix": ("triton (lengthgen's fused token-shift interpolations of RWKV-6)", _import_triton_token_mix),
    "triton_squared_relu": ("triton (lengthgen's one-pass squared ReLU)", _import_triton_squared_relu),
    "fla_cross_entropy": ("flash-linear-attention (fla-core, its fused cross-entropy kernel)",
                          _import_fla_cross_entropy),
}


@functools.lru_cache(maxsize=None)
def kernel_unavailable_reason(kernel: str) -> str | None:
    """None when ``kernel`` imports, else a one-line reason (the attempt is made once, then cached)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel family {kernel!r}; known: {sorted(KERNELS)}")
    _, attempt = KERNELS[kernel]
    try:
        attempt()
    except Exception as e:  # any failure to import means "not available"; the reason is kept
        return f"{type(e).__name__}: {e}"
    return None


def use_kernel(backend: str, kernel: str, *tensors: torch.Tensor | None) -> bool:
    """True when the op should call its GPU kernel, False for the torch reference.

    ``tensors`` are the op's inputs (None entries are ignored); they decide ``"auto"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    present = [t for t in tensors if t is not None]
    on_cuda = bool(present) and all(t.is_cuda for t in present)
    if backend == "kernel":
        why = kernel_unavailable_reason(kernel)
        if why is not None:
            raise RuntimeError(
                f"backend='kernel' needs {KERNELS[kernel][0]}, which is unavailable ({why}); {_INSTALL_HINT}"
            )
        if not on_cuda:
            raise RuntimeError("backend='kernel' needs every input on a CUDA device; use backend='torch' on CPU")
        return True
    if not on_cuda or any(t.dtype == torch.float64 for t in present):
        return False
    return kernel_unavailable_reason(kernel) is None


def state_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype of final states and of reference arithmetic: float64 if any input is, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
