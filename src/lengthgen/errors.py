"""The one error path for bad input: :class:`UserError` and the layers' subclasses.

A ``UserError`` is a problem with what the user gave a stage (a config, a model, a checkpoint, data,
an argument), never a bug. Its message is one line that names the file, folder or config key and
says what to do. ``lengthgen.cli.main`` catches ``UserError`` (and only it), prints
``lengthgen <stage>: <message>`` to stderr and returns exit status 2, without a traceback; any
other exception is a bug and keeps its traceback.

The subclasses (each also a built-in error, so existing ``except ValueError`` keep working):

* :class:`lengthgen.config.ConfigError` a config or override that does not fit the schema, or asks
  for something impossible (an eval length that does not fit the data, a CUDA device without CUDA)
* :class:`lengthgen.data.DataError` missing, stale, corrupted or too little prepared data
* :class:`ModelError` a model folder, checkpoint or hub name that cannot be loaded
* :class:`lengthgen.train.RunDirError` a run folder that cannot be used as asked

Not bad input, and not a bug either: :class:`RunStopped`, a training run stopped on a signal with
its checkpoint written (``lengthgen.train.stop``); the CLI prints its one line and exits with
128 + the signal's number.
"""

from __future__ import annotations

import signal


class UserError(Exception):
    """Bad input to a stage; the message names the path or key and the fix (exit status 2)."""


class ModelError(UserError, ValueError):
    """A model folder, checkpoint or hub name that is missing, incomplete, corrupted or of an unknown format."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model folder (or one of its files) that does not exist."""


class RunStopped(Exception):
    """A run stopped on a signal after ``step`` of ``steps``, its checkpoint written in ``run_dir``."""

    def __init__(self, signum: int, step: int, steps: int, run_dir: str):
        self.signum, self.step, self.steps, self.run_dir = signum, step, steps, run_dir
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step} of {steps}; its checkpoint "
                         f"is in {run_dir}: run the same command again to resume from it (exactly)")


def one_line(message: str) -> str:
    """``message`` with its lines joined (the CLI prints a user error on one line)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
