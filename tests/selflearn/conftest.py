import pytest


@pytest.fixture(scope="session")
def format_target(tmp_path_factory):
    """A tiny K-1 run that answers "Q: What is a + b?" with one number, right only by chance (shared: ~10 s)."""
    import torch

    from k1.selflearn.testing import format_run

    torch.set_num_threads(1)
    return format_run(tmp_path_factory.mktemp("format"), steps=400)
