"""Submissions out and scores back: `make upload` sends the file `make submit` wrote (a code competition: the pushed
kernel), `make lb-sync` lists the user's submissions and writes their platform scores into leaderboard.csv's rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.data import has_test, load_sample_submission
from compkit.errors import PlatformError
from compkit.formats import read_submission, submission_format
from compkit.platform.kaggle import kaggle_api, kaggle_call, kaggle_slug
from compkit.records import sha256_file

if TYPE_CHECKING:
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission

# Columns `make upload` and `make lb-sync` add to leaderboard.csv (after compkit.artifacts.leaderboard.LEADERBOARD_COLUMNS).
PLATFORM_COLUMNS = ["uploaded", "platform_ref", "platform_status", "platform_public", "platform_private"]
# A platform submission matches a leaderboard row when its file name is the row's and it was made no
# earlier than this before the row was written (clock skew between this machine and the platform).
CLOCK_SLACK = timedelta(minutes=10)
LISTING_PAGE_SIZE = 100  # submissions per request of the listing
LISTING_MAX_PAGES = 100  # 10,000 submissions: more than any competition allows


def read_board(config: Config, paths: Paths) -> tuple[Path, pd.DataFrame]:
    """``submissions/<competition>/leaderboard.csv`` and its rows (:meth:`compkit.artifacts.leaderboard.Leaderboard.read`);
    raises :class:`PlatformError` when there is none."""
    layout = Layout(config, paths)
    if not layout.board.path.is_file():
        raise PlatformError(f"{layout.board.path}: not found; run `make submit` first")
    return layout.board.path, layout.board.read()


def upload_message(row: pd.Series) -> str:
    """The submission's description on the platform: its name, blend, backbones and CV (no local paths, no secrets)."""
    return f"{row['name']} | blend {row['blend']} | {row['backbones']} | CV {float(row['cv']):.5f}"[:500]


def _pick_row(board: pd.DataFrame, board_path: Path, file: str | None) -> int:
    """Index of the leaderboard row of ``file`` (a name or path), or of the latest row when None."""
    if board.empty:
        raise PlatformError(f"{board_path}: no submissions; run `make submit` first")
    if file is None:
        return int(board.index[-1])
    rows = board.index[board["file"].astype(str) == Path(file).name]
    if not len(rows):
        raise PlatformError(f"{board_path}: no row for {Path(file).name}; pass FILE= one of {board['file'].tolist()[-5:]}")
    return int(rows[-1])


def upload(config: Config, paths: Paths, file: str | None = None) -> None:
    """`make upload`: submit the latest submission (or ``file``) with ``KaggleApi.competition_submit``; for a code
    competition (``competition.code_competition``) submit the pushed kernel's version instead
    (``competition_submit_code``, its output ``submission.csv``; :func:`pushed_kernel`), the row standing for the
    same ensemble's local predictions.

    The message is :func:`upload_message`; the leaderboard row gets ``uploaded`` (UTC time) and ``platform_ref``.

    Raises:
        PlatformError: not a Kaggle competition, no leaderboard or row, the file is gone or not the one `make submit`
            wrote (:func:`check_submitted`), no pushed kernel for a code competition (:func:`pushed_kernel`), no
            credentials, package or network, or Kaggle refused the upload; leaderboard.csv is then unchanged.
    """
    slug = kaggle_slug(config)
    board_path, board = read_board(config, paths)
    index = _pick_row(board, board_path, file)
    path = paths.submissions / str(board.at[index, "file"])
    if not path.is_file():
        raise PlatformError(f"{path}: not found (listed in {board_path.name}); run `make submit` again")
    check_submitted(config, paths, path, board.loc[index])
    message = upload_message(board.loc[index])
    if config.competition.code_competition:
        kernel = pushed_kernel(config, paths)
        api = kaggle_api()
        response = kaggle_call("submit the kernel", slug, api.competition_submit_code, "submission.csv", message, slug,
                               kernel=kernel["kernel"], kernel_version=kernel["version"], quiet=True)
        what = f"kernel {kernel['kernel']} version {kernel['version']}"
    else:
        api = kaggle_api()
        response = kaggle_call("upload the submission", slug, api.competition_submit, str(path), message, slug, quiet=True)
        what = path.name
    if not getattr(response, "ref", 0):
        raise PlatformError(f"kaggle: the upload of {what} was not accepted ({getattr(response, 'message', '') or 'no reason given'})")
    Layout(config, paths).board.write(record_upload(board, index, int(response.ref), datetime.now(timezone.utc)))
    console.summary(f"upload: {what} -> kaggle {slug} (submission {response.ref}, leaderboard row {path.name}); "
                    "`make lb-sync` reads its score")


