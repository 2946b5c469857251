"""The ImageFolder/ImageNet data module and its errors on bad trees."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from cnn.imagenet import ImageNetDataModule, check_imagefolder, make_fake_imagefolder


def test_fake_imagefolder_loads_as_batches(tmp_path):
    make_fake_imagefolder(tmp_path, classes=3, per_class=4, size=40)
    data = ImageNetDataModule(tmp_path, batch_size=4, num_workers=0, image_size=32)
    assert data.num_classes == 3
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}
    val_images, _ = next(iter(data.val_dataloader()))
    assert val_images.shape == (4, 3, 32, 32)
    assert len(data.val_set) == 12 and data.classes == ["class_000", "class_001", "class_002"]


def test_folder_without_images_is_a_clear_error(tmp_path):
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no images found under .*train"):
        ImageNetDataModule(tmp_path, num_workers=0).setup("fit")


def test_empty_training_class_is_named(tmp_path):
    make_fake_imagefolder(tmp_path, classes=["cat", "dog"], per_class=1, size=8)
    shutil.rmtree(tmp_path / "train" / "dog")
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="dog"):
        check_imagefolder(tmp_path)


def test_different_class_folders_are_listed(tmp_path):
    make_fake_imagefolder(tmp_path, classes=["cat", "dog", "owl"], per_class=1, size=8, splits=("train",))
    make_fake_imagefolder(tmp_path, classes=["cat", "dog", "emu"], per_class=1, size=8, splits=("val",))
    with pytest.raises(ValueError, match="class folders differ") as error:
        ImageNetDataModule(tmp_path, num_workers=0).setup("fit")
    assert "owl" in str(error.value) and "emu" in str(error.value)


def test_missing_split_and_missing_root(tmp_path):
    make_fake_imagefolder(tmp_path, classes=2, per_class=1, size=8, splits=("train",))
    with pytest.raises(FileNotFoundError, match="val"):
        check_imagefolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="ImageFolder layout"):
        check_imagefolder(tmp_path / "nowhere")


@pytest.mark.parametrize("name, model", [("resnet50_str", "resnet50"), ("mobilenetv1_str", "mobilenetv1")])
def test_paper_configs_parse_with_the_training_cli(name, model):
    from strrnn.cli.train import parse_config

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    config = parse_config(["--config", str(path), "--data-dir", "/nonexistent"])
    assert (config["dataset"], config["model"], config["mode"]) == ("imagenet", model, "unstructured")
    assert (config["lr"], config["momentum"], config["batch_size"], config["epochs"]) == (
        0.256,
        0.875,
        256,
        100,
    )
    assert (config["label_smoothing"], config["warmup_epochs"], config["scheduler"]) == (0.1, 5, "cosine")
    assert config["precision"] == "bf16-mixed"


def test_training_cli_runs_str_on_an_imagefolder(tmp_path):
    from strrnn.cli.train import main

    make_fake_imagefolder(tmp_path / "data", classes=3, per_class=8, size=24)
    out = tmp_path / "run"
    status = main(
        [
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(tmp_path / "data"),
            "--model",
            "small_cnn",
            "--mode",
            "unstructured",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
            "--s-init",
            "-5",
            "--out",
            str(out),
            "--no-progress-bar",
        ]
    )
    assert status == 0
    table = pd.read_csv(out / "report.csv")
    assert list(table["module"])[-1] == "total" and (table["mode"].iloc[:-1] == "unstructured").all()
    assert (out / "exported.pt").is_file()
