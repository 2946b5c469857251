"""Test accuracy and confusion matrix of a run's exported model: ``strrnn evaluate --run DIR``.

The model is rebuilt from ``exported.pt`` (no strrnn parametrization, loaded with ``weights_only=True``); the
test split is featurized with the normalization statistics stored with the run.

``--data-dir`` names another dataset root of the same kind. A Speech Commands **test-set layout** folder (Google's
canonical test set: word folders, ``_silence_/``, ``_unknown_/``) that the run did not train on is scored on every
one of its clips -- the standard report of a model trained on the full archive::

    strrnn evaluate --run runs/google12 --data-dir datasets/speech_commands_test_set_v0.02

``--all-clips`` on the very folder the run trained on scores its training clips too: the result is printed as
such, not as a test accuracy. Only the scored split needs clips, and no class needs training clips, so a folder
holding some of the classes is scored on those.

The accuracy is printed before anything is written. The confusion matrix goes to ``--confusion FILE`` (checked
before any clip is scored: never a run's own file, :func:`strrnn.run_folder.check_output`), by default
``<run>/confusion_<split>.csv``; where that cannot be written (a read-only run folder), a note says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_write_text
from ..run_folder import RunFolderError, check_output

if TYPE_CHECKING:  # torch, pandas and the data sets are imported when a run is scored, not for --help
    import pandas as pd


def _same_folder(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def _score_whole_folder(datamodule, data_dir, trained_on, all_clips: bool | None) -> bool:
    """Whether to score every clip of ``data_dir`` (a Speech Commands test-set layout folder)."""
    from ..data.speech_commands import SpeechCommandsDataModule

    testset = (isinstance(datamodule, SpeechCommandsDataModule) and datamodule.root.is_dir()
               and datamodule.layout == "testset")
    if all_clips and not testset:
        raise ValueError(f"--all-clips scores a Speech Commands test-set layout folder (word folders, _silence_/, "
                         f"_unknown_/); {datamodule.root} is not one")
    if all_clips is None:  # by default: a test-set folder the run did not train on
        return bool(testset and data_dir and not (trained_on and _same_folder(data_dir, trained_on)))
    return bool(all_clips)


def evaluate(run_dir: str | Path, data_dir: str | None = None, split: str = "test",
             all_clips: bool | None = None) -> tuple[float, pd.DataFrame]:
    """Accuracy (0…1) and confusion matrix (rows: true class, columns: predicted) of the exported model.

    ``all_clips``: score every clip of a Speech Commands test-set layout ``data_dir`` (``None``: when it is not the
    folder the run trained on, whose speaker split would otherwise give the held-out test speakers only).
    ``confusion.attrs["includes_training_clips"]`` is True when ``all_clips`` scored the folder the run trained
    on, training clips and all (then it is no test accuracy).
    """
    import pandas as pd
    import torch

    from ..artifacts import check_label_set, exported_datamodule, load_exported

    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    model, payload = load_exported(run_dir)
    trained_on = payload["config"].get("data_dir")
    datamodule = exported_datamodule(payload, data_dir)
    whole = _score_whole_folder(datamodule, data_dir, trained_on, all_clips)
    if whole:
        if split != "test":
            raise ValueError("every clip of a test-set layout folder is a test clip: use --split test")
        datamodule.testset_split = "test"
    # scoring needs clips in the scored split only: a folder with some of the classes is scored on those
    datamodule.scored_splits = (split,)
    datamodule.setup("test" if split == "test" else "fit")
    check_label_set(datamodule, payload)
    names = payload["class_names"]
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    confusion = torch.zeros(len(names), len(names), dtype=torch.long)
    for x, y in loader:
        with torch.no_grad():
            pred = model(x).argmax(-1)
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    accuracy = float(confusion.diag().sum() / confusion.sum().clamp(min=1))
    table = pd.DataFrame(confusion.numpy(), index=names, columns=names)
    table.attrs["includes_training_clips"] = bool(
        whole and (not data_dir or (trained_on is not None and _same_folder(data_dir, trained_on))))
    return accuracy, table


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``strrnn evaluate``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by strrnn train")
    parser.add_argument("--data-dir", default=None, help="dataset root (default: the run's)")
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--all-clips", action=argparse.BooleanOptionalAction, default=None,
                        help="score every clip of a Speech Commands test-set layout --data-dir (default: when it is "
                             "not the folder the run trained on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: 1 for recurrent models of at most 256 hidden units)")
    parser.add_argument("--confusion", default=None, metavar="FILE",
                        help="where to write the confusion matrix as CSV (default: <run>/confusion_<split>.csv)")
    args = parser.parse_args(argv)
    prog = "strrnn evaluate"
    if args.confusion is not None:
        try:
            check_output(args.confusion, "--confusion")  # before minutes of scoring
        except RunFolderError as err:
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 2
    from ..data import DataError
    from .threads import apply_threads, threads_for_run

    try:
        apply_threads(threads_for_run(args.run, args.threads))
    except ValueError as err:
        print(f"strrnn evaluate: error: {err}", file=sys.stderr)
        return 2

    try:
        accuracy, confusion = evaluate(args.run, args.data_dir, args.split, args.all_clips)
    except (ValueError, DataError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    run = Path(args.run)
    out = Path(args.confusion) if args.confusion else \
        (run if run.is_dir() else run.parent) / f"confusion_{args.split}.csv"
    clips = f"{int(confusion.values.sum())} clips{' of ' + str(args.data_dir) if args.data_dir else ''}"
    print(confusion.to_string())
    if confusion.attrs.get("includes_training_clips"):
        print(f"\naccuracy of the exported model on all {clips}, the folder it trained on: {accuracy:.4f} — this "
              "includes its training clips, so it is not a test accuracy (drop --all-clips for the held-out test "
              "speakers)")
    else:
        print(f"\n{args.split} accuracy of the exported model: {accuracy:.4f} on {clips}")
    try:  # after the accuracy is out: a read-only run folder costs the file, not the result
        check_output(out, "--confusion")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, confusion.to_csv())
    except (RunFolderError, OSError) as err:
        print(f"{prog}: note: the confusion matrix was not written ({err}); pass --confusion FILE to write it "
              "elsewhere", file=sys.stderr)
        return 0
    print(f"confusion matrix: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
