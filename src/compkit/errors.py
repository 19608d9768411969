"""The one exception family compkit raises for bad input; the CLI prints its message as one line."""

import numpy as np


class CompkitError(Exception):
    """Bad input a user can fix: the message names the file, row or column, and the fix."""


class ConfigError(CompkitError):
    """A configuration file or override that is missing, malformed, or names a bad key/value."""


class DataError(CompkitError):
    """A competition file that is missing or malformed."""


class PlatformError(CompkitError):
    """A platform operation that cannot run: missing credentials, package or network, or a refused request."""


def shown(value) -> str:
    """A cell as the user wrote it, for messages: ``3``, ``'x'``, ``nan`` (not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def line(index: int) -> int:
    """The file line of 0-based data row ``index`` of a one-header CSV, as an editor shows it (header: line 1)."""
    return int(index) + 2
