"""Credentials kept out of everything compkit shows or records (console lines, errors, W&B runs).

A URL's password is replaced by ``***``, as SQLAlchemy renders it with ``hide_password=True``:
``postgresql://user:s3cret@host/db`` -> ``postgresql://user:***@host/db``.
"""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@ ; the password runs to the last "@" before a blank or quote, so an
# unescaped "@" inside it is masked too.
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s'\"]*", re.IGNORECASE)  # libpq's ?password=


def mask(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL (and ``?password=``) replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _CREDENTIALS.sub(r"\g<head>:***@", text))


def mask_tree(value: Any) -> Any:
    """A copy of ``value`` (nested dicts, lists, tuples, scalars) with :func:`mask` applied to every string in it."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_tree(item) for item in value)
    return value
