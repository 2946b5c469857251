"""Test accuracy and confusion matrix of a run's exported model: ``python -m strrnn.evaluate --run DIR``.

The model is rebuilt from ``exported.pt`` (no strrnn parametrization, loaded with ``weights_only=True``); the
test split is featurized with the normalization statistics stored with the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from . import data as sdata
from .runs import build_datamodule, load_exported


@torch.no_grad()
def evaluate(run_dir: str | Path, data_dir: str | None = None, split: str = "test") -> tuple[float, pd.DataFrame]:
    """Accuracy (0…1) and confusion matrix (rows: true class, columns: predicted) of the exported model."""
    model, payload = load_exported(run_dir)
    config = dict(payload["config"])
    if data_dir:
        config["data_dir"] = data_dir
    config["normalization"] = payload.get("normalization")
    config["synthetic"] = False  # never synthesize at evaluation time
    datamodule = build_datamodule(config)
    datamodule.setup("test" if split == "test" else "fit")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    names = payload["class_names"]
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    for x, y in loader:
        pred = model(x).argmax(-1)
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    accuracy = float(confusion.diag().sum() / confusion.sum().clamp(min=1))
    return accuracy, pd.DataFrame(confusion.numpy(), index=names, columns=names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strrnn.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by python -m strrnn.train")
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the run's)")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    args = parser.parse_args(argv)
    try:
        accuracy, confusion = evaluate(args.run, args.data_dir, args.split)
    except (ValueError, sdata.DataError) as err:
        print(f"python -m strrnn.evaluate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.run) / f"confusion_{args.split}.csv"
    confusion.to_csv(out)
    print(confusion.to_string())
    print(f"\n{args.split} accuracy of the exported model: {accuracy:.4f}  (confusion matrix: {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
