"""State statistics over positions equal a direct computation on each prefix."""

import pytest
import torch

from lengthgen.evaluate import StatsMean, measure_state, state_statistics
from lengthgen.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mamba2", preset="tiny").double().eval()


def test_streamed_stats_equal_direct_prefix_states(model):
    torch.manual_seed(1)
    ids = torch.randint(0, model.vocab_size, (2, 17))
    stats = state_statistics(model, ids, stride=5)
    assert stats["positions"].tolist() == [4, 9, 14, 16]
    for j, p in enumerate(stats["positions"].tolist()):
        with torch.no_grad():
            _, state = model(ids[:, :p + 1])
        ssm = [layer["ssm"] for layer in state.layers]
        whole = torch.cat([s.reshape(2, -1) for s in ssm], 1)
        torch.testing.assert_close(stats["whole_std"][:, j], whole.std(1, unbiased=False), rtol=1e-10, atol=0)
        torch.testing.assert_close(stats["whole_norm"][:, j], whole.norm(dim=1), rtol=1e-10, atol=0)
        for i, s in enumerate(ssm):
            torch.testing.assert_close(stats["layer_std"][:, j, i], s.reshape(2, -1).std(1, unbiased=False))
            for h in range(s.shape[1]):
                torch.testing.assert_close(stats["head_std"][:, j, i, h], s[:, h].reshape(2, -1).std(1, unbiased=False))
                torch.testing.assert_close(stats["head_norm"][:, j, i, h], s[:, h].reshape(2, -1).norm(dim=1))


def test_all_components_include_the_conv_window(model):
    torch.manual_seed(2)
    ids = torch.randint(0, model.vocab_size, (1, 6))
    with torch.no_grad():
        _, state = model(ids)
    every = torch.cat([t.reshape(1, -1) for _, _, t in state.tensors()], 1)
    got = measure_state(state, "all", per_head=False)
    torch.testing.assert_close(got["whole_norm"], every.norm(dim=1))
    assert "head_std" not in got
    with pytest.raises(ValueError, match="no component"):
        measure_state(state, ["nothing"])


def test_stats_mean_table(model):
    torch.manual_seed(3)
    ids = torch.randint(0, model.vocab_size, (3, 8))
    acc = StatsMean()
    acc.update(state_statistics(model, ids[:2], 4))
    acc.update(state_statistics(model, ids[2:], 4))
    frame = acc.frame()
    full = state_statistics(model, ids, 4)
    whole = frame[frame.layer == -1].sort_values("position")
    assert whole["position"].tolist() == [3, 7]
    torch.testing.assert_close(torch.tensor(whole["norm"].to_numpy()), full["whole_norm"].mean(0))
    with pytest.raises(ValueError, match="different lengths"):
        acc.update(state_statistics(model, ids[:, :6], 4))
