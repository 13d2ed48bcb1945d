"""Effective Remembrance: batched suffixes equal naive per-cut-point runs; distances; errors."""

import pytest
import torch

from lengthgen.evaluate import DISTANCES, effective_remembrance, log_cut_points, suffix_probs
from lengthgen.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mamba2", preset="tiny").double().eval()


@pytest.fixture(scope="module")
def case(model):
    """Inputs, cut points and the naive per-cut-point next-token distributions."""
    torch.manual_seed(1)
    ids = torch.randint(0, model.vocab_size, (2, 13))
    cuts = [0, 12, 3, 7, 1]
    with torch.no_grad():
        full = torch.softmax(model(ids)[0][:, -1], -1)
        suffix = [torch.softmax(model(ids[:, t:])[0][:, -1], -1) for t in cuts]
    return ids, cuts, full, suffix


@pytest.mark.parametrize("dist", ["tv", "js", "cosine"])
def test_batched_equals_naive(model, case, dist):
    ids, cuts, full, suffix = case
    got = effective_remembrance(model, ids, cuts, dist, chunk_size=4, group_size=3, reduction="none")
    ref = torch.stack([DISTANCES[dist](full, q) for q in suffix], 1)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    assert got[:, 0].abs().max() < 1e-7                               # t = 0: the same context
    assert (got >= 0).all() and (got <= 1).all()


def test_mean_reduction(model, case):
    ids, cuts, full, suffix = case
    ref = torch.stack([DISTANCES["tv"](full, q) for q in suffix], 1).mean(0)
    torch.testing.assert_close(effective_remembrance(model, ids, cuts, chunk_size=16, group_size=8), ref,
                               rtol=1e-6, atol=1e-9)


def test_suffix_probs_are_the_suffix_predictions(model):
    torch.manual_seed(2)
    ids = torch.randint(0, model.vocab_size, (1, 12))
    q = suffix_probs(model, ids, [7, 2], chunk_size=3, group_size=1)
    with torch.no_grad():
        for row, t in zip(q, [7, 2]):
            torch.testing.assert_close(row, torch.softmax(model(ids[:, t:])[0][:, -1], -1), rtol=0, atol=1e-12)


def test_distances_on_known_distributions():
    p = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    u = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    for name, d in DISTANCES.items():
        assert float(d(p, p)) == pytest.approx(0.0, abs=1e-12), name
        assert float(d(p, q)) == pytest.approx(1.0), name             # disjoint supports: the maximum
    assert float(DISTANCES["tv"](p, u)) == pytest.approx(2 / 3)
    assert float(DISTANCES["cosine"](p, u)) == pytest.approx(1 - 1 / 3 ** 0.5)


def test_errors(model):
    ids = torch.zeros(1, 10, dtype=torch.long)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 9\]"):
        effective_remembrance(model, ids, [0, 10])
    with pytest.raises(ValueError, match="out of range"):
        effective_remembrance(model, ids, [-1])
    with pytest.raises(ValueError, match="empty"):
        suffix_probs(model, ids, [])
    with pytest.raises(ValueError, match="unknown distance"):
        effective_remembrance(model, ids, [1], "kl")


def test_log_cut_points():
    cuts = log_cut_points(1000, 10)
    assert cuts[0] == 0 and cuts[-1] == 999 and cuts == sorted(set(cuts)) and len(cuts) >= 8
    assert log_cut_points(2, 5) == [0, 1]
