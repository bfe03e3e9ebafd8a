"""Exception types. A :class:`UserError` is something the user can fix; the CLI prints it as one line."""

from __future__ import annotations


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


class TrainingFailed(RuntimeError):
    """A run stopped for a reason that is recorded (NaN loss, out of memory); the run is marked failed."""
