"""Exception types and the CLI's exit codes.

* :class:`UserError` (exit code 2): bad usage or input, something the user can fix; raised before anything is
  written.
* :class:`WorkFailed` (exit code 1): the input was fine and the work ran, but failed (a training diverged, a trial
  of a study failed). What was written is kept and says why.

The CLI prints either as one ``error:`` line (``--debug`` shows the traceback).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error caused by input the user controls (a path, a config key, a CSV column).

    The message must say what is wrong, name the file/row/key, and say what to do.
    The CLI prints it as a single line and exits non-zero (``--debug`` shows the traceback).
    """


class ConfigError(UserError):
    """Invalid configuration: unknown key, wrong type, bad override."""


class DataError(UserError):
    """Invalid or unreadable input data."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WorkFailed(RuntimeError):
    """The work ran and failed for a reason that is recorded (exit code 1, not 2: the input was not at fault)."""


class TrainingFailed(WorkFailed):
    """A run stopped for a reason that is recorded (NaN loss, out of memory); the run is marked failed."""
