"""Stop a training run between two steps on a signal, with a checkpoint, so that nothing is lost.

``timeout`` sends SIGTERM at its limit, SLURM sends SIGTERM at a job's time limit or on preemption
(and the signal of ``--signal=[B:]SIG@SECONDS`` that long before it), torchrun forwards SIGTERM to
its workers. While :class:`StopSignals` is active, SIGTERM and SIGUSR1 only set a flag: the trainer
finishes the step it is in, writes a checkpoint and raises :class:`lengthgen.errors.RunStopped`; the CLI then exits
with 128 + the signal's number (the shell's code for a run ended by that signal, so a workflow sees
a failed job and keeps no output). The same command resumes from that checkpoint exactly. A second
signal while the checkpoint is written is ignored; SIGKILL cannot be caught (the last periodic
checkpoint is then where the rerun starts, ``train.checkpoint_every``).
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopSignals:
    """Context manager: while active (in the main thread), the stop signals set :attr:`signum`
    instead of ending the process; the previous handlers come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
