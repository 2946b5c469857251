"""strrnn's Lightning classes for either Lightning package: ``pytorch_lightning`` or ``lightning.pytorch``.

Lightning ships twice: as ``pytorch_lightning`` and, inside the unified ``lightning`` package, as
``lightning.pytorch``. The two hold separate copies of the same classes, and a Trainer accepts only its own
package's ``LightningModule``, ``Callback`` and ``CheckpointIO``. strrnn's classes
(:class:`strrnn.task.ClassificationTask` and the callbacks of :mod:`strrnn.callbacks`) are built on
``pytorch_lightning``, which ``python -m strrnn.train`` uses. With a ``lightning.pytorch`` Trainer, take them
from this module instead (it needs the ``[lightning]`` extra)::

    import lightning.pytorch as L
    from strrnn import STRRecipe
    from strrnn.lightning_compat import ClassificationTask, RankRecipeCallback, wrap_datamodule
    from strrnn.task import OptimConfig

    task = ClassificationTask(model, OptimConfig(epochs=10))
    L.Trainer(max_epochs=10, callbacks=[RankRecipeCallback(STRRecipe, freeze_at=0.4)]).fit(task, wrap_datamodule(dm))

Each class is written once, without a Lightning base, and given one by :func:`lightning_class` (the
``pytorch_lightning`` class, in its own module) or :func:`on_lightning` (the ``lightning.pytorch`` class, made on
first use and cached): same code, same behaviour, only the base differs. strrnn's data modules stay
``pytorch_lightning`` data modules; :func:`wrap_datamodule` hands one to a ``lightning.pytorch`` Trainer (or pass
its loaders: ``dm.setup(); trainer.fit(task, dm.train_dataloader(), dm.val_dataloader())``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .optional import require

#: base name -> (module in pytorch_lightning's world, module in lightning.pytorch's world)
_BASES = {
    "Callback": ("pytorch_lightning", "lightning.pytorch"),
    "LightningModule": ("pytorch_lightning", "lightning.pytorch"),
    "TorchCheckpointIO": ("lightning_fabric.plugins.io.torch_io", "lightning.fabric.plugins.io.torch_io"),
}

#: class name -> the module defining it (on pytorch_lightning); every name is also an attribute of this module
CLASSES = {
    "ClassificationTask": "strrnn.task",
    "AtomicCheckpointIO": "strrnn.callbacks",
    "RankLogger": "strrnn.callbacks",
    "ThresholdDecayWarmup": "strrnn.callbacks",
    "RankRecipeCallback": "strrnn.callbacks",
    "NonFiniteLossGuard": "strrnn.callbacks",
    "ResumableMetrics": "strrnn.callbacks",
    "EpochSeed": "strrnn.callbacks",
}

# the classes are made on first use (they need the lightning package)
__all__ = ["lightning_class", "on_lightning", "wrap_datamodule", "CLASSES", *CLASSES]

_cache: dict[type, type] = {}


def _combine(logic: type, base: type, module: str) -> type:
    # the logic class comes first, so its methods override the base's defaults; its zero-argument super() calls
    # reach the base through the combined class's MRO. ``module`` is where pickle finds the class by its name.
    return type(logic.__name__, (logic, base), {"__doc__": logic.__doc__, "__module__": module,
                                               "__qualname__": logic.__name__, "_strrnn_logic": (logic, base)})


def lightning_class(base: str) -> Callable[[type], type]:
    """Class decorator: the decorated class (written without a Lightning base) on ``pytorch_lightning``'s
    ``base`` (``"Callback"``, ``"LightningModule"`` or ``"TorchCheckpointIO"``); :func:`on_lightning` puts the
    same class on ``lightning.pytorch``'s."""

    def decorate(logic: type) -> type:
        return _combine(logic, getattr(importlib.import_module(_BASES[base][0]), base), logic.__module__)

    return decorate


def on_lightning(cls: type) -> type:
    """The ``lightning.pytorch`` twin of ``cls``, a strrnn class made by :func:`lightning_class` (cached).

    Raises:
        strrnn.optional.MissingExtraError: the ``lightning`` package is not installed.
        TypeError: ``cls`` is not one of strrnn's Lightning classes.
    """
    if cls not in _cache:
        # only the class lightning_class made (not a user's subclass of it: subclass the twin instead)
        logic, base = cls.__dict__.get("_strrnn_logic", (None, None))
        if logic is None or CLASSES.get(cls.__name__) != cls.__module__:
            raise TypeError(f"{cls.__name__} is not one of strrnn's Lightning classes: {', '.join(CLASSES)}")
        package = require(_BASES[base.__name__][1], extra="lightning", feature="strrnn.lightning_compat")
        _cache[cls] = _combine(logic, getattr(package, base.__name__), __name__)
    return _cache[cls]


def wrap_datamodule(datamodule):
    """A ``lightning.pytorch`` data module that delegates every hook to ``datamodule`` (a strrnn data module,
    which is a ``pytorch_lightning`` one); other attributes (``num_classes``, ``normalization``, ...) are read
    from ``datamodule`` too."""
    pl = require("lightning.pytorch", extra="lightning", feature="strrnn.lightning_compat")

    class WrappedDataModule(pl.LightningDataModule):
        """Each Lightning hook calls the same hook of the wrapped strrnn data module (``inner``)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = datamodule

        def __getattr__(self, name):
            if name == "inner":  # not set yet (during __init__ or unpickling): no recursion
                raise AttributeError(name)
            return getattr(self.inner, name)

        def prepare_data(self) -> None:
            self.inner.prepare_data()

        def setup(self, stage: str | None = None) -> None:
            self.inner.setup(stage)

        def train_dataloader(self):
            return self.inner.train_dataloader()

        def val_dataloader(self):
            return self.inner.val_dataloader()

        def test_dataloader(self):
            return self.inner.test_dataloader()

        def state_dict(self) -> dict:
            return self.inner.state_dict()

        def load_state_dict(self, state_dict: dict) -> None:
            self.inner.load_state_dict(state_dict)

    return WrappedDataModule()


def __getattr__(name: str):
    # ClassificationTask, RankLogger, ...: the lightning.pytorch twins, made on first use
    if name in CLASSES:
        return on_lightning(getattr(importlib.import_module(CLASSES[name]), name))
    raise AttributeError(f"module 'strrnn.lightning_compat' has no attribute {name!r}")
