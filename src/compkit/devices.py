"""Devices: the dtype policy a model trains in, which device each fold (or trial) process gets, `compkit env`.

Detection asks TensorFlow itself (``tf.config.list_physical_devices``), not ``nvidia-smi``: a driver
without TensorFlow's CUDA libraries is no GPU to compkit, and it says so in one line.

Precision (``train.precision``): ``auto`` is ``mixed_float16`` when the process sees GPUs of compute
capability 7.0 or more (tensor cores; Keras' mixed precision guide), else ``float32``: on this project's
AVX-512-BF16 CPU ``mixed_bfloat16`` trained no faster than float32 (README, "GPUs and precision").

Scheduling: a :class:`Slot` is where one fold or trial process runs. With GPUs (``train.devices``, else
every GPU TensorFlow sees) there is one slot per GPU, and each process sees only its own GPU
(``CUDA_VISIBLE_DEVICES``) with memory growth on; ``train.strategy = "mirrored"`` makes one slot holding
them all, for one model over every GPU. Without a GPU there are ``train.workers`` slots on the CPU.
When n > 1 processes run at once, each gets cores // n intra-op threads.
:class:`compkit.executors.LocalExecutor` runs units of work on the slots, never two on one slot at once.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compkit import console, rates
from compkit.errors import CompkitError

CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # the ones that matter to TensorFlow on a CPU
NO_CUDA = ("nvidia-smi finds an NVIDIA driver but TensorFlow sees no GPU (its CUDA libraries are missing): "
           "run `make setup GPU=1` (pip install 'tensorflow[and-cuda]'); using the cpu preset meanwhile")


def _pci_order() -> None:
    """Number GPUs as nvidia-smi does (PCI bus order), not fastest first, so ``DEVICES=0,2`` means what nvidia-smi shows."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


@functools.cache
def visible_gpus() -> tuple[str, ...]:
    """The GPUs TensorFlow sees in this process, named as ``CUDA_VISIBLE_DEVICES`` names them.

    Their indices ("0", "1", ...), or the entries of an inherited ``CUDA_VISIBLE_DEVICES``.
    """
    _pci_order()
    import tensorflow as tf

    count = len(tf.config.list_physical_devices("GPU"))
    inherited = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return tuple(inherited[:count] if inherited else (str(i) for i in range(count)))


@functools.cache  # the line about a driver without CUDA is said once
def default_preset() -> str:
    """``gpu`` when TensorFlow sees a GPU, else ``cpu`` (one line says why when nvidia-smi finds a driver anyway)."""
    if visible_gpus():
        return "gpu"
    if shutil.which("nvidia-smi"):
        console.info(NO_CUDA)
    return "cpu"


def precision(setting: str) -> str:
    """The Keras dtype policy name for ``train.precision`` in this process.

    ``auto``: ``mixed_float16`` when every GPU this process sees has compute capability >= 7.0, else ``float32``.
    The others are returned as they are; ``mixed_float16`` without a GPU says once that it will be slow.
    """
    if setting == "mixed_float16" and not visible_gpus():
        _float16_on_cpu()
    if setting != "auto":
        return setting
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capable = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) >= (7, 0) for g in gpus]
    return "mixed_float16" if capable and all(capable) else "float32"


@functools.cache  # said once a process
def _float16_on_cpu() -> None:
    console.info("train.precision = 'mixed_float16' without a GPU: TensorFlow has no fast float16 gradient kernels on a "
                 "CPU (resnet_small's training step at 56 px, batch 32: 88 s against 0.42 s in float32 on 2 Xeon cores, 2026-12-05); "
                 "use mixed_bfloat16 or float32 on a CPU")


def augment_where(setting: str, aug) -> str:
    """Where augmentation runs for ``train.augment_on`` = ``setting`` and ``aug`` (:class:`compkit.config.Augment`):
    ``"device"`` or ``"pipeline"`` (:mod:`compkit.augment`).

    ``auto``: the device when this process sees a GPU (the CPU then only gathers bytes: a 224-px photo pipeline
    augmenting on the CPU fed ~230 images/s on 2 cores, a GPU eats thousands), else the pipeline: on a CPU both compete
    for the same cores and the tf.data map overlaps the training step (docs/benchmarks.md). Elastic distortion keeps
    ``auto`` in the pipeline (it has no device form); the random-resized crop (``aug.crop``) puts it on the device, also
    on a CPU (it has no pipeline form; the two together are refused by :func:`compkit.checks.check_augment_on`).
    """
    if setting != "auto":
        return setting
    return "device" if (visible_gpus() or aug.crop) and not aug.elastic else "pipeline"


def strategy(name: str):
    """The ``tf.distribute`` strategy for ``train.strategy``.

    ``mirrored``: MirroredStrategy over every logical GPU, else over every logical CPU device (one on a plain
    CPU; tests configure two to simulate two GPUs). ``per_device``: the default strategy (one device).
    The batch size is then global: each of the n replicas gets batch_size / n rows.
    """
    import tensorflow as tf

    if name != "mirrored":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Slot:
    """Where one fold or trial process runs.

    ``device``: the process's ``CUDA_VISIBLE_DEVICES`` ("0"; "0,1" for a mirrored slot), None on the CPU
    (inherited); ``threads``: its intra-op threads, 0 for TensorFlow's default (every core).
    """

    device: str | None
    threads: int


