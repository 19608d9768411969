"""The crop to the object at decode time (``competition.crop_to_object``, compkit.photos), on real RGB photos placed as a
catalogue shows products: on a white background, saved as JPEG (its noise included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from compkit.config import ConfigError, load_config
from compkit.data import load_train
from compkit.photos import object_box, read_image_files
from conftest import REPO, dacon_config, write_image_competition

CANVAS = (480, 640)  # H, W of the white catalogue photo


def _real_photos() -> dict[str, np.ndarray]:
    import skimage.data

    return {"cat": skimage.data.chelsea(), "coffee": skimage.data.coffee(), "astronaut": skimage.data.astronaut()}


def _on_white(photo: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``photo`` resized to ``side`` px high, pasted at (top, left) on a white CANVAS: (H, W, 3) uint8."""
    h, w = photo.shape[:2]
    small = np.asarray(Image.fromarray(photo).resize((round(w * side / h), side), Image.Resampling.BILINEAR))
    canvas = np.full((*CANVAS, 3), 255, np.uint8)
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


@pytest.fixture
def catalogue(tmp_path) -> tuple[Path, dict[str, tuple[int, int, int, int]]]:
    """A folder of JPEGs: each real photo on white at its own place and size; returns the folder and each file's true box."""
    folder, boxes = tmp_path / "train", {}
    folder.mkdir()
    for i, (name, photo) in enumerate(_real_photos().items()):
        top, left, side = 40 + 90 * i, 60 + 150 * i, 160 + 30 * i
        canvas = _on_white(photo, top, left, side)
        Image.fromarray(canvas).save(folder / f"{name}.jpg", quality=90)
        width = round(photo.shape[1] * side / photo.shape[0])
        boxes[f"{name}.jpg"] = (top, left, top + side, left + width)
    return folder, boxes


def test_the_box_is_the_photos_place_on_the_white_background(catalogue):
    folder, boxes = catalogue
    for name, (top, left, bottom, right) in boxes.items():
        gray = np.asarray(Image.open(folder / name).convert("L"))
        found = object_box(gray, margin=0.0)
        assert np.abs(np.array(found) - (top, left, bottom, right)).max() <= 4, (name, found, (top, left, bottom, right))
        wide = object_box(gray, margin=0.1)
        assert wide[0] == max(0, found[0] - round(0.1 * (found[2] - found[0]))) and wide[3] == min(CANVAS[1], found[3] + round(0.1 * (found[3] - found[1])))


def test_a_blank_image_is_kept_whole_and_a_speck_is_not_the_object():
    white = np.full(CANVAS, 255, np.uint8)
    assert object_box(white, 0.05) == (0, 0, *CANVAS)
    gray = np.asarray(Image.fromarray(_on_white(_real_photos()["coffee"], 100, 100, 200)).convert("L")).copy()
    gray[5:7, 600:602] = 0  # a 2x2 speck of dirt far from the cup
    top, left, bottom, right = object_box(gray, 0.0)
    assert right < 500 and top >= 90


