"""FSDD: the real corpus from ../shared/data/fsdd when present, and a generated tree for the error paths."""

import os
from pathlib import Path

import numpy as np
import pytest
from conftest_data import make_fsdd_tree

import strrnn.data as data
from strrnn.data.errors import DatasetNotFoundError, LayoutError

# the checkout's reference copy (strrnn's own default is the user data folder, see test_data_paths.py)
FSDD = Path(os.environ.get("STRRNN_FSDD") or Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd")
needs_fsdd = pytest.mark.skipif(
    not (FSDD / "recordings").is_dir(),
    reason=f"real FSDD not found at {FSDD} (set $STRRNN_FSDD to a folder holding recordings/)",
)


@pytest.fixture(scope="session")
def fsdd_cache(tmp_path_factory):
    """One feature cache for the whole session: the 3,000 clips are featurized once."""
    return tmp_path_factory.mktemp("fsdd-cache")


@needs_fsdd
def test_real_fsdd_official_split(fsdd_cache):
    dm = data.get("fsdd", FSDD, cache_dir=fsdd_cache, progress=False)
    dm.setup()
    sizes = dm.split_sizes()
    assert sizes["train"] + sizes["val"] == 2700 and sizes["test"] == 300 and sizes["val"] == 300
    assert dm.input_shape == (99, 32) and dm.num_classes == 10 and not dm.bad_files
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (100, 99, 32)
    assert np.bincount(dm.test_set.targets, minlength=10).tolist() == [30] * 10
    # end-aligned: the last frames carry speech, the first frames of short clips are padding
    raw = np.asarray(dm.test_set.features)
    assert raw[:, -10:].mean() > raw[:, :10].mean()
    dm2 = data.get("fsdd", FSDD, cache_dir=fsdd_cache, progress=False)
    dm2.setup()
    assert all(dm2.cache_hits.values())


@needs_fsdd
def test_real_fsdd_holdout_speaker(fsdd_cache):
    dm = data.get("fsdd", FSDD, cache_dir=fsdd_cache, holdout_speaker="theo", progress=False)
    dm.setup()
    assert dm.split_sizes() == {"train": 2250, "val": 250, "test": 500}


def test_fsdd_tree_splits_and_val_takes(tmp_path):
    root = make_fsdd_tree(tmp_path / "fsdd", speakers=("alice", "bob"), takes=range(0, 8))
    dm = data.get("fsdd", root, cache_dir=tmp_path / "c", val_takes=[5], progress=False)
    dm.setup()
    assert dm.split_sizes() == {"train": 10 * 2 * 2, "val": 10 * 2, "test": 10 * 2 * 5}
    assert dm.input_shape == (99, 32)
    with pytest.raises(ValueError, match="holdout_speaker"):
        data.get("fsdd", root, holdout_speaker="carol", cache_dir=tmp_path / "c", progress=False).setup()


def test_fsdd_missing_root_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "none")):
        data.get("fsdd", tmp_path / "none").setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="recordings"):
        data.get("fsdd", tmp_path / "empty").setup()


def test_files_outside_the_name_pattern_are_named_in_a_warning(tmp_path):
    root = make_fsdd_tree(tmp_path / "fsdd")
    (root / "recordings" / "seven_jackson_1.wav").write_bytes((next((root / "recordings").glob("*.wav"))).read_bytes())
    dm = data.get("fsdd", root=root, cache_dir=tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match=r"1 file\(s\) .* ignored: seven_jackson_1.wav"):
        dm.setup()


def test_cli_reads_strrnn_fsdd_and_names_data_dir_when_missing(tmp_path, monkeypatch, capsys):
    from strrnn import artifacts as runs
    from strrnn.cli import train

    monkeypatch.setenv("STRRNN_FSDD", str(tmp_path / "elsewhere"))
    assert runs.default_data_dir({"dataset": "fsdd", "data_dir": None}) == tmp_path / "elsewhere"
    assert train.main(["--dataset", "fsdd", "--mode", "dense", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "elsewhere") in err and "--data-dir" in err
