"""Triton kernels compiled for sm_90 (H100 / H200) on a machine without a GPU, for the tests of
``lengthgen.ops.triton``: Triton's interpreter runs a kernel's Python but never compiles it, so
type, shape and resource errors of the real build only show here (or on the GPU).

``compile_for_sm90`` builds one specialisation with the installed Triton and its bundled ptxas and
checks what every launch needs: a cubin, the asked-for warps, shared memory within sm_90's limit.
"""

import os

import pytest

SM90_SHARED_BYTES = 227 * 1024  # the most shared memory one block of an H100 / H200 may use


def need_ptxas() -> None:
    """Skip unless the installed Triton has its NVIDIA backend and ptxas (the pip wheels do)."""
    try:
        import triton.backends.nvidia as nvidia
    except ImportError:
        pytest.skip("this Triton has no NVIDIA backend")
    if not os.path.exists(os.path.join(os.path.dirname(nvidia.__file__), "bin", "ptxas")):
        pytest.skip("this Triton ships no ptxas")


def compile_for_sm90(kernel, constexprs: dict, num_warps: int = 4, low=frozenset(), floats=frozenset({"eps"})):
    """Build ``kernel`` (a ``triton.jit`` function) with ``constexprs`` for sm_90: pointer arguments
    bf16 where named in ``low`` (activations under autocast), float32 otherwise; scalar arguments
    float32 where named in ``floats``, int32 otherwise. Returns the compiled kernel's metadata."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if name in low else "*fp32"
        else:
            sig[name] = "fp32" if name in floats else "i32"
    compiled = triton.compile(ASTSource(kernel, sig, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps})
    meta = compiled.metadata
    assert len(compiled.asm["cubin"]) > 0 and meta.num_warps == num_warps, (kernel.__name__, constexprs)
    assert meta.shared <= SM90_SHARED_BYTES, (kernel.__name__, constexprs, meta.shared)
    return meta
