"""The geoseg exception tree.

The CLI maps :class:`BadInput` to exit code 2 and every other :class:`GeoSegError` to exit
code 1, so library code raises the class that says whose fault it is and the message says how
to fix it, in one line.
"""

from __future__ import annotations


class GeoSegError(Exception):
    """Base class of every error geoseg raises on purpose (exit code 1)."""

    exit_code = 1


class BadInput(GeoSegError):
    """The user gave something geoseg cannot use (exit code 2).

    Args:
        message: what is wrong and how to fix it, one line.
        param: the argument or option at fault (``"--bands"``, ``"INPUT"``); it prefixes the
            message so the user knows where to look.
    """

    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None):
        self.param = param
        super().__init__(f"{param}: {message}" if param else message)


class OutputExists(BadInput):
    """An output is already there and ``--overwrite`` was not given."""


class ConfigError(BadInput):
    """A configuration file or ``--set`` override is invalid."""
