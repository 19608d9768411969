"""Terminal output: progress lines while a stage works, one summary line when it ends, tables.

Everything printed here has URL passwords masked (:func:`compkit.redact.mask`).
"""

from __future__ import annotations

import sys

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compkit.redact import mask

# Off a terminal (CI logs, `make ... | tee`) rich would cut tables at 80 columns.
_console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def info(message: str) -> None:
    """A progress line (per fold, per epoch, per trial)."""
    _console.print(mask(message), markup=False)


def summary(message: str) -> None:
    """The one-line summary at the end of a stage."""
    _console.print(f"[bold green]✓[/] {escape(mask(message))}")


def table(frame: pd.DataFrame, title: str) -> None:
    """Print ``frame`` as a table; floats with 4 decimals."""
    out = Table(title=mask(title))
    for column in frame.columns:
        out.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left")
    for row in frame.itertuples(index=False):
        out.add_row(*(f"{v:.4f}" if isinstance(v, float) else mask(str(v)) for v in row))
    _console.print(out)
