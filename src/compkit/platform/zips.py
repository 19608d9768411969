"""Zip import: `make data FROM_ZIP=file.zip`, and the last step of the Kaggle download.

Members that would land outside the folder, links, members named twice and zip bombs are refused before anything
is unpacked; only the files the config names are unpacked, into a temporary folder beside the data folder, checked
as `compkit check` does, then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

from compkit import console
from compkit.config import Competition, Config, Limits, Paths
from compkit.errors import CompkitError, PlatformError


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
    with parent_of(target):
        stage_zip(config, paths, archive)
    console.summary(f"data: {archive} -> {target}")
    return target


@contextlib.contextmanager
def parent_of(target: Path):
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


def stage_zip(config: Config, paths: Paths, archive: Path) -> None:
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

