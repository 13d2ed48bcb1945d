"""Samplers: determinism, exact resume, DDP partition, TBTT continuity, validation windows."""

import numpy as np
import pytest
import torch

from lengthgen.data.samplers import ContiguousStreams, SamplerError, ShuffledWindows, ValidationSequences

TOKENS = np.arange(1000, dtype=np.uint16)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_shuffled_windows_shape_targets_and_determinism():
    a = take(ShuffledWindows(TOKENS, context=16, batch_size=4, seed=3), 5)
    b = take(ShuffledWindows(TOKENS, context=16, batch_size=4, seed=3), 5)
    c = take(ShuffledWindows(TOKENS, context=16, batch_size=4, seed=4), 5)
    assert all(x.shape == (4, 17) and x.dtype == torch.long for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    for batch in a:  # windows are aligned, contiguous slices of the data
        assert torch.all(batch[:, 0] % 16 == 0)
        assert torch.all(batch[:, 1:] - batch[:, :-1] == 1)


def test_shuffled_windows_epoch_covers_each_window_once_and_reshuffles():
    s = ShuffledWindows(TOKENS, context=10, batch_size=9, seed=0)  # 99 windows, 11 batches/epoch
    assert s.batches_per_epoch == 11
    epoch0 = torch.cat(take(s, 11))[:, 0]
    assert sorted(epoch0.tolist()) == list(range(0, 990, 10))
    epoch1 = torch.cat(take(s, 11))[:, 0]
    assert s.epoch == 1 and sorted(epoch1.tolist()) == sorted(epoch0.tolist())
    assert not torch.equal(epoch0, epoch1)


@pytest.mark.parametrize("cut", [0, 3, 11, 12, 25])
def test_shuffled_windows_resume_is_exact(cut):
    ref = take(ShuffledWindows(TOKENS, context=10, batch_size=9, seed=1), 30)
    s = ShuffledWindows(TOKENS, context=10, batch_size=9, seed=1)
    take(s, cut)
    state = s.state_dict()
    fresh = ShuffledWindows(TOKENS, context=10, batch_size=9, seed=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(take(fresh, 30 - cut), ref[cut:]))


def test_resume_refuses_changed_settings():
    state = ShuffledWindows(TOKENS, context=10, batch_size=9, seed=1).state_dict()
    with pytest.raises(SamplerError, match="seed"):
        ShuffledWindows(TOKENS, context=10, batch_size=9, seed=2).load_state_dict(state)
    with pytest.raises(SamplerError, match="contiguous_streams"):
        ShuffledWindows(TOKENS, context=10, batch_size=9).load_state_dict(
            ContiguousStreams(TOKENS, 10, 9).state_dict())


@pytest.mark.parametrize("cls,kw", [(ShuffledWindows, {"seed": 5}), (ContiguousStreams, {})])
def test_ddp_ranks_partition_the_global_batch(cls, kw):
    single = take(cls(TOKENS, 8, 12, **kw), 15)
    ranks = [take(cls(TOKENS, 8, 12, rank=r, world_size=4, **kw), 15) for r in range(4)]
    for step in range(15):
        parts = [ranks[r][step] for r in range(4)]
        assert all(p.shape == (3, 9) for p in parts)
        assert torch.equal(torch.cat(parts), single[step])


def test_batch_not_divisible_by_world_size():
    with pytest.raises(SamplerError, match="multiple of world_size"):
        ShuffledWindows(TOKENS, 8, 10, world_size=4)


def test_context_longer_than_data():
    with pytest.raises(SamplerError, match="fewer than the global batch"):
        ShuffledWindows(TOKENS, context=500, batch_size=4)
    with pytest.raises(SamplerError, match="parallel streams"):
        ContiguousStreams(TOKENS, context=2000, batch_size=1)


def test_contiguous_streams_rows_continue_exactly_and_flag_wraps():
    s = ContiguousStreams(TOKENS, context=10, batch_size=4)  # 99 windows, streams at 0,24,49,74
    prev = next(s)
    assert s.reset_rows.all()
    assert prev[:, 0].tolist() == [0, 240, 490, 740]
    wraps = 0
    for _ in range(120):
        batch = next(s)
        cont = ~s.reset_rows
        assert torch.equal(prev[cont, -1], batch[cont, 0])  # last target == next first input
        assert torch.all(batch[s.reset_rows, 0] == 0)  # a wrapped row restarts at the beginning
        wraps += int(s.reset_rows.sum())
        prev = batch
    assert wraps == 4  # each stream wrapped once in 121 steps of a 99-window cycle


def test_contiguous_streams_resume_is_exact():
    ref = ContiguousStreams(TOKENS, 10, 4)
    ref_batches = take(ref, 40)
    s = ContiguousStreams(TOKENS, 10, 4)
    take(s, 17)
    fresh = ContiguousStreams(TOKENS, 10, 4)
    fresh.load_state_dict(s.state_dict())
    for i in range(17, 40):
        assert torch.equal(next(fresh), ref_batches[i])


def test_validation_sequences_deterministic_and_disjoint():
    v = ValidationSequences(TOKENS, length=100, num_sequences=4, batch_size=3)
    batches = list(v)
    assert [b.shape for b in batches] == [(3, 101), (1, 101)]
    assert [b.tolist() for b in batches] == [b.tolist() for b in v]
    starts = torch.cat(batches)[:, 0].tolist()
    assert starts == [0, 200, 400, 600] and len(v) == 4
    assert len(ValidationSequences(TOKENS, length=100)) == 9


def test_validation_split_too_short():
    with pytest.raises(SamplerError, match="validation split has 1000 tokens"):
        ValidationSequences(TOKENS, length=16384)
    with pytest.raises(SamplerError, match="too few for 10"):
        ValidationSequences(TOKENS, length=100, num_sequences=10)
