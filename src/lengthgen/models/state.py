"""The explicit recurrent state threaded through every model.

A ``RecurrentState`` holds *every* piece of memory a model carries from one token to the next,
so that running a sequence whole or split at any point (with the state carried) gives the same
logits and final state.  It is an immutable container: ``detach``, ``mask``, ``to`` and friends
return new states.

Layout: one dict per layer, mapping a component name to a tensor whose dim 0 is the batch.
Component names used by the models:

``ssm``       the recurrent matrix state; dim 1 is the head (Mamba-1: the channel).
              mamba1 (B, d_inner, N), mamba2 (B, H, P, N), gla (B, H, K, V), rwkv6 (B, H, K, V)
``conv``      the short causal-convolution window, (B, channels, width - 1) (Mamba-1/2)
``shift_tm``  RWKV-6 time-mix token shift: the previous token's normed input, (B, d_model)
``shift_cm``  RWKV-6 channel-mix token shift, (B, d_model)

Interventions address components by name (``intervention.components``: ``ssm`` or ``all``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor

SSM = "ssm"


@dataclass(frozen=True)
class RecurrentState:
    arch: str
    layers: tuple[Mapping[str, Tensor], ...]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_layers(cls, arch: str, layers: Iterable[Mapping[str, Tensor]]) -> "RecurrentState":
        layers = tuple(dict(layer) for layer in layers)
        sizes = {t.shape[0] for layer in layers for t in layer.values()}
        if len(sizes) > 1:
            raise ValueError(f"RecurrentState({arch}): components disagree on batch size: {sorted(sizes)}")
        return cls(arch, layers)

    # ------------------------------------------------------------------ inspection
    @property
    def batch_size(self) -> int:
        for layer in self.layers:
            for t in layer.values():
                return int(t.shape[0])
        raise ValueError("empty RecurrentState has no batch size")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.layers[0].keys()) if self.layers else ()

    @property
    def device(self) -> torch.device:
        return next(iter(self.layers[0].values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.layers[0].values())).dtype

    def tensors(self, components: Iterable[str] | None = None) -> Iterator[tuple[int, str, Tensor]]:
        """Yield (layer index, component name, tensor), optionally restricted to ``components``."""
        wanted = None if components is None else set(components)
        for i, layer in enumerate(self.layers):
            for name, t in layer.items():
                if wanted is None or name in wanted:
                    yield i, name, t

    def flat(self) -> list[Tensor]:
        """Every tensor, layer by layer in component order (the inverse of :meth:`with_flat`)."""
        return [t for _, _, t in self.tensors()]

    def with_flat(self, tensors: Iterable[Tensor]) -> "RecurrentState":
        """A state of this layout holding ``tensors`` (in :meth:`flat`'s order)."""
        tensors = list(tensors)
        expected = sum(len(layer) for layer in self.layers)
        if len(tensors) != expected:
            raise ValueError(f"with_flat: got {len(tensors)} tensors for a layout of {expected}")
        it = iter(tensors)
        return RecurrentState(self.arch, tuple({n: next(it) for n in layer} for layer in self.layers))

    def numel_per_sample(self, components: Iterable[str] | None = None) -> int:
        return sum(t[0].numel() for _, _, t in self.tensors(components))

    # ------------------------------------------------------------------ transformation
    def map(self, fn: Callable[[str, Tensor], Tensor], components: Iterable[str] | None = None) -> "RecurrentState":
        """Apply ``fn(name, tensor)`` to the selected components; others are kept as they are."""
        wanted = None if components is None else set(components)
        return RecurrentState(
            self.arch,
            tuple(
                {n: (fn(n, t) if wanted is None or n in wanted else t) for n, t in layer.items()}
                for layer in self.layers
            ),
        )

    def detach(self) -> "RecurrentState":
        return self.map(lambda _, t: t.detach())

    def clone(self) -> "RecurrentState":
        return self.map(lambda _, t: t.clone())

    def to(self, *args, **kwargs) -> "RecurrentState":
        return self.map(lambda _, t: t.to(*args, **kwargs))

    def mask(self, keep: Tensor, components: Iterable[str] | None = None) -> "RecurrentState":
        """Rows where ``keep`` is False become zero (in the selected components)."""
        keep = torch.as_tensor(keep)
        if keep.dtype != torch.bool or keep.dim() != 1 or keep.shape[0] != self.batch_size:
            raise ValueError(
                f"mask(keep) needs a bool tensor of shape ({self.batch_size},), "
                f"got dtype={keep.dtype} shape={tuple(keep.shape)}"
            )

        drop = ~keep

        def apply(_: str, t: Tensor) -> Tensor:  # one kernel per tensor; NaN/inf rows become 0 too
            return t.masked_fill(drop.to(t.device).view(-1, *([1] * (t.dim() - 1))), 0)

        return self.map(apply, components)

    def zeros_like(self) -> "RecurrentState":
        return self.map(lambda _, t: torch.zeros_like(t))

    def select(self, index: Tensor | slice | list[int]) -> "RecurrentState":
        """Rows of the batch (index along dim 0)."""
        return self.map(lambda _, t: t[index])

    @staticmethod
    def cat(states: list["RecurrentState"]) -> "RecurrentState":
        """Concatenate states of the same architecture along the batch."""
        first = states[0]
        for s in states[1:]:
            if s.arch != first.arch or s.num_layers != first.num_layers:
                raise ValueError("cannot concatenate states of different architectures or depths")
        return RecurrentState(
            first.arch,
            tuple(
                {n: torch.cat([s.layers[i][n] for s in states], 0) for n in first.layers[i]}
                for i in range(first.num_layers)
            ),
        )

    # ------------------------------------------------------------------ (de)serialization
    def state_dict(self) -> dict:
        return {"arch": self.arch, "layers": [dict(layer) for layer in self.layers]}

    @classmethod
    def from_state_dict(cls, d: Mapping) -> "RecurrentState":
        return cls.from_layers(d["arch"], d["layers"])

    # ------------------------------------------------------------------ validation
    def check_compatible(self, reference: "RecurrentState") -> None:
        """Raise a clear error unless this state has the arch and shapes of ``reference``."""
        if self.arch != reference.arch:
            raise ValueError(f"state is for arch {self.arch!r}, but the model is {reference.arch!r}")
        if self.num_layers != reference.num_layers:
            raise ValueError(f"state has {self.num_layers} layers, the model has {reference.num_layers}")
        for i, (mine, ref) in enumerate(zip(self.layers, reference.layers)):
            if set(mine) != set(ref):
                raise ValueError(f"layer {i}: state components {sorted(mine)} != expected {sorted(ref)}")
            for name, t in ref.items():
                if tuple(mine[name].shape) != tuple(t.shape):
                    if mine[name].shape[0] != t.shape[0]:
                        raise ValueError(
                            f"state batch size {mine[name].shape[0]} does not match the input batch size "
                            f"{t.shape[0]} (layer {i}, component {name!r})"
                        )
                    raise ValueError(
                        f"layer {i} component {name!r}: state shape {tuple(mine[name].shape)} "
                        f"!= expected {tuple(t.shape)}"
                    )

    def __repr__(self) -> str:  # compact: shapes, not values
        if not self.layers:
            return f"RecurrentState({self.arch}, empty)"
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in self.layers[0].items())
        return f"RecurrentState({self.arch}, layers={self.num_layers}, {shapes}, dtype={self.dtype})"
