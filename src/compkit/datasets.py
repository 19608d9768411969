"""`make data`: build a competition's files from a public data set, for competitions compkit can make itself.

Digit sequences (``builder = "digit_sequences"``) are numbers of 1 to ``competition.sequence_length`` digits composed,
as SVHN's house numbers are read (Goodfellow et al., 2013), from real handwritten digits: scikit-learn's
``load_digits`` (1,797 8x8 images, gray 0-16; shipped with scikit-learn, no download), each scaled to 0-255 and
upscaled to ``image_shape``'s height, placed left to right in slots of that width (unused slots blank). Train and
test numbers draw their digits from disjoint halves of the images, so no image is in both.

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
from compkit.errors import CompkitError, ConfigError
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
    train_ids = np.arange(1, len(x_train) + 1)
    test_ids = np.arange(len(x_train) + 1, len(x_train) + len(x_test) + 1)
    public, _ = train_test_split(test_ids, train_size=config.folds.public_share, stratify=y_test, random_state=config.folds.seed)
    _write_competition(config, paths, (train_ids, x_train, classes[y_train]), (test_ids, x_test, classes[y_test]),
                       np.where(np.isin(test_ids, public), "Public", "Private"))


# Rows of the digit-sequence competition: 6,000 numbers to train on, 2,000 to submit (Fashion-MNIST's 6:1 train share
# halved on the test side: the 2,000 test numbers still give a public/private split of a few hundred per length).
SEQUENCE_TRAIN_ROWS, SEQUENCE_TEST_ROWS = 6000, 2000
DIGIT_SIDE, DIGIT_LEVELS = 8, 16  # load_digits: 8x8 images, gray levels 0-16


def digit_halves(seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's handwritten digits split into two disjoint halves by a ``seed``-ed shuffle:
    ((images, labels), (images, labels)), images (n, 8, 8) uint8 gray 0-255, labels (n,) int64 digits 0-9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * 255 / DIGIT_LEVELS).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    first, second = np.array_split(order, 2)
    return (images[first], digits.target[first]), (images[second], digits.target[second])


def compose(images: np.ndarray, labels: np.ndarray, rows: int, length: int, scale: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` numbers of 1 to ``length`` digits (lengths uniform), each digit a random one of the (n, 8, 8) uint8
    ``images`` (``labels`` their digits) upscaled ``scale`` times, placed left to right.

    Returns:
        (rows, 8 * scale, 8 * scale * length) uint8 canvases, blank past the number, and (rows,) object array of the
        numbers as text (leading zeros kept).
    """
    side = DIGIT_SIDE * scale
    canvases = np.zeros((rows, side, side * length), dtype=np.uint8)
    numbers = []
    for row, size in enumerate(rng.integers(1, length + 1, rows)):
        picked = rng.integers(0, len(images), size)
        for slot, image in enumerate(images[picked]):
            canvases[row, :, slot * side:(slot + 1) * side] = np.kron(image, np.ones((scale, scale), dtype=np.uint8))
        numbers.append("".join(str(d) for d in labels[picked]))
    return canvases, np.array(numbers, dtype=object)


def build_digit_sequences(config: Config, paths: Paths, train_rows: int = SEQUENCE_TRAIN_ROWS,
                          test_rows: int = SEQUENCE_TEST_ROWS) -> None:
    """Write the digit-sequence competition's four files into ``paths.data`` (see the module docstring): ``train_rows``
    numbers from one half of the digits, ``test_rows`` from the other; test ids follow train's; the solution's Public
    part is a ``folds.public_share`` of test, stratified by length.

    Raises:
        ConfigError: ``competition.image_shape`` is not [8 s, 8 s * sequence_length, 1] for a whole upscale s.
    """
    comp, seed = config.competition, config.folds.seed
    height, width, channels = comp.image_shape
    scale = height // DIGIT_SIDE
    if scale < 1 or height != DIGIT_SIDE * scale or width != height * comp.sequence_length or channels != 1:
        raise ConfigError(f"competition.image_shape {comp.image_shape}: digit sequences are gray canvases of "
                          f"sequence_length ({comp.sequence_length}) square slots of a multiple of {DIGIT_SIDE} pixels; "
                          f"set it to e.g. [16, {16 * comp.sequence_length}, 1]")
    (train_images, train_labels), (test_images, test_labels) = digit_halves(seed)
    rng = np.random.default_rng(seed)
    x_train, y_train = compose(train_images, train_labels, train_rows, comp.sequence_length, scale, rng)
    x_test, y_test = compose(test_images, test_labels, test_rows, comp.sequence_length, scale, rng)
    train_ids = np.arange(1, train_rows + 1)
    test_ids = np.arange(train_rows + 1, train_rows + test_rows + 1)
    lengths = np.array([len(n) for n in y_test])
    public, _ = train_test_split(test_ids, train_size=config.folds.public_share, stratify=lengths, random_state=seed)
    _write_competition(config, paths, (train_ids, x_train, y_train), (test_ids, x_test, y_test),
                       np.where(np.isin(test_ids, public), "Public", "Private"))


def _write_competition(config: Config, paths: Paths, train: tuple, test: tuple, usage: np.ndarray) -> None:
    """train.csv, test.csv, sample_submission.csv and solution.csv of (ids, (N, H, W) uint8 images, (N,) labels as
    written) ``train`` and ``test`` and the test rows' ``usage`` (Public / Private), in the pixel-CSV layout."""
    comp = config.competition
    id_column, target = comp.submission_columns or [comp.id_column, comp.target_column]

    def frame(ids, images, **columns):
        out = pd.DataFrame(images.reshape(len(images), -1), columns=comp.pixel_columns)
        for i, (name, values) in enumerate({comp.id_column: ids, **columns}.items()):
            out.insert(i, name, values)
        return out

    (train_ids, x_train, y_train), (test_ids, x_test, y_test) = train, test
    write_csv(frame(train_ids, x_train, **{comp.target_column: y_train}), paths.data / comp.train_file)
    write_csv(frame(test_ids, x_test), paths.data / comp.test_file)
    write_csv(pd.DataFrame({id_column: test_ids, target: y_train[0]}), paths.data / comp.sample_submission)  # any label
    write_csv(pd.DataFrame({id_column: test_ids, target: y_test, "Usage": usage}), paths.data / comp.solution_file)
    console.summary(
        f"data: {comp.name} -> {paths.data}: {len(train_ids)} train, {len(test_ids)} test "
        f"({int((usage == 'Public').sum())} public / {int((usage == 'Private').sum())} private in {comp.solution_file})"
    )


BUILDERS = {"fashion_mnist": build_fashion_mnist, "digit_sequences": build_digit_sequences}


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