def pushed_kernel(config: Config, paths: Paths) -> dict:
    """The kernel record `make push-kernel` wrote (kernel.py), once the bundle on disk is checked to be the one pushed
    (manifest.json's sha256 as recorded), so the kernel version submitted predicts with the local ensemble.

    Raises:
        PlatformError: no record (push first), an unreadable one, or a bundle rebuilt since the push.
    """
    layout, name = Layout(config, paths), config.competition.name
    again = f"run `make upload-bundle push-kernel COMPETITION={name}` (the bundle, then its kernel) first"
    try:
        record = json.loads(layout.kernel_record.read_text())
        kernel, version, pushed = str(record["kernel"]), int(record["version"]), record["manifest_sha256"]
    except FileNotFoundError:
        raise PlatformError(f"{layout.kernel_record}: not found (no kernel pushed); {again}") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise PlatformError(f"{layout.kernel_record}: not a kernel record; {again}") from None
    manifest = layout.bundle_dir / "manifest.json"
    if not manifest.is_file() or sha256_file(manifest) != pushed:
        raise PlatformError(f"{manifest}: not the bundle kernel {kernel} version {version} was pushed with (rebuilt or "
                            f"removed since); {again}")
    return {"kernel": kernel, "version": version}


def check_submitted(config: Config, paths: Paths, path: Path, row: pd.Series) -> None:
    """Refuse to upload ``path`` unless it is the file `make submit` wrote (its ``sha256`` in the leaderboard ``row``) and
    still reads as a valid submission: the sample's columns, valid labels or probabilities, and the test ids in order.

    Raises:
        PlatformError: the file changed since submit, or its row records no digest (an older compkit).
        CompkitError: the file fails validation (names the line and column).
    """
    again = f"run `make submit COMPETITION={config.competition.name}` again and upload its file"
    recorded = row.get("sha256")
    if not isinstance(recorded, str):
        raise PlatformError(f"{path}: leaderboard.csv records no digest of it (an older compkit wrote it); {again}")
    if sha256_file(path) != recorded:
        raise PlatformError(f"{path}: changed since `make submit` wrote it (its sha256 differs from leaderboard.csv's); {again}")
    comp = config.competition
    ids, _ = read_submission(path, submission_format(paths.data, comp), tasks.of(comp))
    sample = load_sample_submission(paths.data, comp)
    if has_test(paths.data, comp) and [str(i) for i in ids] != sample.iloc[:, 0].astype(str).tolist():
        raise PlatformError(f"{path}: its ids are not the sample submission's, in its order; {again}")


def record_upload(board: pd.DataFrame, index: int, ref: int, when: datetime) -> pd.DataFrame:
    """A copy of ``board`` whose row ``index`` records an upload: ``uploaded`` (ISO UTC, seconds) and ``platform_ref``."""
    board = _with_platform_columns(board)
    board.at[index, "uploaded"] = when.astimezone(timezone.utc).isoformat(timespec="seconds")
    board.at[index, "platform_ref"] = ref
    return board


def fetch_submissions(api, slug: str) -> list[ApiSubmission]:
    """Every submission of the user to ``slug``, newest first: ``KaggleApi.competition_submissions``, page by page."""
    out, seen = [], set()
    for page in range(1, LISTING_MAX_PAGES + 1):
        batch = kaggle_call("list the submissions", slug, api.competition_submissions, slug, page_number=page, page_size=LISTING_PAGE_SIZE) or []
        fresh = [s for s in batch if s is not None and s.ref not in seen]
        out.extend(fresh)
        seen.update(s.ref for s in fresh)
        if not fresh:  # past the last page (the server may cap the page size, so a short page is not the end)
            break
    return out


