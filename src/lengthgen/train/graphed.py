"""A training step's forward, loss, backward and gradient clipping as one CUDA graph, replayed per step.

At the study's shapes the host, not the GPU, sets the pace of a step: Table 1's copying model
(the mamba2-45m shape, 64 rows of 202 tokens) spends ~100 ms launching ~1,200 kernels for ~45 ms of
GPU work (bench ``profile`` section, ``study_steps``). A CUDA graph records every kernel of the
step once and replays them with one launch.

:class:`StepGraphs` wraps ``body(inputs, targets, scale, *state) -> (loss, grad_norm, *final)``
(all tensors; ``state`` is the flattened initial state, empty for zeros). Per input signature
(shapes, dtypes, device) the first call runs eagerly on a side stream (Triton autotuning and library
workspaces happen there, as capture needs), the second is captured and replayed, and every later
call copies its inputs into the graph's buffers and replays it. Both eager and replayed calls run
the same kernels in the same order, so a run gives the same numbers bit for bit whichever call of it
was eager (tests/gpu/test_train_gpu.py), and resuming is exact.

Gradients: the parameters' ``.grad`` must be None when a signature is first run and captured (this
class clears them), so that the captured backward *writes* each gradient into a buffer of the graph
instead of adding to one; after that the replays rewrite the same buffers, and the caller must not
set the gradients to None (the optimizer reads them after each call). The outputs of a replay are
the graph's own buffers, valid until the next call: the caller copies what it keeps.

A body must not synchronise with the host (no ``.item()``, no data-dependent Python branching), and
autocast's weight cache must be off inside it (``torch.autocast(..., cache_enabled=False)``).
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import torch
from torch import Tensor


class StepGraphs:
    """Eager, then captured, then replayed calls of a training-step ``body`` per input signature."""

    def __init__(self, body: Callable[..., tuple[Tensor, ...]], params: Iterable[torch.nn.Parameter]):
        self.body = body
        self.params = list(params)
        self.enabled = True
        self.seen: set[tuple] = set()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor], tuple[Tensor, ...]]] = {}
        self.replays = 0  # how many calls a graph served (tests and benchmarks read it)
        self.capture_error: str | None = None

    @staticmethod
    def signature(inputs: tuple[Tensor, ...]) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        key = self.signature(inputs)
        if key in self.graphs:
            graph, static_in, static_out = self.graphs[key]
            for buffer, t in zip(static_in, inputs):
                buffer.copy_(t, non_blocking=True)
            graph.replay()
            self.replays += 1
            return static_out
        self._clear_grads()
        if self.enabled and key in self.seen:
            try:
                graph, static_in, static_out = self._capture(inputs)
            except Exception as e:  # noqa: BLE001 - a body that cannot be captured still trains eagerly
                self.capture_error = f"{type(e).__name__}: {e}"
                warnings.warn(f"CUDA graph capture of the training step failed ({self.capture_error}); training "
                              "without graphs (set train.cuda_graphs=false to skip the attempt)",
                              RuntimeWarning, stacklevel=2)
                self.enabled = False
                self._clear_grads()
            else:
                self.graphs[key] = (graph, static_in, static_out)
                graph.replay()
                self.replays += 1
                return static_out
        first = key not in self.seen
        self.seen.add(key)
        return self._side_stream(inputs) if self.enabled and first else self.body(*inputs)

    def _clear_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def _side_stream(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        device = inputs[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            out = self.body(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        return out

    def _capture(self, inputs: tuple[Tensor, ...]):
        static_in = [t.clone() for t in inputs]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = tuple(self.body(*static_in))
        return graph, static_in, static_out
