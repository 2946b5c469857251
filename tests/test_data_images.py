"""Small real image sets shipped by packages (no network)."""

import numpy as np
import pytest

import strrnn.data as data


@pytest.mark.parametrize("name,total,shape", [("mnist5k", 5000, (1, 28, 28)), ("digits", 1797, (1, 8, 8))])
def test_image_sets(name, total, shape):
    dm = data.get(name, batch_size=32)
    dm.setup()
    sizes = dm.split_sizes()
    assert sum(sizes.values()) == total and dm.input_shape == shape and dm.num_classes == 10
    assert dm.num_features == 1
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (32, *shape) and y.dtype.is_floating_point is False
    assert np.array(dm.normalization["mean"]).shape == (1, 1, 1)
    counts = np.bincount(dm.test_set.targets, minlength=10)
    assert counts.min() > 0.8 * counts.max()  # stratified
    idx = [set(s.index.tolist()) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
