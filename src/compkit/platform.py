"""The competition's platform: data in (`make data`, `FROM_ZIP=`), submissions out (`make upload`), scores back (`make lb-sync`).

``[competition] platform`` says where the competition runs:

- ``kaggle``: the official ``kaggle`` package (``pip install 'compkit[kaggle]'``) downloads the files, uploads a
  submission and lists the user's submissions with their public (and, after the deadline, private) scores.
- ``dacon``: DACON has no official Python client; only the offline parts work (zip import, local leaderboard).
- ``local``: nothing to download or upload (Fashion-MNIST is built by `make data`).

Credentials are the kaggle package's: ``~/.kaggle/kaggle.json`` (or ``$KAGGLE_CONFIG_DIR/kaggle.json``),
``KAGGLE_USERNAME`` + ``KAGGLE_KEY``, or an access token (``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``).
compkit only checks that one of them exists; their values are read by the kaggle package alone and never
printed, logged or written. Without them, or without network, each command fails with one line and changes
nothing local.

Over 400 lines until it becomes a package (zip import, the Kaggle client and its credentials, upload and
sync; issue 26).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from compkit import console, tasks
from compkit.artifacts import Layout
from compkit.config import Competition, Config, Limits, Paths
from compkit.data import has_test, load_sample_submission
from compkit.errors import CompkitError
from compkit.formats import read_submission, submission_format
from compkit.records import sha256_file

if TYPE_CHECKING:
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission

# Columns `make upload` and `make lb-sync` add to leaderboard.csv (after submit.LEADERBOARD_COLUMNS).
PLATFORM_COLUMNS = ["uploaded", "platform_ref", "platform_status", "platform_public", "platform_private"]
# A platform submission matches a leaderboard row when its file name is the row's and it was made no
# earlier than this before the row was written (clock skew between this machine and the platform).
CLOCK_SLACK = timedelta(minutes=10)
LISTING_PAGE_SIZE = 100  # submissions per request of the listing
LISTING_MAX_PAGES = 100  # 10,000 submissions: more than any competition allows


class PlatformError(CompkitError):
    """A platform operation that cannot run: missing credentials, package or network, or a refused request."""


# ---------------------------------------------------------------------------------------------
# Zip import: `make data FROM_ZIP=file.zip` and the last step of the Kaggle download
# ---------------------------------------------------------------------------------------------


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why ``info`` may not be unpacked (an absolute path, a ``..`` part, a link), or None."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (parts and ":" in parts[0]) or ".." in parts:
        return "escapes the folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def _expected(comp: Competition) -> list[str]:
    """The names a competition's folder must hold: the train file (and image folder) and the sample submission."""
    names = [comp.train_file, comp.sample_submission]
    return [*names, comp.train_images] if comp.layout == "image_folder" else names


def _content_root(folder: Path, comp: Competition) -> Path:
    """``folder``, or its single subfolder when the zip wrapped everything in one top folder (``x/train.csv``)."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    if not (folder / comp.train_file).exists() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def _needed(comp: Competition) -> set[str]:
    """Top-level names of the files and folders the config names (each also as ``<name>.zip``): only these are unpacked."""
    names = {comp.train_file, comp.sample_submission, comp.solution_file}
    names |= {comp.train_images, comp.test_images} if comp.layout == "image_folder" else {comp.test_file}
    return names | {f"{n}.zip" for n in names}


def _wanted(info: zipfile.ZipInfo, needed: set[str] | None) -> bool:
    """Whether the member is unpacked: every member without ``needed``, else one named there at the top or in one top folder."""
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return needed is None or bool(parts) and (parts[0] in needed or len(parts) > 1 and parts[1] in needed)


def _check_sizes(archive: Path, members: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse a member whose compression ratio is above ``limits.zip_ratio``, or members unpacking past ``limits.zip_unpacked_gb``."""
    for info in members:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.zip_ratio:
            raise PlatformError(f"{archive}: member {info.filename!r} unpacks to {info.file_size:,} bytes, {ratio:,.0f} times its "
                                f"compressed size (limits.zip_ratio = {limits.zip_ratio:g}; a zip bomb?); refusing to unpack "
                                "(nothing was written); raise limits.zip_ratio if the file is genuine")
    total = sum(info.file_size for info in members)
    if total > limits.zip_unpacked_gb * 1e9:
        raise PlatformError(f"{archive}: the members compkit needs unpack to {total:,} bytes, more than limits.zip_unpacked_gb = "
                            f"{limits.zip_unpacked_gb:g} GB; refusing to unpack (nothing was written); raise the limit if it is genuine")


