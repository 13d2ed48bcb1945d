"""Evaluation on CUDA with the kernels: streamed loss matches one shot, memory does not grow with length."""

import pytest
import torch
import torch.nn.functional as F

from lengthgen.evaluate import effective_remembrance, positionwise_loss, state_statistics
from lengthgen.models import build_model

DEV = torch.device("cuda")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mamba2", preset="tiny").to(DEV).eval()


def test_streamed_loss_matches_one_shot_on_gpu(model):
    ids = torch.randint(0, model.vocab_size, (2, 1000), device=DEV)
    with torch.no_grad():
        logits, _ = model(ids)
        ref = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    for chunk in (256, 300, 1000):
        torch.testing.assert_close(positionwise_loss(model, ids, chunk), ref, rtol=2e-3, atol=2e-3)


def test_peak_memory_does_not_grow_with_length(model):
    peaks = []
    for length in (8192, 65536):
        ids = torch.randint(0, model.vocab_size, (1, length), device=DEV)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = positionwise_loss(model, ids, 1024)
        assert loss.shape == (1, length - 1) and torch.isfinite(loss).all()
        peaks.append(torch.cuda.max_memory_allocated() - base - loss.numel() * 4 - ids.numel() * 8)
    assert peaks[1] < 1.5 * peaks[0] + (1 << 20), peaks


def test_effrem_and_state_stats_on_gpu(model):
    ids = torch.randint(0, model.vocab_size, (2, 512), device=DEV)
    cuts = [0, 100, 400, 511]
    got = effective_remembrance(model, ids, cuts, chunk_size=128, group_size=2, reduction="none")
    with torch.no_grad():
        p = torch.softmax(model(ids)[0][:, -1].double(), -1)
        ref = torch.stack([0.5 * (p - torch.softmax(model(ids[:, t:])[0][:, -1].double(), -1)).abs().sum(-1)
                           for t in cuts], 1)
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4)
    stats = state_statistics(model, ids, 128)
    assert stats["positions"].tolist() == [127, 255, 383, 511] and torch.isfinite(stats["whole_std"]).all()


@pytest.mark.parametrize("arch", ["mamba2", "mamba1", "gla", "rwkv6"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_replay_the_eager_loss(arch, precision):
    from lengthgen.evaluate import loss_graphs
    from lengthgen.evaluate.runtime import autocast

    torch.manual_seed(0)
    m = build_model(arch, preset="tiny").to(DEV).eval()
    graphs = loss_graphs(m)
    with autocast(DEV, precision):
        for seed in range(2):  # the second call replays the graph captured in the first
            ids = torch.randint(0, m.vocab_size, (2, 4 * 256 + 37), device=DEV,
                                generator=torch.Generator(DEV).manual_seed(seed))
            eager = positionwise_loss(m, ids, 256, graphs=False)
            got = positionwise_loss(m, ids, 256, graphs=graphs)
            torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)
    # call 1: full chunk 1 eager, 2-4 replayed; the 37-token tail eager. Call 2: all four full chunks
    # replayed, the tail captured (second sighting) and replayed.
    assert len(graphs.graphs) == 2 and graphs.replays == 3 + 5, graphs.replays
