"""What a non-zero initial state adds to a diagonal recurrence (paper eq. 4, appendix I Figure 14).

For h_t = a_t * h_{t-1} + B_t x_t and y_t = C_t . h_t with a diagonal decay a_t = exp(log_decay_t),
unrolling from h_{-1} gives

    h_t = sum_{s <= t} (prod_{j=s+1..t} a_j) B_s x_s  +  (prod_{j=0..t} a_j) h_{-1}      (4a)
    y_t = C_t . [first term]                           +  C_t . (prod_{j=0..t} a_j) h_{-1} (4b)

so a scan started from h_{-1} equals the zero-initialized scan plus the second terms.  This
module computes those terms, which is what the interventions reason about, and (given B and x)
the whole final state of eq. 4a, as the paper's pseudocode does.

Layout (time-major, state dims last, everything broadcast against the state):
  initial_state  (b, *S)       e.g. Mamba-1 (b, d, n), Mamba-2 (b, h, p, n)
  log_decay      (b, l, *S')   broadcastable to (b, l, *S): Mamba-1 delta*A (b, l, d, n),
                               Mamba-2 dt*A (b, l, h, 1, 1)
  C, B           (b, l, *S'')  broadcastable to (b, l, *S): Mamba-1 (b, l, 1, n), Mamba-2 (b, l, h, 1, n)
  x              (b, l, *S[:-1]) the input already scaled by the step: Mamba-1 delta*u (b, l, d),
                               Mamba-2 dt*x (b, l, h, p)
The output contribution has shape (b, l, *S[:-1]) (the state's last dim is contracted with C).
"""

from __future__ import annotations

import torch
from torch import Tensor


def initial_state_contribution(
    log_decay: Tensor,
    C: Tensor,
    initial_state: Tensor,
    B: Tensor | None = None,
    x: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (y0, final_state).

    y0 (b, l, *S[:-1]) is the initial state's contribution to every output (second term of 4b).
    final_state (b, *S) is the initial state's contribution to the final state, exp(sum log_decay) h_{-1},
    or, when B and x are given, the complete final state of eq. 4a (inputs included).
    """
    if (B is None) != (x is None):
        raise ValueError("initial_state_contribution: pass both B and x (for the full final state) or neither")
    if log_decay.dim() != initial_state.dim() + 1 or log_decay.shape[0] != initial_state.shape[0]:
        raise ValueError(
            "initial_state_contribution: log_decay must be (batch, length, *state_shape) (broadcastable), "
            f"got log_decay {tuple(log_decay.shape)} for a state of shape {tuple(initial_state.shape)}"
        )
    if C.dim() != log_decay.dim():
        raise ValueError(
            f"initial_state_contribution: C must have log_decay's number of dims ({log_decay.dim()}), "
            f"got shape {tuple(C.shape)}"
        )
    cum = torch.cumsum(log_decay, dim=1)  # sum_{j <= t} log a_j
    from_start = torch.exp(cum) * initial_state.unsqueeze(1)  # (prod_{j<=t} a_j) h_{-1}: (b, l, *S)
    y0 = (C * from_start).sum(-1)
    final = from_start[:, -1]
    if B is not None:
        # sum_s (prod_{j=s+1..l-1} a_j) B_s x_s; the product is exp(total - cum_s) with every exponent <= 0
        to_end = torch.exp(cum[:, -1:] - cum)
        final = final + (to_end * B * x.unsqueeze(-1)).sum(1)
    return y0, final