def _unpack(archive: Path, into: Path, limits: Limits, needed: set[str] | None = None) -> None:
    """Extract the members of ``archive`` named in ``needed`` (every member when None) into ``into``, after checking
    every member (paths, links) and their sizes (:func:`_check_sizes`); raises :class:`PlatformError` on a bad zip or member."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                problem = _member_problem(info)
                if problem:
                    raise PlatformError(f"{archive}: member {info.filename!r} {problem}; refusing to unpack (nothing was written)")
            names = [info.filename for info in zf.infolist()]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise PlatformError(f"{archive}: member {twice[0]!r} is in the zip {names.count(twice[0])} times; refusing to unpack "
                                    "(nothing was written): rebuild the zip with each file once")
            members = [info for info in zf.infolist() if _wanted(info, needed)]
            _check_sizes(archive, members, limits)
            zf.extractall(into, members)
    except zipfile.BadZipFile as exc:
        raise PlatformError(f"{archive}: not a readable zip ({exc}); download it again") from None


def import_zip(config: Config, paths: Paths, archive: Path) -> Path:
    """Unpack ``archive`` into ``paths.data``, check it as `compkit check` does, and only then move it into place.

    The zip may hold the files at its top or inside one top folder (``<slug>/train.csv``). Members are
    refused when they would land outside the folder (absolute paths, ``..``) or are links, and the zip when a member
    unpacks to more than ``limits.zip_ratio`` times its compressed size or the members to more than
    ``limits.zip_unpacked_gb``. Only the files and folders the config names are unpacked (others are skipped). The files are
    unpacked into a temporary folder beside ``paths.data`` and renamed into place after the check passes.

    Returns:
        ``paths.data``.

    Raises:
        PlatformError: the zip is missing or unreadable, a member escapes the folder, an expected file is
            absent, or ``paths.data`` already holds files; nothing local is changed.
        CompkitError: the files fail `compkit check` (the one-line message names the file); nothing is changed.
    """
    archive, target = Path(archive), Path(paths.data)
    if not archive.is_file():
        raise PlatformError(f"{archive}: not found; pass FROM_ZIP=<path of the competition's zip>")
    if target.exists() and any(target.iterdir()):
        raise PlatformError(f"{target}: already holds files; delete the folder or pass DATA_DIR=<new folder> to import {archive.name}")
    with _parent_of(target):
        _stage(config, paths, archive)
    console.summary(f"data: {archive} -> {target}")
    return target


@contextlib.contextmanager
def _parent_of(target: Path):
    """Create ``target``'s parent folders for the block; remove those made here again when the block fails."""
    made = [p for p in target.parents if not p.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:
            if not any(folder.iterdir()):
                folder.rmdir()
        raise


def _unpack_inner(archive: Path, root: Path, name: str, limits: Limits) -> None:
    """Kaggle zips may hold ``<name>.zip`` (``train.csv.zip``, ``train.zip`` of images) instead of ``name``: unpack it."""
    inner = root / f"{name}.zip"
    if (root / name).exists() or not inner.is_file():
        return
    folder = root / f".inner-{name}"
    _unpack(inner, folder, limits)
    inner.unlink()
    entries = list(folder.iterdir())
    # train.csv.zip -> train.csv; train.zip -> train/ (files at its top, or already inside train/)
    source = entries[0] if len(entries) == 1 and entries[0].name == name else folder
    os.replace(source, root / name)
    shutil.rmtree(folder, ignore_errors=True)


def _stage(config: Config, paths: Paths, archive: Path) -> None:
    """Unpack into a temporary folder beside ``paths.data``, check, rename into place; the temporary folder never stays."""
    comp, target = config.competition, Path(paths.data)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        _unpack(archive, staging, config.limits, _needed(comp))
        root = _content_root(staging, comp)
        for name in _expected(comp):
            _unpack_inner(archive, root, name, config.limits)
        missing = [name for name in _expected(comp) if not (root / name).exists()]
        if missing:
            found = sorted(p.name for p in root.iterdir())[:8]
            raise PlatformError(f"{archive}: has no {', '.join(missing)} (found {found}); check competition.train_file, "
                                "sample_submission and the zip")
        from compkit import check

        try:
            check.run(config, replace(paths, data=root))
        except CompkitError as exc:  # the staging folder is deleted: name the file inside the zip instead
            raise type(exc)(str(exc).replace(f"{root}/", f"{archive} member ").replace(str(root), str(archive))) from None
        if target.exists():
            target.rmdir()  # empty (checked above): rename needs the name free
        os.replace(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The Kaggle API: credentials, client, calls
# ---------------------------------------------------------------------------------------------


def _kaggle_dirs() -> list[Path]:
    """Where the kaggle package looks for its files: $KAGGLE_CONFIG_DIR, else ~/.kaggle and ~/.config/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return [Path.home() / ".kaggle", xdg]


def credentials_source(alternative: str = "") -> str:
    """Where the Kaggle credentials are (a description such as ``KAGGLE_USERNAME/KAGGLE_KEY``), never their values.

    Raises:
        PlatformError: none of ``kaggle.json``, ``access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or
            ``KAGGLE_API_TOKEN`` is there.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for folder in _kaggle_dirs():
        if (folder / "kaggle.json").is_file():
            _check_kaggle_json(folder / "kaggle.json")
            return str(folder / "kaggle.json")
        if (folder / "access_token").is_file():
            return str(folder / "access_token")
    where = " or ".join(str(d / "kaggle.json") for d in _kaggle_dirs())
    raise PlatformError(f"kaggle: no credentials: put your API token in {where} (chmod 600), or set KAGGLE_USERNAME "
                        f"and KAGGLE_KEY{alternative}; see README 'On a real competition'")


def _check_kaggle_json(path: Path) -> None:
    """Refuse a ``kaggle.json`` that is not a JSON object with ``username`` and ``key`` strings (values never shown).

    Raises:
        PlatformError: names the file and says how to replace it; nothing was sent to Kaggle.
    """
    try:
        token = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        token = None
    if not isinstance(token, dict) or not all(isinstance(token.get(k), str) and token.get(k) for k in ("username", "key")):
        raise PlatformError(f"{path}: not a Kaggle API token (a JSON object with \"username\" and \"key\"); nothing was sent; "
                            "download it again from kaggle.com/settings (Create New Token)")


def kaggle_api(alternative: str = ""):
    """An authenticated ``kaggle.api.kaggle_api_extended.KaggleApi``; ``alternative`` ends the no-credentials message.

    The package prints help and exits when it cannot authenticate; both are caught here.

    Raises:
        PlatformError: no credentials (checked before the package is imported), the package is not installed,
            or it refused the credentials.
    """
    source = credentials_source(alternative)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi  # `import kaggle` authenticates and prints

            api = KaggleApi()
            api.authenticate()
    except ImportError:
        raise PlatformError("kaggle: the kaggle package is not installed; pip install 'compkit[kaggle]'") from None
    except SystemExit:
        raise PlatformError(f"kaggle: the credentials in {source} were not accepted; create a new API token on "
                            "kaggle.com/settings") from None
    except Exception as exc:  # an unreadable kaggle.json, or an access token checked online without network
        raise PlatformError(f"kaggle: could not use the credentials in {source} ({type(exc).__name__}); "
                            "check that file or variable, and the network") from None
    return api


def kaggle_call(what: str, slug: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with the package's network and HTTP errors turned into one-line :class:`PlatformError`."""
    import requests

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return function(*args, **kwargs)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = {401: "the credentials were refused; create a new API token on kaggle.com/settings",
                403: f"accept the competition's rules on https://www.kaggle.com/competitions/{slug}/rules",
                404: f"not found: check competition.slug ({slug!r}) and, for a bundle or kernel, bundle.owner",
                429: "too many requests (or no submissions left today); try again later"}
        raise PlatformError(f"kaggle: {what} failed with HTTP {status}; {hint.get(status, 'try again later')}") from None
    except requests.RequestException as exc:
        raise PlatformError(f"kaggle: cannot reach Kaggle to {what} ({type(exc).__name__}); check the network "
                            "(nothing local was changed)") from None
    except ValueError as exc:  # the package's own checks of its input (metadata files, ids), before any request
        raise PlatformError(f"kaggle: cannot {what}: {exc}") from None


def kaggle_slug(config: Config) -> str:
    """The Kaggle competition name; raises :class:`PlatformError` when the competition is not on Kaggle."""
    comp = config.competition
    if comp.platform != "kaggle":
        where = f" on {comp.url}" if comp.url else ""
        raise PlatformError(f"competition.platform is {comp.platform!r}: compkit talks only to Kaggle's API; "
                            f"upload and read scores by hand{where}, or set competition.platform = \"kaggle\" and slug")
    return comp.slug or comp.name


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def data(config: Config, paths: Paths, from_zip: Path | None = None) -> None:
    """`make data`: import ``from_zip``; else build the competition (Fashion-MNIST); else download it from Kaggle.

    Raises:
        PlatformError / CompkitError: see :func:`import_zip`, :func:`kaggle_api`; a DACON or local competition
            without a builder says to pass FROM_ZIP.
    """
    from compkit import datasets

    comp = config.competition
    if from_zip is not None:
        import_zip(config, paths, from_zip)
    elif comp.builder:
        datasets.run(config, paths)
    elif comp.platform == "kaggle":
        download(config, paths)
    else:
        where = f" from {comp.url}" if comp.url else ""
        raise PlatformError(f"{comp.name}: compkit cannot download a {comp.platform!r} competition; download its zip{where} and "
                            f"run `make data FROM_ZIP=<zip>`, or unpack it into {paths.data} (or pass DATA_DIR=<folder>)")


def download(config: Config, paths: Paths) -> Path:
    """Download the competition's zip with ``KaggleApi.competition_download_files`` into a temporary folder, then
    :func:`import_zip` it into ``paths.data``. Returns ``paths.data``."""
    slug = kaggle_slug(config)
    target = Path(paths.data)
    if target.exists() and any(target.iterdir()):
        raise PlatformError(f"{target}: already holds files; delete the folder or pass DATA_DIR=<new folder> to download {slug}")
    api = kaggle_api(", or pass FROM_ZIP=<the competition's zip>")
    with _parent_of(target), tempfile.TemporaryDirectory(dir=target.parent, prefix=f".tmp-{target.name}-download-") as folder:
        kaggle_call("download the files", slug, api.competition_download_files, slug, path=folder, quiet=True)
        zips = sorted(Path(folder).glob("*.zip"))
        if not zips:
            raise PlatformError(f"kaggle: the download of {slug} holds no zip ({sorted(p.name for p in Path(folder).iterdir())})")
        _stage(config, paths, zips[0])
    console.summary(f"data: kaggle {slug} -> {target}")
    return target


def read_board(config: Config, paths: Paths) -> tuple[Path, pd.DataFrame]:
    """``submissions/<competition>/leaderboard.csv`` and its rows (:meth:`compkit.artifacts.Layout.read_leaderboard`);
    raises :class:`PlatformError` when there is none."""
    layout = Layout(config, paths)
    if not layout.leaderboard.is_file():
        raise PlatformError(f"{layout.leaderboard}: not found; run `make submit` first")
    return layout.leaderboard, layout.read_leaderboard()


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
    Layout(config, paths).write_leaderboard(record_upload(board, index, int(response.ref), datetime.now(timezone.utc)))
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
    Layout(config, paths).write_leaderboard(merged)
    console.summary(f"lb-sync: {len(submissions)} submissions on kaggle {slug}, {matched} of {len(merged)} leaderboard rows "
                    f"matched -> {board_path}")
