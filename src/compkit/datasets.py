"""`make data`: build a competition's files from a public data set, for competitions compkit can make itself.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; Zalando: 60,000 train + 10,000 test 28x28 grayscale
images of 10 clothing classes) becomes a local competition in the pixel-CSV layout:
``train.csv`` (id, label, pixel0..pixel783), ``test.csv`` (id, pixels), ``sample_submission.csv``
(id, label) and ``solution.csv`` (id, label, Usage: Public/Private, stratified), Kaggle's
solution-file convention. The images come from Debian's ``dataset-fashion-mnist`` package when it
is installed, else from ``keras.datasets.fashion_mnist`` (downloads: needs internet).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from compkit import console
from compkit.config import Config, Paths
from compkit.errors import CompkitError
from compkit.io import write_csv

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (LeCun's MNIST format): big-endian magic, dimensions, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(source: Path = DEBIAN_FASHION_MNIST) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)): (N, 28, 28) uint8 images and (N,) uint8 labels 0-9.

    Read from the IDX files in ``source`` when present, else downloaded by Keras.

    Raises:
        CompkitError: neither the files nor the network are there.
    """
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if all((source / n).is_file() for n in names):
        x_train, y_train, x_test, y_test = (read_idx(source / n) for n in names)
        return (x_train, y_train), (x_test, y_test)
    import keras

    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception as exc:
        raise CompkitError(
            f"Fashion-MNIST: {source} has no IDX files and the download failed ({type(exc).__name__}); "
            "install Debian's package: apt-get install dataset-fashion-mnist (or run `make setup`)"
        ) from None


def build_fashion_mnist(config: Config, paths: Paths, source: Path = DEBIAN_FASHION_MNIST) -> None:
    """Write the Fashion-MNIST competition's four files into ``paths.data`` (see the module docstring).

    Test ids follow train's (60001..70000); the solution's Public part is a stratified
    ``folds.public_share`` of test.
    """
    comp = config.competition
    (x_train, y_train), (x_test, y_test) = fashion_mnist(source)
    classes = np.asarray(comp.classes, dtype=object)
    pixels = comp.pixel_columns
    train_ids = np.arange(1, len(x_train) + 1)
    test_ids = np.arange(len(x_train) + 1, len(x_train) + len(x_test) + 1)

    def frame(ids, images, **columns):
        out = pd.DataFrame(images.reshape(len(images), -1), columns=pixels)
        for i, (name, values) in enumerate({comp.id_column: ids, **columns}.items()):
            out.insert(i, name, values)
        return out

    id_column, target = comp.submission_columns or [comp.id_column, comp.target_column]
    public, _ = train_test_split(test_ids, train_size=config.folds.public_share, stratify=y_test, random_state=config.folds.seed)
    usage = np.where(np.isin(test_ids, public), "Public", "Private")
    write_csv(frame(train_ids, x_train, **{comp.target_column: classes[y_train]}), paths.data / comp.train_file)
    write_csv(frame(test_ids, x_test), paths.data / comp.test_file)
    write_csv(pd.DataFrame({id_column: test_ids, target: classes[0]}), paths.data / comp.sample_submission)
    write_csv(pd.DataFrame({id_column: test_ids, target: classes[y_test], "Usage": usage}), paths.data / comp.solution_file)
    console.summary(
        f"data: Fashion-MNIST -> {paths.data}: {len(train_ids)} train, {len(test_ids)} test "
        f"({int((usage == 'Public').sum())} public / {int((usage == 'Private').sum())} private in {comp.solution_file})"
    )


BUILDERS = {"fashion_mnist": build_fashion_mnist}


def run(config: Config, paths: Paths) -> None:
    """Stage entry point: build the competition's files, or say where to download them."""
    comp = config.competition
    if not comp.builder:
        raise CompkitError(
            f"{comp.name}: compkit cannot build this competition's files; download them"
            f"{' from ' + comp.url if comp.url else ''} into {paths.data} or pass DATA_DIR=<folder>"
        )
    BUILDERS[comp.builder](config, paths)


def ensure(config: Config, paths: Paths) -> None:
    """Build the data first when the competition has a builder and its train file is missing (for `make all`)."""
    comp = config.competition
    if comp.builder and not (paths.data / comp.train_file).is_file():
        run(config, paths)
