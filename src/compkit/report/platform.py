"""The report's "CV vs the platform" section: CV against the local and the platform's scores of each submission,
from the leaderboard columns `make lb-sync` fills (see compkit.platform), drawn only once it has run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def rank_correlations(board: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation of CV with each score column present (local public/private, platform public/private).

    Returns:
        DataFrame ``score, rows, spearman``: one row per score column with at least 3 scored rows.
    """
    from scipy.stats import spearmanr

    rows = []
    for column in ("public", "private", "platform_public", "platform_private"):
        if column in board:
            pair = board[["cv", column]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(pair) >= 3:
                rows.append({"score": column, "rows": len(pair), "spearman": float(spearmanr(pair["cv"], pair[column]).statistic)})
    return pd.DataFrame(rows, columns=["score", "rows", "spearman"])


def platform_figure(board: pd.DataFrame, metric: str):
    """CV (x) against the local public score and the platform's public score (y), one point per submission."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for column, marker, label in (("public", "o", "local public"), ("platform_public", "D", "platform public"),
                                  ("platform_private", "s", "platform private")):
        if column in board and board[column].notna().any():
            ax.scatter(board["cv"], board[column], marker=marker, label=label, alpha=0.8)
    values = board[["cv", *[c for c in ("public", "platform_public", "platform_private") if c in board]]].to_numpy(dtype=float)
    low, high = np.nanmin(values), np.nanmax(values)
    ax.plot([low, high], [low, high], color="grey", ls=":", lw=1, label="score = CV")
    ax.set_xlabel(f"CV (OOF {metric})")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("CV vs local and platform scores")
    return fig


def report_section(page, board: pd.DataFrame | None, metric: str) -> None:
    """Add "CV vs the platform" to the report ``page`` (report.page._Page) when leaderboard.csv holds platform scores."""
    if board is None or "platform_public" not in board or not board["platform_public"].notna().any():
        return
    page.add('<h2 id="platform">CV vs the platform\'s leaderboard</h2>')
    table = rank_correlations(board)
    page.para("Spearman rank correlation of CV with each score over the submissions scored by both: near 1, choosing "
              "by CV also orders the leaderboard; low or negative, the public split is too small or shifted (see "
              "adversarial validation).")
    page.add(table.to_html(index=False, table_id="platform-correlation", float_format=lambda v: f"{v:.4f}", border=0))
    page.add(page.figure("platform.png", platform_figure(board, metric), "CV vs local public vs the platform's public score"))
