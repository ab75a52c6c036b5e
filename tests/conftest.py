import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def tiny_cfg(tmp_path):
    from k1.testing import tiny_config

    def make(*overrides, **extra):
        return tiny_config(tmp_path / "data", list(overrides), **extra)

    return make
