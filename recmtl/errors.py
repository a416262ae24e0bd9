"""The failures a user can act on. The command line prints such an error as one line
(``recmtl: error: ...``) and exits with code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class RecmtlError(Exception):
    """An expected failure whose message names what to fix (a file, a key, a column, a row)."""


class ConfigError(RecmtlError, ValueError):
    """A configuration file or override is invalid; the message names the key and the source."""


class DataError(RecmtlError, ValueError):
    """Bad input data; the message says where (file, row group, column) and what was expected."""


class CollectiveError(RecmtlError, RuntimeError):
    """A step the workers take together failed or timed out on one of them; the message names
    the step, the rank and the time limit (the cause is usually in another worker's log)."""
