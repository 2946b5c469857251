"""The CNN side of strrnn: unstructured STR on ResNet-18/50 and MobileNetV1, with its baselines.

- :mod:`cnn.models` — ResNet-18/50 (torchvision), MobileNetV1 (width multiplier), small CNNs;
  ``cnn.models.build(name, num_classes, **kw)``.
- :mod:`cnn.flops` — ``cnn.flops.profile(model, input_shape)``: per-layer parameters and FLOPs after
  sparsity, by the paper's rule.
- :mod:`cnn.budget` — per-layer sparsity budgets: uniform, ERK, from an STR run's ``report.csv``.
- :mod:`cnn.pruning` — GMP (cubic schedule; plain-loop scheduler and Lightning callback), DNW,
  one-shot magnitude pruning, all applied by parametrization.
- :mod:`cnn.imagenet` — ImageFolder/ImageNet Lightning data module and a fake ImageFolder generator.
- :mod:`cnn.data` — the registry ``python -m strrnn.train --dataset`` consults: ``imagenet``,
  ``imagefolder``, ``fsdd_image``.

STR itself comes from the engine: ``strrnn.sparsify(model)``, ``strrnn.param_groups``,
``strrnn.report``, ``strrnn.export``. Models never import a threshold.
"""

from cnn import budget, flops, models, pruning

__all__ = ["budget", "data", "flops", "imagenet", "models", "pruning"]


def __getattr__(name: str):
    # the data modules pull in PIL and the dataset machinery: import them on first use
    if name in ("imagenet", "data"):
        from importlib import import_module

        return import_module(f"cnn.{name}")
    raise AttributeError(f"module 'cnn' has no attribute {name!r}")
