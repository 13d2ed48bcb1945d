"""The five initial-state interventions, driven through the hooks the trainer uses."""

import pytest
import torch

from lengthgen.interventions import (FittedNoise, INTERVENTIONS, RandomNoise, StatePassing, TBTT, Zero,
                                     build_intervention)
from lengthgen.models import build_model
from lengthgen.models.state import RecurrentState


@pytest.fixture(scope="module")
def model():
    return build_model("mamba2", "tiny", seed=0, d_model=32, n_layers=2, d_state=8, headdim=8).double()


def random_state(model, batch, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    zero = model.zero_state(batch)
    return zero.map(lambda _n, t: torch.randn(t.shape, generator=g, dtype=t.dtype) * scale + shift)


def test_registry_and_config():
    assert set(INTERVENTIONS) == {"zero", "random_noise", "fitted_noise", "state_passing", "tbtt"}
    sp = build_intervention({"name": "state_passing", "p_zero": 0.25, "components": "all"}, seed=3)
    assert isinstance(sp, StatePassing) and sp.p_zero == 0.25 and sp.components == "all" and sp.seed == 3
    assert build_intervention({"name": "random_noise", "sigma": 0.5}).sigma == 0.5
    assert build_intervention({"name": "fitted_noise", "beta": 0.2}).beta == 0.2
    assert isinstance(build_intervention(None), Zero)
    assert TBTT().needs_contiguous and not StatePassing().needs_contiguous
    with pytest.raises(ValueError, match="unknown intervention.name 'noise'"):
        build_intervention({"name": "noise"})
    with pytest.raises(ValueError, match="components"):
        Zero(components="conv")
    with pytest.raises(ValueError, match="p_zero"):
        StatePassing(p_zero=1.5)


def test_zero_is_none(model):
    assert Zero().initial_state(model, range(0, 4), 0) is None


@pytest.mark.parametrize("components", ["ssm", "all"])
def test_random_noise(model, components):
    iv = RandomNoise(components, seed=1, sigma=0.3)
    s = iv.initial_state(model, range(0, 64), step=5)
    for _, name, t in s.tensors():
        if name == "ssm" or components == "all":
            assert abs(t.std().item() - 0.3) < 0.02 and abs(t.mean().item()) < 0.02
        else:
            assert torch.count_nonzero(t) == 0
    # the draw is a function of (seed, step, first row): reproducible, and fresh for a new step/slot
    again = iv.initial_state(model, range(0, 64), step=5)
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(s.tensors(), again.tensors()))
    other = iv.initial_state(model, range(0, 64), step=6)
    assert not torch.equal(s.layers[0]["ssm"], other.layers[0]["ssm"])
    assert not torch.equal(s.layers[0]["ssm"], iv.initial_state(model, range(64, 128), step=5).layers[0]["ssm"])
    assert not torch.equal(s.layers[0]["ssm"], RandomNoise(components, seed=2, sigma=0.3)
                           .initial_state(model, range(0, 64), step=5).layers[0]["ssm"])


def head_stats(states):
    """Per layer: per-head mean and population variance over batch and the head's other dims."""
    x = torch.cat([s.layers[0]["ssm"] for s in states])
    dims = [0] + list(range(2, x.dim()))
    return x.mean(dims), x.var(dims, unbiased=False)


def test_fitted_noise_ema_matches_paper_eq_5_6(model):
    beta = 0.1
    iv = FittedNoise("ssm", seed=0, beta=beta)
    assert iv.initial_state(model, range(0, 2), step=0) is None     # zeros until the first update
    a1, a2 = random_state(model, 3, seed=1), random_state(model, 2, seed=2)   # two micro-batches, step 1
    b = random_state(model, 5, seed=3, scale=2.0, shift=1.0)                  # step 2
    iv.observe(range(0, 3), a1)
    iv.observe(range(3, 5), a2)
    iv.end_step()
    m1, v1 = head_stats([a1, a2])                  # first observation initialises (pooled micro-batches)
    assert torch.allclose(iv.mean[(0, "ssm")], m1, atol=1e-12) and torch.allclose(iv.var[(0, "ssm")], v1, atol=1e-12)
    iv.observe(range(0, 5), b)
    iv.end_step()
    m2, v2 = head_stats([b])
    assert torch.allclose(iv.mean[(0, "ssm")], (1 - beta) * m2 + beta * m1, atol=1e-12)
    assert torch.allclose(iv.var[(0, "ssm")], (1 - beta) * v2 + beta * v1, atol=1e-12)
    assert (0, "conv") not in iv.mean                # components=ssm: only the recurrent state is fitted

    # samples: per layer and head N(mu, sigma^2), conv stays zero
    s = iv.initial_state(model, range(0, 400), step=2)
    mu, var = head_stats([s])
    assert torch.allclose(mu, iv.mean[(0, "ssm")], atol=0.05)
    assert torch.allclose(var.sqrt(), iv.var[(0, "ssm")].sqrt(), rtol=0.05)
    assert torch.count_nonzero(s.layers[0]["conv"]) == 0

    # checkpoint round trip
    fresh = FittedNoise("ssm", seed=0, beta=beta)
    fresh.load_state_dict(iv.state_dict())
    s2 = fresh.initial_state(model, range(0, 400), step=2)
    assert torch.equal(s.layers[1]["ssm"], s2.layers[1]["ssm"])


