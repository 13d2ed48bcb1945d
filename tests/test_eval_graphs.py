"""CUDA-graph streaming of the position-wise loss, checked on the CPU with a stand-in graph.

A real CUDA graph records kernels and later reruns them on the same input and output buffers. The
stand-in reruns the step on the graph's input buffers and writes the results into the same output
tensors on every replay, so it has a graph's aliasing (outputs overwritten by the next replay,
inputs read from buffers) and the streaming logic around it is checked exactly in float64.
tests/gpu/test_eval_gpu.py compares real graphs with eager calls on CUDA.
"""

import pytest
import torch
import torch.nn.functional as F

from lengthgen.evaluate import loss_graphs, positionwise_loss, token_nll
from lengthgen.evaluate.graphs import ChunkGraphs
from lengthgen.models import build_model


class StandInGraph:
    def __init__(self, step, static_in):
        self.step, self.static_in = step, static_in
        self.static_out = tuple(t.clone() for t in step(*static_in))

    def replay(self):
        for buffer, t in zip(self.static_out, self.step(*self.static_in)):
            buffer.copy_(t)


class CPUGraphs(ChunkGraphs):
    captures = 0

    def can_capture(self, inputs):
        return True

    def _side_stream(self, inputs):
        return self.step(*inputs)

    def _capture(self, inputs):
        self.captures += 1
        static_in = [t.clone() for t in inputs]
        graph = StandInGraph(self.step, static_in)
        return graph, static_in, graph.static_out


def stand_in(model):
    g = loss_graphs(model)
    return CPUGraphs(g.step)


@pytest.fixture(scope="module", params=["mamba2", "gla"])
def model(request):
    torch.manual_seed(0)
    return build_model(request.param, preset="tiny").double().eval()


def one_shot(model, ids):
    with torch.no_grad():
        logits, _ = model(ids)
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")


@pytest.mark.parametrize("length,chunk", [(100, 16), (97, 16), (65, 16), (40, 64)])
def test_graphed_stream_equals_eager_and_one_shot(model, length, chunk):
    ids = torch.randint(0, model.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
    graphs = stand_in(model)
    got = positionwise_loss(model, ids, chunk, graphs=graphs)
    eager = positionwise_loss(model, ids, chunk, graphs=False)
    assert torch.equal(got, eager)
    torch.testing.assert_close(got, one_shot(model, ids), rtol=1e-10, atol=1e-10)
    full = (length - 1) // chunk  # chunks with a full set of targets share one signature
    assert graphs.captures == (1 if full >= 2 else 0)
    assert graphs.replays == max(0, full - 1)


def test_graphs_reused_across_calls_capture_once(model):
    graphs = stand_in(model)
    for seed in range(3):
        ids = torch.randint(0, model.vocab_size, (1, 49), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(positionwise_loss(model, ids, 16, graphs=graphs), positionwise_loss(model, ids, 16, graphs=False))
    assert graphs.captures == 1 and graphs.replays == 3 * 3 - 1  # 3 full chunks per call, the first one eager


def test_graphed_stream_from_a_given_state(model):
    ids = torch.randint(0, model.vocab_size, (2, 80), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, state = model(torch.randint(0, model.vocab_size, (2, 30)))
    got = positionwise_loss(model, ids, 16, state=state, graphs=stand_in(model))
    assert torch.equal(got, positionwise_loss(model, ids, 16, state=state, graphs=False))


def test_graphed_stream_checks_the_whole_input_first(model):
    ids = torch.randint(0, model.vocab_size, (1, 64))
    ids[0, 50] = model.vocab_size  # in a chunk a replay would run without the model's own check
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
        positionwise_loss(model, ids, 16, graphs=stand_in(model))


def test_token_range_check_can_be_skipped_but_not_by_default(model):
    bad = torch.tensor([[0, model.vocab_size]])
    with pytest.raises(ValueError, match="does the tokenizer match"):
        model.check_input_ids(bad)
    model.check_input_ids(bad, token_range=False)
    with pytest.raises(ValueError, match="integer tensor"):
        model.check_input_ids(bad.float(), token_range=False)


def test_token_nll_is_the_transposed_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 11, (3, 6), generator=g)
    ref = F.cross_entropy(logits[:, :6].transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(token_nll(logits, targets), ref, rtol=1e-12, atol=1e-12)
    got = token_nll(logits.to(torch.bfloat16), targets)
    assert got.dtype == torch.float32 and got.shape == (3, 6)


def test_no_graphs_off_cuda_and_for_models_without_a_recurrent_state(model):
    g = loss_graphs(model)
    ids = torch.randint(0, model.vocab_size, (1, 40))
    positionwise_loss(model, ids, 8, graphs=g)
    assert g.replays == 0 and not g.graphs  # CPU tensors: every chunk eager
    assert not loss_graphs(torch.nn.Linear(2, 2)).enabled


def test_state_flat_round_trip(model):
    state = model.zero_state(2)
    flat = state.flat()
    assert len(flat) == sum(len(layer) for layer in state.layers)
    again = state.with_flat([t + 1 for t in flat])
    assert again.arch == state.arch and [list(layer) for layer in again.layers] == [list(layer) for layer in state.layers]
    assert all(torch.equal(a, b + 1) for a, b in zip(again.flat(), flat))
    with pytest.raises(ValueError, match="with_flat: got 1 tensors"):
        state.with_flat(flat[:1])
