"""RWKV-6 ("Finch") time mixing with an initial state and a final state.

Per head, with a per-key log decay ``w_t <= 0``, a per-head bonus ``u`` (K,) and S of shape (K, V):

    o_t = scale * r_t^T (S_{t-1} + diag(u) k_t v_t^T)
    S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T

This is fla's convention (its ``naive_recurrent_rwkv6``): ``w`` is the log of the decay and the
query reads the state *before* the current token, which enters only through the bonus.  RWKV-6
itself uses ``scale = 1``, the default here (fla's own default is K ** -0.5, so the scale is
always passed explicitly).  The reference shares GLA's chunked core; GPU: fla's ``chunk_rwkv6``.
"""

from __future__ import annotations

from torch import Tensor

from lengthgen.ops._backend import use_kernel
from lengthgen.ops.gla import check_linear_attention_shapes, decayed_attention_reference, pad_for_kernel


def rwkv6_scan(
    r: Tensor,
    k: Tensor,
    v: Tensor,
    w: Tensor,
    u: Tensor,
    scale: float = 1.0,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """RWKV-6: r/k/w (b, t, h, K) with w the log decay (<= 0), v (b, t, h, V), u (h, K),
    state (b, h, K, V).  Returns o (b, t, h, V) in r's dtype and the final state in float32
    (float64 for float64 inputs).
    """
    check_linear_attention_shapes("rwkv6_scan", r, k, v, w, initial_state)
    if tuple(u.shape) != (r.shape[2], r.shape[3]):
        raise ValueError(f"rwkv6_scan: u must be (heads, key_dim) = {tuple(r.shape[2:])}, got {tuple(u.shape)}")
    if use_kernel(backend, "fla", r, k, v, w, u, initial_state):
        from fla.ops.rwkv6 import chunk_rwkv6

        t, (r, k, v, w) = pad_for_kernel(r, k, v, w)
        o, state = chunk_rwkv6(
            r, k, v, w, u.contiguous(), scale=float(scale),
            initial_state=None if initial_state is None else initial_state.float().contiguous(),
            output_final_state=True,
        )  # fmt: skip
        return o[:, :t], state.float()
    return decayed_attention_reference(r, k, v, w, float(scale), initial_state, bonus=u)
