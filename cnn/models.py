"""CNN architectures for unstructured STR, and a registry to build them by name.

The models here know nothing about thresholds: STR (or GMP / DNW) is applied from outside by
parametrization (``strrnn.sparsify(model)``, ``cnn.pruning.GMPScheduler``, ``cnn.pruning.apply_dnw``).

Registered names (``cnn.models.build(name, num_classes, **kw)``):

- ``resnet18``, ``resnet50``: torchvision's definitions (no pretrained weights); ImageNet input
  ``(3, 224, 224)``. ``small_input=True`` swaps the stem for a 3×3 stride-1 conv without max-pool
  (the usual CIFAR-style stem) for 32×32 or 64×64 images.
- ``mobilenetv1``: MobileNetV1 (Howard et al. 2017) with a width multiplier; 4.21M weights and 569M
  multiply-adds dense at ``width_mult=1.0`` with 1000 classes at 224×224.
- ``small_cnn``: three 3×3 conv blocks + global average pool + linear, for 28×28 (MNIST) or 8×8
  (scikit-learn digits) images; ``in_channels`` defaults to 1.
- ``spectrogram_cnn``: the same design with pooling along both axes, for 1-channel log-mel
  spectrograms of shape ``(1, frames, mels)``, e.g. ``(1, 99, 32)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "MobileNetV1",
    "SmallCNN",
    "available",
    "build",
    "mobilenetv1",
    "resnet18",
    "resnet50",
    "small_cnn",
    "spectrogram_cnn",
]


def _small_input_stem(model: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """Replace the 7×7/2 conv + max-pool stem by a 3×3/1 conv, so 32–64 px inputs keep their resolution."""
    in_channels = model.conv1.in_channels
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _with_in_channels(model: torchvision.models.ResNet, in_channels: int) -> torchvision.models.ResNet:
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    return model


def resnet18(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> nn.Module:
    """torchvision ResNet-18, random init. Input ``(N, in_channels, H, W)`` → logits ``(N, num_classes)``."""
    model = _with_in_channels(torchvision.models.resnet18(weights=None, num_classes=num_classes), in_channels)
    return _small_input_stem(model) if small_input else model


def resnet50(num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> nn.Module:
    """torchvision ResNet-50, random init. Input ``(N, in_channels, H, W)`` → logits ``(N, num_classes)``.

    Dense at 1000 classes: 25,502,912 conv/linear weights, 4,089,284,608 FLOPs at 224×224
    (``cnn.flops.profile``).
    """
    model = _with_in_channels(torchvision.models.resnet50(weights=None, num_classes=num_classes), in_channels)
    return _small_input_stem(model) if small_input else model


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1: a 3×3/2 stem, 13 depthwise-separable blocks, global average pool, linear classifier.

    Input ``(N, in_channels, 224, 224)`` → logits ``(N, num_classes)``. ``width_mult`` scales every
    channel count (rounded down to at least 8). Convs carry no bias (batch-norm follows each); the
    classifier has one. Layer names: ``features.0`` (stem), ``features.{i}.depthwise`` /
    ``features.{i}.pointwise`` (blocks 1–13), ``classifier``.
    """

    # (output channels, stride) of the 13 depthwise-separable blocks, as in the paper's Table 1
    BLOCKS: tuple[tuple[int, int], ...] = (
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")

        def width(channels: int) -> int:
            return max(8, int(channels * width_mult))

        channels = width(32)
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, channels, 3, 2)]
        for out_channels, stride in self.BLOCKS:
            out_channels = width(out_channels)
            block = nn.Sequential()
            block.add_module("depthwise", _conv_bn_relu(channels, channels, 3, stride, groups=channels))
            block.add_module("pointwise", _conv_bn_relu(channels, out_channels, 1, 1))
            layers.append(block)
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (N, C, H, W)`` → ``logits (N, num_classes)``."""
        return self.classifier(torch.flatten(self.pool(self.features(images)), 1))


def mobilenetv1(num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3) -> nn.Module:
    """MobileNetV1 with a width multiplier (see :class:`MobileNetV1`)."""
    return MobileNetV1(num_classes=num_classes, width_mult=width_mult, in_channels=in_channels)


class SmallCNN(nn.Module):
    """A small conv net for CPU-scale images: ``len(channels)`` conv-BN-ReLU blocks, average pool, linear.

    Input ``(N, in_channels, H, W)`` with any H, W ≥ 4 (8×8 digits, 28×28 MNIST, 99×32 log-mel
    spectrograms) → logits ``(N, num_classes)``. Every block but the first halves the resolution with
    a 2×2 max-pool after it, as long as both sides stay ≥ 2 (so 8×8 inputs are not pooled away).
    Layer names: ``features.{i}.0`` (convs), ``classifier``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one conv block, got an empty sequence")
        blocks: list[nn.Module] = []
        previous = in_channels
        for out_channels in channels:
            blocks.append(_conv_bn_relu(previous, out_channels, 3, 1))
            previous = out_channels
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images (N, C, H, W)`` → ``logits (N, num_classes)``."""
        x = images
        for index, block in enumerate(self.features):
            x = block(x)
            # pool after every block but the first while the map stays at least 2×2 after pooling
            if index > 0 and min(x.shape[-2:]) >= 4:
                x = nn.functional.max_pool2d(x, 2)
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


def small_cnn(
    num_classes: int = 10, in_channels: int = 1, channels: Sequence[int] = (32, 64, 64), dropout: float = 0.0
) -> nn.Module:
    """A :class:`SmallCNN` for 8×8 or 28×28 images (1 channel by default)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, channels=channels, dropout=dropout)


def spectrogram_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    channels: Sequence[int] = (32, 64, 128, 128),
    dropout: float = 0.1,
) -> nn.Module:
    """A :class:`SmallCNN` for 1-channel log-mel spectrograms (N, 1, frames, mels), e.g. (N, 1, 99, 32)."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, channels=channels, dropout=dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenetv1": mobilenetv1,
    "small_cnn": small_cnn,
    "spectrogram_cnn": spectrogram_cnn,
}

# the input each model is designed for, one sample (C, H, W): what cnn.flops.profile should be given
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "resnet18": (3, 224, 224),
    "resnet50": (3, 224, 224),
    "mobilenetv1": (3, 224, 224),
    "small_cnn": (1, 28, 28),
    "spectrogram_cnn": (1, 99, 32),
}


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def build(name: str, num_classes: int, in_chans: int | None = None, **kwargs) -> nn.Module:
    """Build a registered CNN by name: ``build("resnet50", 1000)`` maps (N, C, H, W) → (N, num_classes).

    ``num_classes`` and ``in_chans`` (input channels C) are the vocabulary every strrnn registry shares
    (timm's; ``strrnn.models.build`` takes the same). Extra keyword arguments go to the model's factory
    (``width_mult`` for ``mobilenetv1``, ``small_input`` for the ResNets, ``channels`` for the small CNNs).
    An unknown name raises a ``ValueError`` listing the choices.
    """
    if name not in MODELS:
        raise ValueError(f"unknown CNN model {name!r}; choices: {', '.join(available())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    if "in_channels" in kwargs:  # the factories' own name, accepted for older callers of build()
        if in_chans is not None:
            raise ValueError("give in_chans= or in_channels=, not both")
        warnings.warn("build(..., in_channels=) is deprecated: pass in_chans=", FutureWarning, stacklevel=2)
        in_chans = kwargs.pop("in_channels")
    if in_chans is not None:
        kwargs["in_channels"] = in_chans
    return MODELS[name](num_classes=num_classes, **kwargs)
