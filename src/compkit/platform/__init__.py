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

Modules: :mod:`~compkit.platform.zips` (zip import), :mod:`~compkit.platform.kaggle` (credentials, client, calls),
:mod:`~compkit.platform.scores` (upload and sync); `make data` and the download are here. The report's section on
the platform's scores is :mod:`compkit.report.platform`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from compkit import console
from compkit.config import Config, Paths
from compkit.errors import PlatformError
from compkit.platform.kaggle import credentials_source, kaggle_api, kaggle_call, kaggle_slug
from compkit.platform.scores import PLATFORM_COLUMNS, lb_sync, load_listing, merge_platform_scores, pushed_kernel, record_upload, save_listing, upload, upload_message
from compkit.platform.zips import import_zip, parent_of, stage_zip

__all__ = ["PLATFORM_COLUMNS", "PlatformError", "credentials_source", "data", "download", "import_zip", "kaggle_api", "kaggle_call",
           "kaggle_slug", "lb_sync", "load_listing", "merge_platform_scores", "pushed_kernel", "record_upload", "save_listing",
           "upload", "upload_message"]


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
    with parent_of(target), tempfile.TemporaryDirectory(dir=target.parent, prefix=f".tmp-{target.name}-download-") as folder:
        kaggle_call("download the files", slug, api.competition_download_files, slug, path=folder, quiet=True)
        zips = sorted(Path(folder).glob("*.zip"))
        if not zips:
            raise PlatformError(f"kaggle: the download of {slug} holds no zip ({sorted(p.name for p in Path(folder).iterdir())})")
        stage_zip(config, paths, zips[0])
    console.summary(f"data: kaggle {slug} -> {target}")
    return target