def test_decoded_pixels_are_the_crop_resized(catalogue):
    """read_image_files with crop_to_object = the file cut to object_box (margin 0.05), then resized; without it, the
    whole canvas resized: the cropped images hold far less white."""
    folder, _ = catalogue
    names = sorted(p.name for p in folder.iterdir())
    plain = dacon_config('competition.layout="image_folder"', "competition.image_shape=[64,64,3]").competition
    cropped = plain.model_copy(update={"crop_to_object": True})
    whole, crops = read_image_files(folder, names, plain), read_image_files(folder, names, cropped)
    for name, crop in zip(names, crops):
        image = Image.open(folder / name).convert("RGB")
        top, left, bottom, right = object_box(np.asarray(image.convert("L")), 0.05)
        expected = np.asarray(image.crop((left, top, right, bottom)).resize((64, 64), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(crop, expected)
    white = lambda pixels: float((pixels.min(axis=-1) > 245).mean())  # noqa: E731
    assert white(crops) < 0.2 < 0.6 < white(whole)


def test_the_cache_keys_the_crop(tmp_path, catalogue):
    """Turning the crop on gives another cache key (a rebuild, not the uncropped pixels read back), and off again the first's."""
    folder, _ = catalogue
    pd.DataFrame({"file": sorted(p.name for p in folder.iterdir()), "photo": ["astronaut", "cat", "coffee"]}).to_csv(
        folder.parent / "labels.csv", index=False)
    options = ['competition.layout="image_folder"', 'competition.train_file="labels.csv"', 'competition.id_column="file"',
               'competition.target_column="photo"', 'competition.classes=["astronaut","cat","coffee"]',
               "competition.image_shape=[48,48,3]", "competition.extra_columns=[]"]
    plain = load_config("dacon-cv-2020", "smoke", options, REPO / "configs").competition
    cropped = load_config("dacon-cv-2020", "smoke", [*options, "competition.crop_to_object=true"], REPO / "configs").competition
    cache = tmp_path / "cache"
    files = []
    for comp in (plain, cropped, plain):
        files.append((np.array(load_train(folder.parent, comp, cache).images), [p.name for p in cache.glob("train-*.npy")]))
    assert files[0][1] != files[1][1] and files[2][1] == files[0][1]
    assert not np.array_equal(files[0][0], files[1][0]) and np.array_equal(files[2][0], files[0][0])


def test_crop_to_object_needs_image_files():
    with pytest.raises(ConfigError, match="competition.crop_to_object crops decoded photos, but layout is 'pixel_csv'"):
        dacon_config("competition.crop_to_object=true")


CATALOGUE = """
[competition]
name = "catalogue"
layout = "image_folder"
train_file = "labels.csv"
id_column = "file"
target_column = "item"
classes = ["astronaut", "cat", "coffee"]
image_shape = [48, 48, 3]
crop_to_object = true
metric = "accuracy"
submission_columns = ["file", "item"]

[folds]
n_splits = 2
stratify = ["item"]
"""


def catalogue_competition(root: Path, per_class: int = 16, tests: int = 4) -> tuple[Path, Path]:
    """Real photos on white JPEG canvases, each at a random place and size (a fifth to a half of the canvas high),
    labelled by photo; a test folder with solution.csv. Returns the data and config folders."""
    data, rng = root / "data", np.random.default_rng(0)
    rows, solution = [], []
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    for name, photo in _real_photos().items():
        for split, count, out in (("train", per_class, rows), ("test", tests, solution)):
            for _ in range(count):
                side = int(rng.integers(CANVAS[0] // 5, CANVAS[0] // 2))
                top, left = int(rng.integers(0, CANVAS[0] - side)), int(rng.integers(0, CANVAS[1] - 2 * side))
                file = f"{split}_{len(out):03d}.jpg"
                Image.fromarray(_on_white(photo, top, left, side)).save(data / split / file, quality=90)
                out.append((file, name))
    return write_image_competition(root, "catalogue", CATALOGUE, ["file", "item"], rows, solution, "cat")


@pytest.mark.slow
def test_a_catalogue_competition_trains_on_crops_and_the_report_shows_them(tmp_path):
    """The whole smoke pipeline on cropped product photos; the leaderboard's private score equals accuracy recomputed
    from the written submission; the report draws each file's box beside its crop."""
    from sklearn.metrics import accuracy_score

    from compkit.cli import main

    data, configs = catalogue_competition(tmp_path)
    argv = ["--competition", "catalogue", "--preset", "smoke", "--config-dir", str(configs), "--data-dir", str(data),
            "--root", str(tmp_path / "run"), "--backbones", "cnn_small", "--set", "train.epochs=1",
            "--set", "train.process_per_fold=false", "--set", "train.width=0.5"]
    assert main(["all", *argv]) == 0 and main(["report", *argv]) == 0
    board = pd.read_csv(tmp_path / "run/submissions/catalogue/leaderboard.csv")
    written = pd.read_csv(tmp_path / "run/submissions/catalogue" / Path(board.loc[0, "file"]).name)
    truth = pd.read_csv(data / "solution.csv").merge(written, on="file", suffixes=("", "_predicted"))
    private = truth[truth["Usage"] == "Private"]
    assert board.loc[0, "private"] == pytest.approx(accuracy_score(private["item"], private["item_predicted"]))
    cached = np.array(load_train(data, load_config("catalogue", "smoke", [], configs).competition,
                                 tmp_path / "run/runs/catalogue/cache").images)
    assert cached.shape == (48, 48, 48, 3) and float((cached.min(axis=-1) > 245).mean()) < 0.2  # crops, not white canvases
    page = (tmp_path / "run/runs/catalogue/report/index.html").read_text()
    assert 'id="crops"' in page and (tmp_path / "run/runs/catalogue/report/crops.png").is_file()
