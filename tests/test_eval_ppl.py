"""Streamed position-wise loss, its aggregation, the Def. 3.2 verdict, and the eval-ppl stage."""

import pytest
import torch
import torch.nn.functional as F

from lengthgen.evaluate import (PositionwiseMean, bucket_means, length_generalization, log_buckets, perplexity,
                                positionwise_loss, smooth)
from lengthgen.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mamba2", preset="tiny").double().eval()


def one_shot_loss(model, ids):
    logits, _ = model(ids)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")


@pytest.mark.parametrize("length,chunk_size", [(6, 1), (25, 7), (25, 12), (25, 25), (25, 40)])
def test_streamed_loss_equals_one_shot(model, length, chunk_size):
    torch.manual_seed(1)
    ids = torch.randint(0, model.vocab_size, (2, length))
    ref = one_shot_loss(model, ids)
    got = positionwise_loss(model, ids, chunk_size)
    assert got.shape == (2, length - 1) and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_streamed_loss_continues_from_a_state(model):
    torch.manual_seed(2)
    ids = torch.randint(0, model.vocab_size, (1, 20))
    _, state = model(ids[:, :10])
    torch.testing.assert_close(positionwise_loss(model, ids[:, 10:], 4, state=state),
                               one_shot_loss(model, ids)[:, 10:], rtol=0, atol=1e-10)


def test_bad_inputs_name_the_problem(model):
    with pytest.raises(ValueError, match="at least 2"):
        positionwise_loss(model, torch.zeros(1, 1, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="chunk_size"):
        positionwise_loss(model, torch.zeros(1, 8, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="integer token ids"):
        positionwise_loss(model, torch.zeros(1, 8), 4)
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        positionwise_loss(model, torch.zeros(8, dtype=torch.long), 4)


class NaNAfter(torch.nn.Module):
    """The model, with NaN logits from absolute position ``start`` on (counted across chunks)."""

    def __init__(self, model, start):
        super().__init__()
        self.model, self.start, self.seen = model, start, 0

    def forward(self, ids, state=None):
        logits, state = self.model(ids, state=state)
        first = max(0, self.start - self.seen)
        self.seen += ids.shape[1]
        logits = logits.clone()
        logits[:, first:] = float("nan")
        return logits, state


@pytest.mark.parametrize("chunk_size", [4, 25])
def test_nan_logits_name_the_first_bad_position(model, chunk_size):
    ids = torch.randint(0, model.vocab_size, (2, 25))
    with pytest.raises(FloatingPointError, match=r"non-finite loss at position 13 \(of 24 scored\).*eval.precision=fp32"):
        positionwise_loss(NaNAfter(model, 13), ids, chunk_size)


def test_positionwise_mean_and_buckets():
    acc = PositionwiseMean(10)
    acc.update(torch.arange(10.0).repeat(2, 1))
    acc.update(torch.arange(10.0)[None] + 3)
    curve = acc.mean()
    torch.testing.assert_close(curve, torch.arange(10.0, dtype=torch.float64) + 1)
    assert log_buckets(10) == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 10)]
    assert log_buckets(8) == [(0, 1), (1, 2), (2, 4), (4, 8)]
    assert bucket_means(curve, log_buckets(10)) == [1.0, 2.0, 3.5, 6.5, 9.5]
    assert perplexity(torch.full((5,), 2.0)) == pytest.approx(torch.e ** 2)
    with pytest.raises(ValueError, match="empty"):
        PositionwiseMean(3).mean()
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.zeros(1, 9))


def test_smoothing():
    curve = torch.tensor([4.0, 2.0, 3.0, 1.0, 5.0])
    torch.testing.assert_close(smooth(curve, 2), torch.tensor([4.0, 3.0, 2.5, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(smooth(curve, 2, "bucket"), torch.tensor([3.0, 3.0, 2.0, 2.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(smooth(curve, 1), curve.double())
    with pytest.raises(ValueError, match="unknown smoothing"):
        smooth(curve, 2, "gaussian")


def test_verdict_on_known_curves():
    T = 16
    falling = 3.0 / torch.arange(1, 129, dtype=torch.float64).sqrt()
    v = length_generalization(falling, T, window=1)
    assert v.generalizes and v.first_violation is None and v.t_star == T - 1
    assert v.p_star == pytest.approx(float(falling[T - 1]))
    assert v.far_bucket == (64, 128) and v.loss_far == pytest.approx(float(falling[64:].mean()))
    assert v.far_gap < 0 and not v.fails_far

    rising = falling.clone()
    rising[40:] = falling[T - 1] + 0.2                       # worse than the best in-context loss after 40
    v = length_generalization(rising, T, window=1)
    assert not v.generalizes and v.first_violation == 40 and v.t_star == T - 1
    assert v.far_gap == pytest.approx(0.2) and v.fails_far and not v.far_applicable   # 64 < 16 * 16
    assert length_generalization(rising, T, window=1, tolerance=0.25).generalizes
    assert length_generalization(rising, 4, window=1).far_applicable                    # 64 >= 16 * 4

    d = v.to_dict()
    assert d["far_bucket"] == [64, 128] and d["generalizes"] is False


def test_verdict_errors():
    with pytest.raises(ValueError, match="longer than the training context"):
        length_generalization(torch.ones(16), 16)
    with pytest.raises(ValueError, match="NaN"):
        length_generalization(torch.tensor([1.0, float("nan"), 1.0]), 1)


@pytest.mark.parametrize("smoothing,window", [("moving_average", None), ("bucket", 7), ("bucket", None)])
def test_bootstrap_p_star_equals_smoothing_the_whole_resampled_curves(smoothing, window):
    """The intervals smooth only the windows covering [0, T); that is the same p* as smoothing every
    resampled curve whole (T = 60 is not a multiple of 7: the straddling bucket counts)."""
    from lengthgen.evaluate import verdict as vd

    T = 60
    losses = 2.0 + torch.randn(12, 300, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = length_generalization(None, T, smoothing=smoothing, window=window, losses=losses, num_bootstrap=50, seed=5)
    w = v.window
    whole = torch.cat([torch.stack([vd.smooth(c, w, smoothing)[:T].min() for c in block])
                       for block in vd._resample_means(losses, 50, 5)])
    assert v.p_star_ci == pytest.approx(vd._interval(whole, 0.95, v.p_star), abs=1e-12)
