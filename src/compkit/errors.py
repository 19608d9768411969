"""The one exception family compkit raises for bad input; the CLI prints its message as one line."""

import numpy as np


class CompkitError(Exception):
    """Bad input a user can fix: the message names the file, row or column, and the fix."""


def shown(value) -> str:
    """A cell as the user wrote it, for messages: ``3``, ``'x'``, ``nan`` (not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)
