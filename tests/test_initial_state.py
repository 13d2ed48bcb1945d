"""Paper eq. 4: a scan from h0 == the zero-initialized scan + the initial state's contribution.

Checked in float64 to 1e-10 for the Mamba-1 (per-(channel, state) decay) and Mamba-2 (per-head
scalar decay) parameterizations, using the ops' own scans as the left-hand side.
"""

import pytest
import torch
import torch.nn.functional as F

from lengthgen.ops import initial_state_contribution, selective_scan, ssd_scan

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def test_mamba1_parameterization():
    g = torch.Generator().manual_seed(0)
    b, d, n, l = 2, 5, 4, 23
    u, delta = torch.randn(b, d, l, dtype=DT, generator=g), torch.randn(b, d, l, dtype=DT, generator=g)
    A = -torch.rand(d, n, dtype=DT, generator=g) * 2 - 0.05
    B, C = torch.randn(b, n, l, dtype=DT, generator=g), torch.randn(b, n, l, dtype=DT, generator=g)
    h0 = torch.randn(b, d, n, dtype=DT, generator=g)

    y_from_h0, s_from_h0 = selective_scan(u, delta, A, B, C, delta_softplus=True, initial_state=h0, backend="torch")
    y_zero, _ = selective_scan(u, delta, A, B, C, delta_softplus=True, backend="torch")

    dt = F.softplus(delta).transpose(1, 2)  # (b, l, d)
    log_decay = dt.unsqueeze(-1) * A  # (b, l, d, n)
    Bt, Ct = B.transpose(1, 2).unsqueeze(2), C.transpose(1, 2).unsqueeze(2)  # (b, l, 1, n)
    y0, final = initial_state_contribution(log_decay, Ct, h0, B=Bt, x=dt * u.transpose(1, 2))

    torch.testing.assert_close(y_zero + y0.transpose(1, 2), y_from_h0, **TOL)
    torch.testing.assert_close(final, s_from_h0, **TOL)
    assert y0.abs().max() > 1e-3  # the initial state matters in this example


def test_mamba2_parameterization():
    g = torch.Generator().manual_seed(1)
    b, l, h, p, groups, n = 2, 30, 4, 3, 2, 5
    x, dt = torch.randn(b, l, h, p, dtype=DT, generator=g), torch.randn(b, l, h, dtype=DT, generator=g)
    A = -torch.rand(h, dtype=DT, generator=g) - 0.05
    B, C = torch.randn(b, l, groups, n, dtype=DT, generator=g), torch.randn(b, l, groups, n, dtype=DT, generator=g)
    h0 = torch.randn(b, h, p, n, dtype=DT, generator=g)

    y_from_h0, s_from_h0 = ssd_scan(x, dt, A, B, C, dt_softplus=True, initial_state=h0, chunk_size=8, backend="torch")
    y_zero, s_zero = ssd_scan(x, dt, A, B, C, dt_softplus=True, chunk_size=8, backend="torch")

    dts = F.softplus(dt)
    log_decay = (dts * A)[..., None, None]  # (b, l, h, 1, 1)
    Bh = B.repeat_interleave(h // groups, 2).unsqueeze(3)  # (b, l, h, 1, n)
    Ch = C.repeat_interleave(h // groups, 2).unsqueeze(3)
    y0, h0_part = initial_state_contribution(log_decay, Ch, h0)
    torch.testing.assert_close(y_zero + y0, y_from_h0, **TOL)
    torch.testing.assert_close(s_zero + h0_part, s_from_h0, **TOL)

    _, final = initial_state_contribution(log_decay, Ch, h0, B=Bh, x=dts[..., None] * x)
    torch.testing.assert_close(final, s_from_h0, **TOL)


def test_contribution_is_linear_in_h0_and_decays():
    g = torch.Generator().manual_seed(2)
    log_decay = -torch.rand(1, 6, 3, 2, dtype=DT, generator=g)
    C = torch.randn(1, 6, 1, 2, dtype=DT, generator=g)
    h0 = torch.randn(1, 3, 2, dtype=DT, generator=g)
    y1, f1 = initial_state_contribution(log_decay, C, h0)
    y2, f2 = initial_state_contribution(log_decay, C, 2 * h0)
    torch.testing.assert_close(y2, 2 * y1, **TOL)
    torch.testing.assert_close(f1, torch.exp(log_decay.sum(1)) * h0, **TOL)
    assert (f1.abs() < h0.abs()).all()


def test_bad_arguments():
    h0 = torch.zeros(1, 3, 2)
    with pytest.raises(ValueError, match="pass both B and x"):
        initial_state_contribution(torch.zeros(1, 4, 3, 2), torch.zeros(1, 4, 1, 2), h0, B=torch.zeros(1, 4, 1, 2))
    with pytest.raises(ValueError, match="log_decay must be"):
        initial_state_contribution(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), h0)
