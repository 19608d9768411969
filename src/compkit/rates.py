"""Published training throughputs of GPUs, as data: how many images/s a GPU of a kind eats for a backbone at a size.

`compkit env` prints them and ``make bench-input`` sets its measured input pipeline against them (input-bound or not).
Each row names its source; add rows as data, with theirs. Figures are whole training steps (forward, backward, update)
at the batch size given, on ImageNet-sized (224 px) inputs, averaged over an epoch by the publisher.
"""

from __future__ import annotations

from dataclasses import dataclass

DLE = "NVIDIA DeepLearningExamples"
B0 = f"{DLE}, TensorFlow2/Classification/ConvNets/efficientnet_v1 README (Feb 2022), training performance results for EfficientNet v1-B0"


@dataclass(frozen=True)
class Rate:
    """One published figure: ``images_per_s`` of training ``backbone`` at ``size`` px on one ``gpu`` in ``precision``."""

    gpu: str
    backbone: str  # a compkit backbone name (compkit.backbones.BACKBONES)
    size: int  # square input side, pixels
    precision: str  # "mixed" (float16 compute, float32 master weights) or "tf32" / "float32"
    batch: int | None  # per GPU; None where the table does not say
    images_per_s: float
    source: str


PUBLISHED: tuple[Rate, ...] = (
    Rate("A100", "efficientnetb0", 224, "mixed", None, 3454, f"{B0}, 1x A100 80GB (DGX A100), mixed precision"),
    Rate("A100", "efficientnetb0", 224, "tf32", None, 1209, f"{B0}, 1x A100 80GB (DGX A100), TF32"),
    # NVIDIA's own note: B0 on V100 gains little from AMP "because of the CPU-bound Auto-augmentation": input-bound
    Rate("V100", "efficientnetb0", 224, "mixed", None, 868, f"{B0}, 1x V100 32GB (DGX-1), mixed precision"),
    Rate("V100", "efficientnetb0", 224, "float32", None, 752, f"{B0}, 1x V100 32GB (DGX-1), FP32"),
    Rate("A100", "resnet50", 224, "mixed", 256, 2375,
         f"{DLE}, TensorFlow/Classification/ConvNets/resnet50v1.5 README, training performance, 1x A100 40GB, mixed precision + XLA"),
    Rate("A100", "resnet50", 224, "tf32", 256, 909,
         f"{DLE}, TensorFlow/Classification/ConvNets/resnet50v1.5 README, training performance, 1x A100 40GB, TF32 + XLA"),
    Rate("V100", "resnet50", 224, "mixed", 256, 1270,
         f"{DLE}, TensorFlow/Classification/ConvNets/resnet50v1.5 README, training performance, 1x V100 16GB (DGX-1), mixed precision + XLA"),
    Rate("V100", "resnet50", 224, "float32", 128, 412,
         f"{DLE}, TensorFlow/Classification/ConvNets/resnet50v1.5 README, training performance, 1x V100 16GB (DGX-1), FP32 + XLA"),
)


def for_gpu(name: str = "") -> list[Rate]:
    """The rows whose GPU kind appears in ``name`` (e.g. TensorFlow's "NVIDIA A100-SXM4-80GB"); every row for ""."""
    return [r for r in PUBLISHED if not name or r.gpu.lower() in name.lower()]


def verdict(pipeline_per_s: float, rate: Rate) -> str:
    """One line: what ``rate``'s GPU eats against ``pipeline_per_s`` images/s of input pipeline, and whether it would starve."""
    bound = "INPUT-BOUND (the GPU would wait)" if pipeline_per_s < rate.images_per_s else "not input-bound"
    return (f"{rate.backbone} at {rate.size} px on a {rate.gpu} ({rate.precision}) eats ~{rate.images_per_s:,.0f} img/s: "
            f"{bound} [{rate.source}]")


def describe(rate: Rate) -> str:
    """``rate`` as one line for `compkit env`."""
    batch = f", batch {rate.batch}" if rate.batch else ""
    return (f"{rate.gpu} trains {rate.backbone} at {rate.size} px ({rate.precision}{batch}) at "
            f"~{rate.images_per_s:,.0f} img/s [{rate.source}]")
