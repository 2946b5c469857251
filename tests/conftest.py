"""Shared fixtures. (Data-tree helpers live in conftest_data.py and are imported explicitly.)"""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests at one intra-op thread, restored afterwards.

    Their models are tiny: with two threads on a shared 2-core machine each small matmul can wait
    milliseconds for the other thread, so one thread is faster and steadier.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
