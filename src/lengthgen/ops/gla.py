"""Gated linear attention (GLA) with an initial state and a final state.

Per head, with a per-key log decay ``gk_t <= 0`` and the state S of shape (K, V):

    S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T
    o_t = scale * q_t^T S_t                       (scale defaults to K ** -0.5, as in fla)

The reference is chunked: inside a chunk the outputs come from a masked "attention" whose
weights carry the exact per-key decay between every pair of positions; across chunks the state
is passed by the recurrence.  Every exponent it forms is <= 0, so it is stable, exact in float64
and differentiable with respect to every input, the initial state included.  RWKV-6 differs only
in where the query reads the state and in its bonus term; it shares the chunked core
(:func:`decayed_attention_reference`).  GPU: fla's ``chunk_gla``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lengthgen.ops._backend import state_dtype, use_kernel

REFERENCE_CHUNK = 16  # positions per chunk in the reference; its memory grows with chunk * K


def check_linear_attention_shapes(op: str, q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state) -> None:
    """Shapes shared by GLA and RWKV-6: q/k/g (b, t, h, K), v (b, t, h, V), state (b, h, K, V)."""
    if q.dim() != 4:
        raise ValueError(f"{op}: queries must be (batch, time, heads, key_dim), got shape {tuple(q.shape)}")
    b, t, h, K = q.shape
    if k.shape != q.shape or g.shape != q.shape:
        raise ValueError(
            f"{op}: keys and log decays must have the queries' shape {(b, t, h, K)}, "
            f"got keys {tuple(k.shape)}, decays {tuple(g.shape)}"
        )
    if v.dim() != 4 or v.shape[:3] != (b, t, h):
        raise ValueError(f"{op}: v must be (batch, time, heads, value_dim) with {(b, t, h)} leading, got {tuple(v.shape)}")
    V = v.shape[3]
    if initial_state is not None and tuple(initial_state.shape) != (b, h, K, V):
        raise ValueError(
            f"{op}: initial_state must be (batch, heads, key_dim, value_dim) = {(b, h, K, V)}, "
            f"got {tuple(initial_state.shape)}"
        )
    if t == 0:
        raise ValueError(f"{op}: the sequence is empty (length 0)")


KERNEL_TIME_MULTIPLE = 64  # fla's chunk size; kernel inputs are padded to a multiple of it


def pad_for_kernel(q: Tensor, k: Tensor, v: Tensor, g: Tensor) -> tuple[int, tuple[Tensor, ...]]:
    """Contiguous copies of the kernel inputs, padded in time to a multiple of 64 steps.

    Padded steps have no decay (g = 0) and no input (k = v = 0), so they leave the state as it is;
    their outputs are cut off.  fla's chunked kernels failed with a misaligned address on short
    ragged segments (EffRem feeds segments of a few tokens); full chunks avoid that path.
    Returns the original length and the padded tensors.
    """
    t = q.shape[1]
    pad = (-t) % KERNEL_TIME_MULTIPLE
    xs = (q, k, v, g)
    if pad:
        xs = tuple(F.pad(x, (0, 0, 0, 0, 0, pad)) for x in xs)
    return t, tuple(x.contiguous() for x in xs)


def decayed_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    scale: float,
    initial_state: Tensor | None,
    bonus: Tensor | None = None,
    chunk_size: int = REFERENCE_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Linear attention with per-key decay, chunked, in plain torch.

    ``bonus is None`` (GLA): o_t = scale * q_t^T S_t (the current token is in the state).
    ``bonus`` (h, K) (RWKV-6): o_t = scale * q_t^T (S_{t-1} + diag(bonus) k_t v_t^T).
    Returns o (b, t, h, V) in q's dtype and the final state (b, h, K, V) in float32 (float64).
    """
    b, t, h, K = q.shape
    V = v.shape[-1]
    cdt, out_dtype = state_dtype(q, k, v, g, initial_state, bonus), q.dtype
    q, k, v, g = (x.to(cdt).transpose(1, 2) for x in (q, k, v, g))  # (b, h, t, *)
    L = max(1, min(chunk_size, t))
    pad = (-t) % L
    if pad:  # padded steps: no decay (g = 0), no input (k = v = 0); their outputs are cut off
        q, k, v, g = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, g))
    inclusive = bonus is None
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril(0 if inclusive else -1)
    S = torch.zeros(b, h, K, V, dtype=cdt, device=q.device) if initial_state is None else initial_state.to(cdt)
    outs = []
    for start in range(0, t + pad, L):
        qc, kc, vc, gc = (x[:, :, start : start + L] for x in (q, k, v, g))
        c = torch.cumsum(gc, dim=2)  # decay from the chunk start through position s (inclusive)
        e = c if inclusive else c - gc  # the decay the query at t sees: through t, or through t - 1
        o = (qc * torch.exp(e)) @ S
        diff = (e.unsqueeze(3) - c.unsqueeze(2)).masked_fill(~causal[..., None], float("-inf"))
        weights = torch.einsum("bhtk,bhsk,bhtsk->bhts", qc, kc, torch.exp(diff))
        o = o + weights @ vc
        if bonus is not None:
            o = o + (qc * bonus.to(cdt)[None, :, None, :] * kc).sum(-1, keepdim=True) * vc
        outs.append(o * scale)
        c_end = c[:, :, -1:]  # (b, h, 1, K)
        S = torch.exp(c_end).transpose(2, 3) * S + (kc * torch.exp(c_end - c)).transpose(2, 3) @ vc
    o = torch.cat(outs, dim=2)[:, :, :t].transpose(1, 2)
    return o.to(out_dtype), S


def gla_scan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gk: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """GLA: q/k/gk (b, t, h, K) with gk the log decay (<= 0), v (b, t, h, V), state (b, h, K, V).

    Returns o (b, t, h, V) in q's dtype and the final state (b, h, K, V) in float32 (float64 for
    float64 inputs).  ``scale=None`` means K ** -0.5.
    """
    check_linear_attention_shapes("gla_scan", q, k, v, gk, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if use_kernel(backend, "fla", q, k, v, gk, initial_state):
        from fla.ops.gla import chunk_gla

        # fla's own GLA layer keeps its states value-first, (b, h, V, K), and so takes that path of the
        # kernels; ours are (b, h, K, V) and are transposed in and out (a state is small)
        t, (q, k, v, gk) = pad_for_kernel(q, k, v, gk)
        o, state = chunk_gla(
            q, k, v, g=gk, scale=scale,
            initial_state=None if initial_state is None else initial_state.float().transpose(-1, -2).contiguous(),
            output_final_state=True, state_v_first=True,
        )  # fmt: skip
        return o[:, :t], state.float().transpose(-1, -2).contiguous()
    return decayed_attention_reference(q, k, v, gk, scale, initial_state)
