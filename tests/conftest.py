import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    # tiny tensors: one thread avoids oversubscription (2 threads on a busy 2-core machine ran 10-80x slower)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_cfg(tmp_path):
    from k1.testing import tiny_config

    def make(*overrides, **extra):
        return tiny_config(tmp_path / "data", list(overrides), **extra)

    return make
