"""airbench's initialisations (Jordan, 2024): the frozen patch-whitening first convolution and identity (Dirac)
convolutions, for compkit's own CNNs (backbones.py builds the layers, these set their weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


# airbench's eigenvalue floor (Jordan, 2024), for inputs of unit scale: keeps the near-constant patch directions from
# being amplified into noise
WHITENING_EPS = 5e-4
# patches the covariance is estimated from (airbench: every 2x2 patch of 5,000 CIFAR-10 images, 4.8 million)
WHITENING_PATCHES = 2_000_000


def whitening_kernel(patches: np.ndarray, side: int, channels: int) -> np.ndarray:
    """The frozen first convolution of airbench (Jordan, 2024, ``init_whitening_conv``): the eigenvectors of the
    patches' uncentred covariance, each divided by the square root of its eigenvalue (+ :data:`WHITENING_EPS`), and
    their negatives, so a ReLU after it keeps both signs.

    Args:
        patches: (n, side * side * channels) float patches, flattened in Keras' kernel order (row, column, channel).
        side: the patch's side, pixels.
        channels: the patch's channels.

    Returns:
        (side, side, channels, 2 * side * side * channels) float32 kernel, largest eigenvalue first.
    """
    covariance = patches.T @ patches / len(patches)
    values, vectors = np.linalg.eigh(covariance.astype(np.float64))
    scaled = (vectors / np.sqrt(values + WHITENING_EPS))[:, ::-1]
    return np.concatenate([scaled, -scaled], axis=1).reshape(side, side, channels, -1).astype(np.float32)


def image_patches(images: np.ndarray, side: int) -> np.ndarray:
    """(n, H, W, C) float images -> (n * (H - side + 1) * (W - side + 1), side * side * C) patches, every position."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (side, side), axis=(1, 2))  # (n, h, w, C, side, side)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, side * side * images.shape[-1])


def whitening_images(size: tuple[int, int], side: int) -> int:
    """How many (H, W) = ``size`` images give :data:`WHITENING_PATCHES` patches of ``side`` pixels (at least one)."""
    return max(1, WHITENING_PATCHES // ((size[0] - side + 1) * (size[1] - side + 1)))


def whitening_sample(images: np.ndarray, fit: np.ndarray, side: int) -> np.ndarray:
    """(n, H, W, C) uint8: the ``fit`` rows (int indices into ``images``), evenly spaced, that a ``whiten`` layer of
    ``side``-pixel patches is fitted to, only as many as its patch budget uses (:func:`whitening_images`); a fold's
    validation rows stay unseen."""
    count = whitening_images(images.shape[1:3], side)
    rows = fit[:: max(1, len(fit) // count)][:count]
    return images[np.sort(rows)]


def fit_whitening(model: keras.Model, sample: np.ndarray, side: int) -> None:
    """Fit the frozen ``whiten`` layer to ``sample`` (n, H, W, C) uint8 images, as the layer sees them (rescaled,
    resized), on at most :data:`WHITENING_PATCHES` patches."""
    import keras

    layer = model.get_layer("whiten")
    sample = sample[: whitening_images(layer.input.shape[1:3], side)].astype(np.float32)
    seen = np.asarray(keras.Model(model.input["image"], layer.input)(sample), dtype=np.float32)
    layer.set_weights([whitening_kernel(image_patches(seen, side), side, seen.shape[-1])])


def dirac(backbone: keras.Model) -> None:
    """Identity initialisation (airbench; ``torch.nn.init.dirac_``): in every 3x3 convolution with at least as many
    filters as inputs, the first ``inputs`` filters pass their channel through unchanged; the others keep Keras' init."""
    from keras import layers

    for layer in backbone.layers:
        if not isinstance(layer, layers.Conv2D) or layer.kernel.shape[0] != 3:
            continue
        kernel = np.asarray(layer.kernel, dtype=np.float32)
        inputs = kernel.shape[2]
        if kernel.shape[3] >= inputs:
            kernel[..., :inputs] = 0.0
            kernel[1, 1, np.arange(inputs), np.arange(inputs)] = 1.0
            layer.kernel.assign(kernel)
