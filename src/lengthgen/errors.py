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
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input to a stage; the message names the path or key and the fix (exit status 2)."""


class ModelError(UserError, ValueError):
    """A model folder, checkpoint or hub name that is missing, incomplete, corrupted or of an unknown format."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model folder (or one of its files) that does not exist."""


def one_line(message: str) -> str:
    """``message`` with its lines joined (the CLI prints a user error on one line)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
