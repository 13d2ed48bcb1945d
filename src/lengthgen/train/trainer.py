"""The training loop: the paper's recipe, gradient accumulation, DDP, checkpoints and exact resume.

``Trainer(model, batches, cfg, run_dir, intervention).fit()`` trains ``model`` on ``batches``
(an iterator of this rank's rows of each optimizer step, with ``state_dict``/``load_state_dict``)
for the steps ``cfg["train"]`` describes, writing the run folder of ``train.checkpoint``. Rerunning
``fit`` on the same folder continues from the last complete checkpoint, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from lengthgen.config import ConfigError
from lengthgen.errors import RunStopped
from lengthgen.interventions import Intervention, Zero
from lengthgen.ops import cross_entropy_sum
from lengthgen.train.budget import batch_layout, milestone_steps, total_steps
from lengthgen.train.checkpoint import (RunDir, RunDirError, copy_model_folder, is_model_folder, rng_state,
                                        set_rng_state, write_folder)
from lengthgen.train.distributed import Dist, resolve_device
from lengthgen.train.graphed import StepGraphs
from lengthgen.train.metrics import Loggers, MetricsLog
from lengthgen.train.optim import build_optimizer, set_schedule
from lengthgen.train.schedule import lr_at, weight_decay_at
from lengthgen.train.stop import StopSignals

IGNORE_INDEX = -100
PRECISIONS = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}


def count_scored(targets: Tensor) -> int:
    """How many targets are scored (not IGNORE_INDEX); host tensors through numpy, single-threaded
    (torch's CPU reductions start its thread pool: milliseconds per step when jobs share the cores)."""
    if targets.device.type == "cpu":
        return int((targets.numpy() != IGNORE_INDEX).sum())
    return int((targets != IGNORE_INDEX).sum())


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm stopped being finite; ``step`` is the 1-based optimizer step."""

    def __init__(self, step: int, what: str, value: float, last_checkpoint: str | None):
        self.step = step
        kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(f"training diverged at step {step}: {what} is {value}; {kept}. "
                         "Lower train.lr, check the data, or use train.precision=fp32")


@dataclass(frozen=True)
class Batch:
    """This rank's rows of one optimizer step: ``targets`` == -100 are not scored; ``reset`` marks
    rows that do not continue the previous step's row (contiguous samplers)."""

    inputs: Tensor
    targets: Tensor
    reset: Tensor | None = None

    @classmethod
    def coerce(cls, item, source=None) -> "Batch":
        if isinstance(item, Batch):
            return item
        if isinstance(item, Tensor):
            if item.dim() != 2 or item.shape[1] < 2:
                raise ValueError(f"a token batch must be (rows, T + 1), got {tuple(item.shape)}")
            return cls(item[:, :-1], item[:, 1:], getattr(source, "reset_rows", None))
        if isinstance(item, (tuple, list)) and len(item) == 2:
            return cls(item[0], item[1], getattr(source, "reset_rows", None))
        raise TypeError(f"batch source yielded {type(item).__name__}; expected a (rows, T + 1) LongTensor, "
                        "an (inputs, targets) pair or a train.Batch")


class Trainer:
    """One training run. ``cfg`` is a resolved config (``train``, ``seed`` and ``run_name`` are read).

    ``peak_lr`` defaults to ``train.lr``; ``dist`` (from :func:`train.distributed.setup`) makes it
    data-parallel. The model is moved to the run's device and precision here.
    """

    def __init__(self, model: nn.Module, batches, cfg: Mapping, run_dir: str | Path,
                 intervention: Intervention | None = None, *, dist: Dist | None = None,
                 peak_lr: float | None = None, log=print):
        self.cfg, self.train = cfg, dict(cfg["train"])
        self.dist = dist or Dist(device=resolve_device(self.train.get("device", "auto")))
        self.log = log if self.dist.is_main else (lambda *a, **k: None)
        self.run = RunDir(run_dir)
        self.layout = batch_layout(self.train, self.dist.world_size)
        self.raw = model
        self.num_params = sum(p.numel() for p in model.parameters())   # unique: a tied weight once
        self.steps = total_steps(self.train, self.layout, self.num_params)
        self.milestones = milestone_steps(self.train.get("milestones"), self.layout, self.num_params, self.steps)
        peak_lr = peak_lr if peak_lr is not None else self.train.get("lr")
        if peak_lr is None:
            raise ConfigError("no peak learning rate: set train.lr (or use a model preset that has one)")
        self.peak_lr = float(peak_lr)
        if self.train["min_lr"] > self.peak_lr:
            raise ConfigError(f"train.min_lr={self.train['min_lr']} exceeds the peak learning rate "
                              f"{self.peak_lr}: lower train.min_lr or raise train.lr")
        self.device = self.dist.device
        precision = self.train.get("precision", "bf16")
        if precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("train.precision=bf16 needs CUDA (bf16 autocast over fp32 weights); "
                              "on the CPU set train.precision=fp32 or fp64")
        graphs = (self.train.get("cuda_graphs", True) and self.device.type == "cuda" and not self.dist.enabled
                  and not self.train.get("compile") and len(self.layout.micro_rows(self.dist.rank)) == 1)
        # a graph replays autocast's casts of the weights: its weight cache must be off
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphs)
                         if precision == "bf16" else contextlib.nullcontext())
        self.raw.to(device=self.device, dtype=PRECISIONS[precision])
        self.model = self.raw
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.train.get("compile"):
            self.model = torch.compile(self.model)
        self.batches = batches
        self.intervention = intervention or Zero()
        if self.intervention.needs_contiguous and not hasattr(batches, "reset_rows"):
            raise ConfigError(f"intervention {self.intervention.name!r} needs the contiguous sampler "
                              "(data.ContiguousStreams), but the batch source is "
                              f"{type(batches).__name__}")
        self.optimizer = build_optimizer(self.raw, self.peak_lr, self.train["weight_decay"], self.train["betas"],
                                         fused=self.device.type == "cuda")
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.graphs = StepGraphs(self._graph_body, self.params) if graphs else None
        self._init_layout = self._final_layout = None  # state layouts for the graph body
        self.metrics = MetricsLog(self.run.metrics)
        self.step = 0

    # ------------------------------------------------------------------ public
    def fit(self) -> dict:
        """Train to ``self.steps`` (resuming if the folder has a checkpoint); returns a summary."""
        if self.dist.is_main:
            self.run.clean_temporaries()
        self.dist.barrier()
        self.step = self._resume()
        self._on_main(self._restore_milestones)
        if self.step >= self.steps and self.run.finished():
            self.log(f"{self.run.root}: already finished ({self.step}/{self.steps} steps); nothing to do")
            return self._summary(self.metrics.record_at(self.step))  # its loss as it was logged
        loggers = Loggers(self.train, self.run.root, self.steps, self.step, self.dist.is_main,
                          self.cfg.get("run_name"), self.cfg)
        last, signum = None, 0
        try:
            with StopSignals() as stop:
                while self.step < self.steps:
                    last = self._train_step(self.step)
                    self.step += 1
                    if self.dist.is_main:
                        self.metrics.write(last)
                        loggers.log(last)
                    milestones = [n for n, s in self.milestones.items() if s == self.step]
                    saved = bool(milestones) or self.step % self.train["checkpoint_every"] == 0 or self.step == self.steps
                    if saved:
                        self.save_checkpoint()
                    for name in milestones:
                        self._on_main(lambda: copy_model_folder(self.run.checkpoint_dir(self.step),
                                                                self.run.milestones / name))
                    signum = self._stop_signal(stop)
                    if signum and self.step < self.steps:
                        if not saved:
                            self.save_checkpoint()
                        raise RunStopped(signum, self.step, self.steps, str(self.run.root))
            self._on_main(lambda: write_folder(self.run.final, self._save_model))
            if signum:  # caught in the last step: the run is complete, the stage stops before what follows it
                raise RunStopped(signum, self.step, self.steps, str(self.run.root))
        finally:
            loggers.close()
            self.metrics.close()
        return self._summary(last)

    def _stop_signal(self, stop: StopSignals) -> int:
        """The number of a stop signal once any rank has caught one, else 0 (:mod:`train.stop`);
        the ranks agree, so all of them stop after the same step."""
        signum = stop.signum or 0
        if self.dist.enabled:
            signum = int(self.dist.all_reduce(torch.tensor([signum], device=self.device), op="max").item())
        return signum

    def save_checkpoint(self) -> None:
        """Write checkpoint ``step_<step>`` (rank 0; the intervention state of every rank)."""
        interventions = self.dist.gather(self.intervention.state_dict())

        def save():
            self.metrics.sync()
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_state(),
                "batches": self.batches.state_dict(),
                "intervention": self.intervention.merge_state_dicts(interventions),
                "world_size": self.dist.world_size,
                "peak_lr": self.peak_lr,
                "steps": self.steps,
            }
            self.run.save_checkpoint(self.step, self._save_model, state, self.train.get("keep_checkpoints"),
                                     protect=tuple(self.milestones.values()))

        self._on_main(save)

    # ------------------------------------------------------------------ one step
    def _train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        lr = lr_at(step, self.steps, self.peak_lr, self.train["min_lr"], self.train["warmup_frac"])
        wd = weight_decay_at(lr, self.peak_lr, self.train["weight_decay"])
        set_schedule(self.optimizer, lr, wd)
        batch = Batch.coerce(next(self.batches), self.batches)
        self._check_batch(batch)
        loss_value, grad_norm = (self._graphed_pass if self.graphs else self._eager_pass)(step, batch)
        self.optimizer.step()
        if self.graphs is None:  # a graph rewrites the gradients it holds (train.graphed)
            self.optimizer.zero_grad(set_to_none=True)
        self.intervention.end_step(self.dist.all_reduce if self.dist.enabled else None)
        # no synchronisation here: the optimizer's kernels are queued on the step's stream, ahead of
        # the next step, and the host prepares that step meanwhile; reading the loss synchronises once
        # per step, so the elapsed time is the step's period in a steady run
        elapsed = time.perf_counter() - t0
        return {"step": step + 1, "loss": loss_value, "lr": lr, "weight_decay": wd, "grad_norm": grad_norm,
                "tokens": (step + 1) * self.layout.tokens_per_step,
                "tokens_per_s": self.layout.tokens_per_step / max(elapsed, 1e-9)}

    def _forward_backward(self, inputs: Tensor, targets: Tensor, scale: Tensor, init) -> tuple[Tensor, object]:
        """Summed loss of one micro-batch (its backward scaled by ``scale``) and the final state."""
        with self.autocast:
            logits, final = self.model(inputs, state=init)
        # fla's fused kernel on CUDA (float32 math, no float32 copy of the logits; the gradient is
        # written over the logits, which nothing reads after the loss), the torch reference elsewhere
        loss = cross_entropy_sum(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), IGNORE_INDEX,
                                 inplace_backward=True)
        (loss * scale.to(loss.dtype)).backward()
        return loss.detach(), final

    def _eager_pass(self, step: int, batch: Batch) -> tuple[float, float]:
        """Forward and backward of every micro-batch, then clipping: (mean loss, gradient norm)."""
        inputs = batch.inputs.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        n_valid = self.dist.all_reduce((targets != IGNORE_INDEX).sum().to(torch.float64))
        if n_valid.item() == 0:
            raise ValueError(f"step {step + 1}: every target of the batch is ignored (-100)")
        scale = self.dist.world_size / n_valid
        first = self.dist.rank * self.layout.rows_per_rank
        micro = self.layout.micro_rows(self.dist.rank)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for j, rows in enumerate(micro):
            local = slice(rows.start - first, rows.stop - first)
            reset = batch.reset[local] if batch.reset is not None else None
            init = self.intervention.initial_state(self.raw, rows, step, device=self.device, reset=reset)
            sync = j == len(micro) - 1 or not self.dist.enabled
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss, final = self._forward_backward(inputs[local], targets[local], scale, init)
            self.intervention.observe(rows, final.detach())
            loss_sum += loss.to(torch.float64)
        loss_value = (self.dist.all_reduce(loss_sum) / n_valid).item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(step + 1, "the loss", loss_value, self._latest_name())
        clip = self.train.get("grad_clip") or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(step + 1, "the gradient norm", grad_norm, self._latest_name())
        return loss_value, grad_norm

    def _graphed_pass(self, step: int, batch: Batch) -> tuple[float, float]:
        """The same step through :class:`train.graphed.StepGraphs` (one process, one micro-batch): the
        batch is checked on the host, the loss and norm are read with one synchronisation."""
        n_valid = count_scored(batch.targets)
        if n_valid == 0:
            raise ValueError(f"step {step + 1}: every target of the batch is ignored (-100)")
        self.raw.check_input_ids(batch.inputs)  # a replay does not check the ids; the batch is on the host
        rows = self.layout.micro_rows(self.dist.rank)[0]
        init = self.intervention.initial_state(self.raw, rows, step, device=self.device, reset=batch.reset)
        self._init_layout = init
        scale = torch.tensor(1.0 / n_valid, dtype=torch.float64).to(self.device, non_blocking=True)
        inputs = batch.inputs.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        loss, norm, *final = self.graphs(inputs, targets, scale, *(() if init is None else init.flat()))
        if self.intervention.keeps_final_state:  # the graph's buffers are rewritten by the next step
            self.intervention.observe(rows, self._final_layout.with_flat(t.clone() for t in final))
        loss_sum, grad_norm = torch.stack([loss.double(), norm.double()]).tolist()
        loss_value = loss_sum / n_valid
        if not math.isfinite(loss_value):
            raise TrainingDiverged(step + 1, "the loss", loss_value, self._latest_name())
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(step + 1, "the gradient norm", grad_norm, self._latest_name())
        return loss_value, grad_norm

    def _graph_body(self, inputs: Tensor, targets: Tensor, scale: Tensor, *init: Tensor) -> tuple[Tensor, ...]:
        state = self._init_layout.with_flat(init) if init else None
        loss, final = self._forward_backward(inputs, targets, scale, state)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.train.get("grad_clip") or math.inf)
        self._final_layout = final = final.detach()  # a kept autograd graph would tie the next capture to this stream
        return (loss, norm, *final.flat())

    def _check_batch(self, batch: Batch) -> None:
        want = (self.layout.rows_per_rank, self.layout.context)
        if tuple(batch.inputs.shape) != want or tuple(batch.targets.shape) != want:
            raise ValueError(f"the batch source gave inputs {tuple(batch.inputs.shape)} / targets "
                             f"{tuple(batch.targets.shape)} on rank {self.dist.rank}, expected {want} "
                             "(rows per rank, train.context): build it with batch_size = train.batch_tokens "
                             "// train.context and context = train.context")

    # ------------------------------------------------------------------ resume and saving
    def _resume(self) -> int:
        ckpt = self.run.latest()
        if ckpt is None:
            if self.dist.is_main:
                self.metrics.truncate_after(0)
            return 0
        from lengthgen.models import load_model

        state = RunDir.load_trainer_state(ckpt)
        if state.get("steps") != self.steps:
            raise RunDirError(f"{ckpt} belongs to a run of {state.get('steps')} steps, this one has "
                              f"{self.steps}; use a new --out folder")
        self.raw.load_state_dict(load_model(ckpt).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.batches.load_state_dict(state["batches"])
        first = self.dist.rank * self.layout.rows_per_rank
        self.intervention.load_state_dict(state["intervention"], rows=range(first, first + self.layout.rows_per_rank))
        if self.dist.is_main:
            self.metrics.truncate_after(state["step"])
        self.log(f"{self.run.root}: resuming from {ckpt.name} (step {state['step']}/{self.steps})")
        return int(state["step"])

    def _restore_milestones(self) -> None:
        """Milestones already passed whose folder is missing or incomplete (a workflow manager may
        delete a rerun job's outputs) are copied back from the milestone's checkpoint."""
        for name, step in self.milestones.items():
            dest = self.run.milestones / name
            if step <= self.step and not is_model_folder(dest):
                source = self.run.checkpoint_dir(step)
                if not is_model_folder(source):
                    raise RunDirError(f"milestone {name} (step {step}) is missing from {dest} and its checkpoint "
                                      f"{source.name} is gone; use a new --out folder to recompute it")
                copy_model_folder(source, dest)

    def _save_model(self, folder: Path) -> None:
        from lengthgen.models import save_model

        save_model(self.raw, folder)

    def _on_main(self, fn) -> None:
        """Run ``fn`` on rank 0; every rank raises if it failed there (no rank is left waiting)."""
        error = None
        if self.dist.is_main:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - re-raised below on every rank
                error = e
        failed = self.dist.broadcast(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if failed is not None:
            raise RuntimeError(f"rank 0 failed to write the run folder: {failed}")

    def _latest_name(self) -> str | None:
        try:
            latest = self.run.latest()
        except RunDirError:
            return None
        return str(latest) if latest else None

    def _summary(self, last: dict | None) -> dict:
        return {"run_dir": str(self.run.root), "steps": self.steps, "step": self.step,
                "num_params": self.num_params, "tokens_per_step": self.layout.tokens_per_step,
                "graph_replays": self.graphs.replays if self.graphs else 0,
                "loss": None if last is None else last["loss"]}
