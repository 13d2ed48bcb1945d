"""CUDA graphs for streamed evaluation: record one chunk's kernels once, replay them per chunk.

A streamed evaluation runs the same step on chunks of one shape, many times. For the paper's model
sizes the GPU finishes a chunk's kernels sooner than Python can launch them: mamba2-130m on one
chunk of 8,192 tokens takes ~40 ms of host time for ~17 ms of GPU work (bench/README.md, "GPU-bound
and host-bound shapes"). A CUDA graph records every kernel of one call and replays them with one launch.

:class:`ChunkGraphs` wraps a step ``step(*tensors) -> tuple of tensors``. Per input signature
(shapes, dtypes, device, autocast), the first call runs eagerly on a side stream (kernel autotuning
and library workspaces happen there, as capture needs), the second call captures the step into a
graph, and every later call copies its inputs into the graph's input buffers and replays it.
A shape seen once (the short last chunk of a sequence) therefore never pays for a capture.

The outputs of a replay are the graph's own buffers: they are valid until the next call, so the
caller copies what it keeps. A step must not synchronise with the host (no ``.item()``, no
data-dependent Python branching): :meth:`LanguageModel.forward` skips its token-range check while a
capture is under way, so the caller checks the whole input once before streaming. Off CUDA, or
with ``enabled=False``, every call is a plain eager call.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor


def _autocast_key(device: torch.device) -> tuple:
    if device.type != "cuda" or not torch.is_autocast_enabled("cuda"):
        return (False,)
    return (True, torch.get_autocast_dtype("cuda"))


class ChunkGraphs:
    """Eager, then captured, then replayed calls of ``step`` per input signature."""

    def __init__(self, step: Callable[..., tuple[Tensor, ...]], enabled: bool = True):
        self.step = step
        self.enabled = enabled
        self.seen: set[tuple] = set()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor], tuple[Tensor, ...]]] = {}
        self.replays = 0  # how many calls a graph served (tests and benchmarks read it)

    def signature(self, inputs: tuple[Tensor, ...]) -> tuple:
        device = inputs[0].device
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs) + _autocast_key(device)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if not (self.enabled and self.can_capture(inputs)):
            return self.step(*inputs)
        key = self.signature(inputs)
        if key in self.graphs:
            graph, static_in, static_out = self.graphs[key]
            for buffer, t in zip(static_in, inputs):
                buffer.copy_(t)
            graph.replay()
            self.replays += 1
            return static_out
        if key not in self.seen:
            self.seen.add(key)
            return self._side_stream(inputs)
        try:
            graph, static_in, static_out = self._capture(inputs)
        except Exception as e:  # noqa: BLE001 - a step that cannot be captured still runs eagerly
            warnings.warn(f"CUDA graph capture failed ({type(e).__name__}: {e}); streaming without graphs",
                          RuntimeWarning, stacklevel=2)
            self.enabled = False
            return self.step(*inputs)
        self.graphs[key] = (graph, static_in, static_out)
        graph.replay()
        self.replays += 1
        return static_out

    def can_capture(self, inputs: tuple[Tensor, ...]) -> bool:
        """Whether calls on ``inputs`` go through graphs (CUDA tensors); others run eagerly."""
        return inputs[0].is_cuda

    def _side_stream(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        side = torch.cuda.Stream(device=inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            out = self.step(*inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        return out

    def _capture(self, inputs: tuple[Tensor, ...]):
        static_in = [t.clone() for t in inputs]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = tuple(self.step(*static_in))
        return graph, static_in, static_out
