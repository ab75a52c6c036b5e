import pytest


@pytest.fixture(scope="session")
def k1_run(tmp_path_factory):
    """A real tiny K-1 run directory with a checkpoint (trained for a few steps)."""
    from k1.testing import tiny_run

    return tiny_run(tmp_path_factory.mktemp("k1run"), steps=60)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A tiny Llama and its byte tokenizer saved as a Hugging Face folder."""
    from k1.pool.testing import byte_hf_tokenizer, tiny_llama

    d = tmp_path_factory.mktemp("hf") / "tiny-llama"
    tiny_llama().save_pretrained(d)
    byte_hf_tokenizer().save_pretrained(d)
    return d
