"""XLA benchmark: milliseconds per training step of each backbone with and without ``jit_compile``, on this machine.

Real DACON images (``--rows`` of them, 28x28 letters), each backbone built as compkit builds it (``build_model``, the cpu
preset's hyperparameters, ``input_size`` upscaling where given) and compiled as :func:`compkit.fitting.fit` compiles it
(Adam, the task's loss), once with ``jit_compile=False`` and once with ``True`` (Keras' default, "auto", is XLA on a GPU
and not on a CPU). Per configuration one untimed epoch (tracing, XLA compilation: its seconds are printed), then
``--epochs`` timed; the speedup is eager-graph ms / XLA ms per step.

    python bench/xla.py [--backbones cnn_small,resnet_small] [--sizes 28,28] [--rows 512] [--epochs 2] [--precision float32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from compkit import devices, fitting, tasks  # noqa: E402
from compkit.backbones import build_model  # noqa: E402
from compkit.config import load_config  # noqa: E402
from compkit.data import load_train  # noqa: E402


def step_ms(config, backbone: str, size: int, images: np.ndarray, targets: np.ndarray, epochs: int, jit: bool) -> tuple[float, float]:
    """(seconds of the untimed first epoch, mean ms per step of the next ``epochs``) of ``backbone`` at ``size`` px."""
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(devices.precision(config.train.precision))
    hyper = config.hyper(backbone).model_copy(update={"input_size": size})
    task = tasks.for_config(config)
    model = build_model(backbone, config.competition.image_shape, task.head, hyper)
    model.compile(optimizer=keras.optimizers.Adam(hyper.learning_rate), loss=task.loss(0.0), jit_compile=jit)
    start = time.perf_counter()
    model.fit({"image": images}, targets, batch_size=hyper.batch_size, epochs=1, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.fit({"image": images}, targets, batch_size=hyper.batch_size, epochs=epochs, verbose=0)
    steps = epochs * int(np.ceil(len(images) / hyper.batch_size))
    return first, 1000 * (time.perf_counter() - start) / steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="cnn_small,resnet_small")
    p.add_argument("--sizes", default="28,28", help="input side per backbone, pixels (upscaled from 28)")
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after the untimed one")
    p.add_argument("--precision", default="float32")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("COMPKIT_DACON_DIR", REPO.parent / "shared/data/dacon-cv-2020")))
    args = p.parse_args()
    config = load_config("dacon-cv-2020", "cpu", [f"train.precision='{args.precision}'"], REPO / "configs")
    train = load_train(args.data_dir, config.competition)
    rows = np.arange(args.rows)
    images, targets = fitting.model_inputs(train, rows, config.hyper("cnn_small"))["image"], np.eye(10, dtype=np.float32)[train.labels[rows]]
    print(f"\nXLA, {args.rows} DACON rows, batch 64, {args.precision}, {devices.cores()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"{'backbone':<16} {'px':>4} {'graph ms/step':>13} {'XLA ms/step':>11} {'speedup':>7} {'XLA compile s':>13}")
    for backbone, size in zip(args.backbones.split(","), map(int, args.sizes.split(","))):
        _, graph = step_ms(config, backbone, size, images, targets, args.epochs, jit=False)
        compile_s, xla = step_ms(config, backbone, size, images, targets, args.epochs, jit=True)
        print(f"{backbone:<16} {size:>4} {graph:>13.1f} {xla:>11.1f} {graph / xla:>7.2f} {compile_s:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
