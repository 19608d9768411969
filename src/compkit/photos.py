"""Decoding image files (PNG, JPG, ... of any size, gray or RGB) into the (N, H, W, C) uint8 pixels compkit trains on.

Each image is converted to ``competition.image_shape``'s channels (16-bit grayscale scaled to 8 bits first), cut to its
object with ``competition.crop_to_object``, and resized with bilinear filtering; a thread pool decodes (Pillow releases the
GIL). The pixel cache (:mod:`compkit.cache`) stores what this gives, so it runs once per image.

Crop to the object: the preprocessing product photos on a white background want. Before the resize, each image is cut
to the box of its object plus ``competition.object_margin`` of the box's side on each side, so a garment that fills a
fifth of a 1,000-px catalogue photo fills the model's input instead of a few pixels of it. The object is found as
scikit-image's documentation does it for uneven backgrounds: a pixel darker than its neighbourhood's Gaussian-weighted
mean by :data:`OFFSET` gray levels (``skimage.filters.threshold_local``) is foreground; a closing with a disk
joins the outline's pieces; connected parts of at least :data:`KEEP` of the largest one's area are the object (a pair
of shoes is two parts; a speck of JPEG noise is not one). Without any foreground the whole image is kept. Training, TTA,
prediction and the report all see the cropped pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from compkit.config import Competition
from compkit.errors import CompkitError, DataError

OFFSET = 10  # gray levels a pixel must be below its neighbourhood's mean: JPEG noise on white stays under it
KEEP = 0.1  # parts smaller than this share of the largest part's area are noise, not the object
INSTALL = "pip install -e '.[photos]'"


def object_box(gray: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """The object's box in ``gray`` ((H, W) uint8, a light background), widened by ``margin`` of its sides.

    Returns:
        (top, left, bottom, right) pixel indices, bottom and right excluded, inside the image; the whole image when
        nothing is darker than its neighbourhood.

    Raises:
        CompkitError: scikit-image is not installed (names the install command).
    """
    try:
        from skimage.filters import threshold_local
        from skimage.measure import label, regionprops
        from skimage.morphology import closing, disk
    except ImportError:
        raise CompkitError(f"competition.crop_to_object needs scikit-image: run `{INSTALL}`") from None
    h, w = gray.shape
    block = max(3, min(h, w) // 10) | 1  # odd, a tenth of the image: the background's scale, not the object's
    foreground = closing(gray < threshold_local(gray, block, offset=OFFSET), disk(max(1, min(h, w) // 100)))
    parts = regionprops(label(foreground))
    if not parts:
        return 0, 0, h, w
    largest = max(p.area for p in parts)
    boxes = np.array([p.bbox for p in parts if p.area >= KEEP * largest])
    top, left = boxes[:, :2].min(axis=0)
    bottom, right = boxes[:, 2:].max(axis=0)
    dy, dx = round(margin * (bottom - top)), round(margin * (right - left))
    return max(0, top - dy), max(0, left - dx), min(h, bottom + dy), min(w, right + dx)


def file_box(path: Path, margin: float) -> tuple[float, float, float, float]:
    """The object's box in the image file ``path`` (:func:`object_box`) as fractions of its height and width:
    (top, left, bottom, right), each 0-1. For drawing the box on the image at any size (the report)."""
    from PIL import Image

    with Image.open(path) as image:
        gray = np.asarray(_eight_bit(image).convert("L"))
    top, left, bottom, right = object_box(gray, margin)
    h, w = gray.shape
    return top / h, left / w, bottom / h, right / w


def read_image_files(folder: Path, names: list[str], comp: Competition) -> np.ndarray:
    """Load image files (PNG, JPG, ... of any size, gray or RGB) as (N, H, W, C) uint8 in ``comp.image_shape``.

    Images are converted to the configured channels (L or RGB), cut to their object with ``comp.crop_to_object``
    (:func:`object_box`) and resized with bilinear filtering;
    16-bit grayscale images are scaled to 0-255 first (see :func:`_eight_bit`). Decoded by a thread pool.

    Raises:
        DataError: a file is missing, not a readable image, or over Pillow's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS`` times 2).
    """
    if not names:
        return np.empty((0, *comp.image_shape), np.uint8)
    return np.concatenate(list(decode_chunks(folder, names, comp, len(names))))


def decode_chunks(folder: Path, names: list[str], comp: Competition, chunk: int) -> Iterator[np.ndarray]:
    """:func:`read_image_files` ``chunk`` files at a time: yields (m <= chunk, H, W, C) uint8 blocks in ``names`` order.

    Pillow releases the GIL while it decodes and resizes, so a thread pool (its default size) decodes in parallel.
    """
    with ThreadPoolExecutor() as pool:
        for start in range(0, len(names), chunk):
            part = [Path(folder) / str(name) for name in names[start:start + chunk]]
            yield np.stack(list(pool.map(lambda path: _decode(path, folder, comp), part)))


MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # image_shape's channels -> the PIL mode each image is converted to


def _decode(path: Path, folder: Path, comp: Competition) -> np.ndarray:
    """One image file as (H, W, C) uint8 in ``comp.image_shape``; see :func:`read_image_files`."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = comp.image_shape
    try:
        with Image.open(path) as image:
            image = _eight_bit(image).convert(MODES[channels])
            if comp.crop_to_object:
                top, left, bottom, right = object_box(np.asarray(image.convert("L")), comp.object_margin)
                image = image.crop((left, top, right, bottom))
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image).reshape(height, width, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; the labels name a file that is not in {folder}") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: too large to decode safely ({exc}); downscale or remove it") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); replace or remove it") from None


def _eight_bit(image):
    """A 16-bit grayscale image (PIL mode ``I;16*`` or ``I``, as 16-bit PNGs open) scaled to 8 bits: 0-65535 -> 0-255.

    Pillow's own ``convert("L")`` clips such values at 255, which turns most of an image white;
    dividing by 257 maps 65535 to 255 exactly. Other modes are returned as they are.
    """
    from PIL import Image

    if not (image.mode == "I" or image.mode.startswith("I;16")):
        return image
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(pixels / 257), 0, 255).astype(np.uint8), mode="L")