def save_listing(submissions: list[ApiSubmission], path: Path) -> None:
    """Write the listing as the API returns it: ``ApiListSubmissionsResponse`` JSON (camelCase fields), atomically."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsResponse

    from compkit.io import atomic_path

    response = ApiListSubmissionsResponse()
    response.submissions = list(submissions)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json.loads(response.to_json()), indent=2) + "\n")


def load_listing(path: Path) -> list[ApiSubmission]:
    """Read a listing saved by :func:`save_listing` back into the package's ``ApiSubmission`` objects."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsResponse

    try:
        return list(ApiListSubmissionsResponse.from_json(Path(path).read_text()).submissions)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PlatformError(f"{path}: not a saved submission listing ({type(exc).__name__}); run `make lb-sync` again") from None


def _score(text: str | None) -> float:
    """A platform score as float; Kaggle sends it as a string, empty or None while pending."""
    try:
        return float(text) if text not in (None, "") else np.nan
    except ValueError:
        return np.nan


def _with_platform_columns(board: pd.DataFrame) -> pd.DataFrame:
    board = board.copy()
    for column in PLATFORM_COLUMNS:
        if column not in board:
            board[column] = np.nan
    board["uploaded"] = board["uploaded"].astype(object)
    board["platform_status"] = board["platform_status"].astype(object)
    board["platform_ref"] = pd.to_numeric(board["platform_ref"]).astype("Int64")  # "123", not "123.0", in the CSV
    return board


def merge_platform_scores(board: pd.DataFrame, submissions: list[ApiSubmission]) -> tuple[pd.DataFrame, int]:
    """The leaderboard with ``platform_ref/status/public/private`` filled from the platform's listing.

    A submission matches a row when its ``ref`` is the row's recorded ``platform_ref`` (`make upload`), or when its
    ``file_name`` is the row's ``file`` and its ``date`` (UTC) is no earlier than the row's ``time`` minus
    :data:`CLOCK_SLACK`; the recorded ref wins, else the newest complete one. Unmatched rows keep their values, so a second sync of the same listing changes nothing.

    Args:
        board: leaderboard.csv's rows (``time``, ``file``, ...).
        submissions: ``kagglesdk`` ``ApiSubmission`` objects (``ref`` int, ``date`` naive UTC datetime,
            ``file_name`` str, ``status`` SubmissionStatus, ``public_score``/``private_score`` str or None).

    Returns:
        (the new board, the number of rows matched).
    """
    board = _with_platform_columns(board)
    times = pd.to_datetime(board["time"], utc=True)
    matched = 0
    for index in board.index:
        ref = board.at[index, "platform_ref"]
        candidates = [s for s in submissions
                      if (pd.notna(ref) and s.ref == int(ref))  # a code competition's file is the kernel's output
                      or (s.file_name == str(board.at[index, "file"]) and s.date is not None
                          and pd.Timestamp(s.date, tz="UTC") >= times[index] - CLOCK_SLACK)]
        if not candidates:
            continue
        chosen = next((s for s in candidates if pd.notna(ref) and s.ref == int(ref)), None)
        chosen = chosen or max(candidates, key=lambda s: (s.status.name == "COMPLETE", s.date, s.ref))
        board.at[index, "platform_ref"] = chosen.ref
        board.at[index, "platform_status"] = chosen.status.name
        board.at[index, "platform_public"] = _score(chosen.public_score)
        board.at[index, "platform_private"] = _score(chosen.private_score)
        matched += 1
    return board, matched


def lb_sync(config: Config, paths: Paths) -> None:
    """`make lb-sync`: list the user's Kaggle submissions, save the listing to ``runs/<competition>/platform/submissions.json``
    and merge its scores into leaderboard.csv (see :func:`merge_platform_scores`).

    Raises:
        PlatformError: not a Kaggle competition, no leaderboard, no credentials, package or network;
            nothing local is changed then.
    """
    slug = kaggle_slug(config)
    board_path, board = read_board(config, paths)
    api = kaggle_api()
    submissions = fetch_submissions(api, slug)
    merged, matched = merge_platform_scores(board, submissions)
    save_listing(submissions, paths.runs / "platform" / "submissions.json")
    Layout(config, paths).board.write(merged)
    console.summary(f"lb-sync: {len(submissions)} submissions on kaggle {slug}, {matched} of {len(merged)} leaderboard rows "
                    f"matched -> {board_path}")

