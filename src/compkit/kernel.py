"""A code competition's platform side: `make upload-bundle` and `make push-kernel` (`make upload` submits the kernel).

- `make upload-bundle`: ``bundle/<competition>/`` (`make package`) as a private Kaggle dataset, the id in its
  dataset-metadata.json (``<owner>/<competition>-compkit-bundle``): ``KaggleApi.dataset_create_new`` the first time,
  ``dataset_create_version`` after.
- `make push-kernel`: ``KaggleApi.kernels_push`` of the bundle folder (kernel-metadata.json: predict.py, internet off,
  the bundle's dataset and the competition as inputs). The version Kaggle numbers it is written to
  ``runs/<competition>/platform/kernel.json`` with the sha256 of the bundle's manifest, so that `make upload`
  (``competition.code_competition = true``: ``KaggleApi.competition_submit_code``) submits that version only while
  the local bundle is still the one pushed.

The bundle is checked against its manifest before anything is sent, and a placeholder owner is refused; credentials
and errors are handled as in compkit.platform (one line, nothing local changed).
"""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from compkit import console
from compkit.artifacts import Layout
from compkit.config import Config, Paths
from compkit.entry import BundleError, check_manifest
from compkit.io import atomic_path
from compkit.package import DATASET_METADATA, KERNEL_METADATA, MANIFEST, NO_OWNER
from compkit.platform import PlatformError, kaggle_api, kaggle_call, kaggle_slug
from compkit.records import sha256_file


def verified_bundle(config: Config, paths: Paths, metadata: str) -> tuple[Path, dict]:
    """``bundle/<competition>/`` after checking every file against manifest.json, and its ``metadata`` file (the
    kernel's or the dataset's) as a dict.

    Raises:
        PlatformError: no bundle, a file that differs from the manifest, unreadable metadata, or an id still holding
            the placeholder owner; names the file and the fix.
    """
    folder, name = Layout(config, paths).bundle_dir, config.competition.name
    if not (folder / MANIFEST).is_file():
        raise PlatformError(f"{folder / MANIFEST}: not found; run `make package COMPETITION={name}` first")
    try:
        check_manifest(folder)
        meta = json.loads((folder / metadata).read_text())
        owner = str(meta["id"]).split("/")[0]
    except BundleError as exc:
        raise PlatformError(str(exc)) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise PlatformError(f"{folder / metadata}: missing or not Kaggle metadata with an id; run `make package "
                            f"COMPETITION={name}` again") from None
    if owner == NO_OWNER:
        raise PlatformError(f"{folder / metadata}: its id has no Kaggle owner ({NO_OWNER}); set bundle.owner in "
                            f"configs/{name}.toml (or --set bundle.owner='you') and run `make package` again")
    return folder, meta


def _dataset_exists(api, dataset: str) -> bool:
    """Whether ``dataset`` (owner/name) exists on Kaggle (``KaggleApi.dataset_status``; a 404 is "no")."""
    import requests

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.dataset_status(dataset)
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return False
        raise
    return True


def upload_bundle(config: Config, paths: Paths) -> None:
    """`make upload-bundle`: the verified bundle as a new Kaggle dataset, or a new version of it (module docstring).

    Raises:
        PlatformError: see :func:`verified_bundle`; no credentials, package or network; Kaggle refused the upload.
    """
    slug = kaggle_slug(config)
    folder, meta = verified_bundle(config, paths, DATASET_METADATA)
    dataset, notes = meta["id"], f"compkit bundle, manifest sha256 {sha256_file(folder / MANIFEST)[:16]}"
    api = kaggle_api()
    if kaggle_call("look up the bundle's dataset", slug, _dataset_exists, api, dataset):
        response = kaggle_call("upload the bundle", slug, api.dataset_create_version, str(folder), notes, quiet=True, dir_mode="skip")
    else:
        response = kaggle_call("upload the bundle", slug, api.dataset_create_new, str(folder), public=not config.bundle.is_private,
                         quiet=True, dir_mode="skip")
    if getattr(response, "error", None):
        raise PlatformError(f"kaggle: the upload of {folder} as {dataset} was refused ({response.error})")
    console.summary(f"upload-bundle: {folder} -> kaggle dataset {dataset} ({notes}); then `make push-kernel`")


def push_kernel(config: Config, paths: Paths) -> dict:
    """`make push-kernel`: ``kernels_push`` of the verified bundle; writes and returns the kernel record (``kernel``
    id, ``version``, ``url``, ``manifest_sha256``, ``pushed`` ISO UTC time).

    Raises:
        PlatformError: see :func:`verified_bundle`; no credentials, package or network; Kaggle refused the kernel
            (its error, or the inputs it could not find); kernel.json is then unchanged.
    """
    slug = kaggle_slug(config)
    folder, meta = verified_bundle(config, paths, KERNEL_METADATA)
    api = kaggle_api()
    response = kaggle_call("push the kernel", slug, api.kernels_push, str(folder))
    invalid = [*getattr(response, "invalid_dataset_sources", []), *getattr(response, "invalid_competition_sources", [])]
    if getattr(response, "error", None) or invalid:
        why = response.error or f"inputs not found: {', '.join(invalid)}; `make upload-bundle` first"
        raise PlatformError(f"kaggle: the push of {meta['id']} was refused ({why})")
    record = {"kernel": meta["id"], "version": response.version_number, "url": response.url,
              "manifest_sha256": sha256_file(folder / MANIFEST), "pushed": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    target = Layout(config, paths).kernel_record
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    console.summary(f"push-kernel: {meta['id']} version {response.version_number} ({response.url}); Kaggle runs it now; "
                    f"`make upload COMPETITION={config.competition.name}` submits that version")
    return record