def test_fitted_noise_reduces_over_ranks(model):
    """Two ranks' sums, all-reduced, give the statistics of the whole batch."""
    a, b = random_state(model, 3, seed=4), random_state(model, 4, seed=5)
    whole = FittedNoise()
    whole.observe(range(0, 7), RecurrentState.cat([a, b]))
    whole.end_step()
    r0, r1 = FittedNoise(), FittedNoise()
    r0.observe(range(0, 3), a)
    r1.observe(range(3, 7), b)
    # the trainer's all_reduce sums each tensor over ranks; end_step calls it in sorted-key order
    other_rank = iter([v for key in sorted(r1._sums) for v in r1._sums[key]])
    r0.end_step(all_reduce=lambda t: t + next(other_rank))
    for key in whole.mean:
        assert torch.allclose(whole.mean[key], r0.mean[key], atol=1e-12)
        assert torch.allclose(whole.var[key], r0.var[key], atol=1e-12)


def test_state_passing(model):
    iv = StatePassing("ssm", seed=0, p_zero=0.0)
    assert iv.initial_state(model, range(0, 4), step=0) is None                # first step: zeros
    f0 = random_state(model, 4, seed=1).map(lambda _n, t: t.requires_grad_())
    f1 = random_state(model, 4, seed=2)
    iv.observe(range(0, 4), f0)
    iv.observe(range(4, 8), f1)                                                 # a second micro-batch slot
    s0 = iv.initial_state(model, range(0, 4), step=1)
    s1 = iv.initial_state(model, range(4, 8), step=1)
    assert torch.equal(s0.layers[1]["ssm"], f0.layers[1]["ssm"]) and not s0.layers[1]["ssm"].requires_grad
    assert torch.equal(s1.layers[0]["ssm"], f1.layers[0]["ssm"])               # each slot passes its own
    assert torch.count_nonzero(s0.layers[0]["conv"]) == 0                       # components=ssm
    every = StatePassing("all", p_zero=0.0)
    every.observe(range(0, 4), f0)
    assert torch.equal(every.initial_state(model, range(0, 4), 1).layers[0]["conv"], f0.layers[0]["conv"])


def test_state_passing_zeroes_rows_with_p_zero(model):
    n = 2000
    iv = StatePassing("all", seed=0, p_zero=0.1)
    final = random_state(model, n, seed=1)
    iv.observe(range(0, n), final)
    s = iv.initial_state(model, range(0, n), step=1)
    zeroed = s.layers[0]["ssm"].flatten(1).abs().sum(1) == 0
    assert 0.07 < zeroed.float().mean().item() < 0.13
    for _, _, t in s.tensors():       # a zeroed row is zero in every layer and component; others untouched
        rows = t.flatten(1)
        assert torch.count_nonzero(rows[zeroed]) == 0
    kept = ~zeroed
    assert torch.equal(s.layers[1]["ssm"][kept], final.layers[1]["ssm"][kept])
    again = iv.initial_state(model, range(0, n), step=1)         # same step -> same rows zeroed
    assert torch.equal(again.layers[0]["ssm"], s.layers[0]["ssm"])


def test_state_passing_checkpoint_rows_and_merge(model):
    rank0, rank1 = StatePassing(p_zero=0.0), StatePassing(p_zero=0.0)
    f = [random_state(model, 2, seed=i) for i in range(4)]
    for i in range(2):
        rank0.observe(range(2 * i, 2 * i + 2), f[i])
        rank1.observe(range(4 + 2 * i, 6 + 2 * i), f[2 + i])
    merged = StatePassing.merge_state_dicts([rank0.state_dict(), rank1.state_dict()])
    assert sorted(merged["passed"]) == [0, 2, 4, 6]
    one = StatePassing(p_zero=0.0)
    one.load_state_dict(merged)                                  # one process takes every slot
    assert torch.equal(one.initial_state(model, range(6, 8), 3).layers[0]["ssm"], f[3].layers[0]["ssm"])
    r1 = StatePassing(p_zero=0.0)
    r1.load_state_dict(merged, rows=range(4, 8))                 # a rank keeps its own rows
    assert sorted(r1.passed) == [4, 6]
    with pytest.raises(ValueError, match="intervention 'state_passing'"):
        TBTT().load_state_dict(merged)


def test_tbtt_resets_wrapped_rows(model):
    iv = TBTT("ssm")
    final = random_state(model, 3, seed=7)
    iv.observe(range(0, 3), final)
    s = iv.initial_state(model, range(0, 3), step=1, reset=torch.tensor([False, True, False]))
    x = s.layers[0]["ssm"]
    assert torch.equal(x[0], final.layers[0]["ssm"][0]) and torch.equal(x[2], final.layers[0]["ssm"][2])
    assert torch.count_nonzero(x[1]) == 0
    full = iv.initial_state(model, range(0, 3), step=9)          # no reset flags: everything carried
    assert torch.equal(full.layers[1]["ssm"], final.layers[1]["ssm"])
    with pytest.raises(ValueError, match="reset flags"):
        iv.initial_state(model, range(0, 3), step=1, reset=torch.tensor([0, 1, 0]))


def test_carried_state_continues_the_sequence(model):
    """TBTT with components=all carries everything: chunked forward == whole forward (float64)."""
    x = torch.randint(0, model.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    whole, _ = model(x)
    iv = TBTT("all")
    outs = []
    for step, chunk in enumerate(x.split(8, dim=1)):
        init = iv.initial_state(model, range(0, 2), step)
        logits, final = model(chunk, state=init)
        iv.observe(range(0, 2), final)
        outs.append(logits)
    assert torch.allclose(torch.cat(outs, 1), whole, atol=1e-10, rtol=0)