# Intra-op threads of every fold or trial process, local or Ray, with train.deterministic: TensorFlow's CPU kernels split
# their reductions by thread count, so two thread counts give two different (each reproducible) models.
DETERMINISTIC_THREADS = 1


def slots(train) -> list[Slot]:
    """The slots of a run: one per GPU of ``train.devices`` (else every GPU seen), one in all with
    ``train.strategy = "mirrored"``, else ``train.workers`` on the CPU; n > 1 slots get cores // n threads each, and
    every slot :data:`DETERMINISTIC_THREADS` with ``train.deterministic`` (as a Ray task does: same seed, same predictions
    whatever the executor).

    ``train`` is the config's ``[train]`` section. Device ids that TensorFlow does not see are an error,
    except on a machine where it sees no GPU at all: there they are scheduled as given, each process
    running on the CPU (how the tests check the GPU schedule without a GPU), and a line says so.

    Raises:
        CompkitError: a ``train.devices`` id is not a GPU TensorFlow sees.
    """
    seen = visible_gpus()
    ids = list(dict.fromkeys(str(d) for d in train.devices)) or list(seen)  # a GPU named twice is still one slot
    missing = [d for d in ids if d not in seen]
    if seen and missing:
        raise CompkitError(f"train.devices: GPU {', '.join(missing)} is not one TensorFlow sees ({', '.join(seen)}); "
                           "pick from those with DEVICES=... or --set train.devices=[...]")
    if missing:
        console.info(f"train.devices {','.join(ids)}: TensorFlow sees no GPU, so each of these processes runs on the CPU")
    if train.strategy == "mirrored":
        return [Slot(",".join(ids) if ids else None, 0)]
    n = len(ids) or train.workers
    threads = max(1, cores() // n) if n > 1 else 0
    if train.deterministic:
        threads = DETERMINISTIC_THREADS
    return [Slot(d, threads) for d in ids] if ids else [Slot(None, threads) for _ in range(n)]


def enter(slot: Slot) -> None:
    """First thing in a fold or trial process: show TensorFlow only the slot's GPUs, with memory growth, and its threads.

    Runs before TensorFlow is imported by the work itself (the process pool's initializer).
    """
    if slot.device is not None:
        _pci_order()
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.device
    import tensorflow as tf

    if slot.threads:
        tf.config.threading.set_intra_op_parallelism_threads(slot.threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # several processes, or another `make train`, share the GPU


def describe(model) -> dict[str, Any]:
    """What a fitted ``model`` ran on, for ``fold.json``: ``device`` (CUDA_VISIBLE_DEVICES, None when
    inherited), ``gpus`` seen, intra-op ``threads`` (0: default), ``precision`` (dtype policy), ``replicas``."""
    import tensorflow as tf

    return {
        "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "precision": model.dtype_policy.name,
        "replicas": model.distribute_strategy.num_replicas_in_sync,
    }


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> dict[str, bool] | None:
    """Which of :data:`CPU_FLAGS` the CPU reports (Linux ``/proc/cpuinfo``); None where that file does not exist."""
    if not path.is_file():
        return None
    flags = set()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return {flag: flag in flags for flag in CPU_FLAGS}


def env(config, paths) -> None:
    """`make env`: TensorFlow, Keras, CUDA/cuDNN build versions, the devices seen, CPU features, the published training
    images/s of the GPUs seen (every GPU kind of :data:`compkit.rates.PUBLISHED` without one), the preset and precision
    `make all` would use (the preset given, else the default)."""
    import keras
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    cuda = f"CUDA {build.get('cuda_version', '-')}, cuDNN {build.get('cudnn_version', '-')}" if build.get("is_cuda_build") else "no CUDA build"
    console.info(f"python {platform.python_version()}, tensorflow {tf.__version__} ({cuda}), keras {keras.__version__}")
    gpus, gpu_names = tf.config.list_physical_devices("GPU"), []
    for name, gpu in zip(visible_gpus(), gpus):
        details = tf.config.experimental.get_device_details(gpu)
        gpu_names.append(details.get("device_name", ""))
        capability = ".".join(map(str, details.get("compute_capability", ("?",))))
        console.info(f"GPU {name}: {details.get('device_name', 'unknown')}, compute capability {capability}")
    flags = cpu_flags()
    shown = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()) if flags else "flags unknown (no /proc/cpuinfo)"
    console.info(f"CPU: {platform.machine()}, {cores()} cores; {shown}")
    for rate in rates.for_gpu(" ".join(gpu_names) if gpu_names else ""):
        console.info(f"published: {rates.describe(rate)}")
    console.info("`make bench-input SIZE=224 CORES=16`: what this machine's CPU side feeds, against these")
    preset = default_preset()
    policy = precision(config.train.precision)
    console.summary(
        f"env: {len(gpus)} GPU(s) seen by TensorFlow; `make all` uses preset {preset} by default, "
        f"precision {policy} (train.precision = {config.train.precision!r}), {len(slots(config.train))} fold process(es) at once"
    )
