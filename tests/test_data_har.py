"""UCI HAR from a generated tree in the real layout: har6, har2 grouping, subject-wise validation."""

import numpy as np
import pytest
from conftest_data import make_har_tree

import strrnn.data as data
from strrnn.data.errors import DatasetNotFoundError, LayoutError
from strrnn.data.har import ACTIVITIES, HAR2_GROUPS


@pytest.fixture
def har_root(tmp_path):
    make_har_tree(tmp_path / "har")
    return tmp_path / "har"


def test_har6(har_root):
    dm = data.get("har6", har_root, batch_size=8)
    dm.setup()
    assert dm.num_classes == 6 and dm.input_shape == (128, 9) and dm.num_features == 9
    assert dm.class_names[0] == "walking"
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (8, 128, 9)
    assert len(dm.test_set) == 12 and len(dm.train_set) + len(dm.val_set) == 24
    assert len(dm.val_subjects) == 1  # 15% of 4 training subjects, rounded, at least one
    tr = np.stack([dm.train_set[i][0].numpy() for i in range(len(dm.train_set))])
    np.testing.assert_allclose(tr.reshape(-1, 9).mean(0), 0, atol=1e-4)  # per-channel train statistics
    assert (har_root / "UCI HAR Dataset" / ".cache").is_dir()
    dm2 = data.get("har6", har_root / "UCI HAR Dataset")  # the folder itself works too
    dm2.setup()
    np.testing.assert_array_equal(dm2.test_set.targets, dm.test_set.targets)


def test_har2_grouping(har_root):
    dm = data.get("har2", har_root)
    dm.setup()
    assert dm.num_classes == 2
    ids = (np.arange(12) % 6) + 1  # y_test in the fixture
    expect = [0 if ACTIVITIES[i - 1] in HAR2_GROUPS[0] else 1 for i in ids]
    assert dm.test_set.targets.tolist() == expect
    assert set(HAR2_GROUPS[0]) == {"SITTING", "LAYING", "WALKING_UPSTAIRS"}


def test_har_missing(tmp_path, har_root):
    with pytest.raises(DatasetNotFoundError, match="UCI HAR"):
        data.get("har6", tmp_path / "none").setup()
    (har_root / "UCI HAR Dataset" / "test" / "Inertial Signals" / "body_gyro_y_test.txt").unlink()
    with pytest.raises(LayoutError, match="body_gyro_y_test.txt"):
        data.get("har6", har_root).setup()
