"""DataConfig: defaults, strictness and cross-field checks that say how to fix the problem."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from k1.data import DataConfig


def test_defaults():
    cfg = DataConfig()
    assert (cfg.source, cfg.domains, cfg.tokenizer, cfg.val_fraction) == ("builtin", ["prose", "code", "science"], "byte", 0.1)
    assert set(cfg.hf_datasets) == {"prose", "code", "science"}
    assert "wikitext-103-raw-v1" in cfg.hf_datasets["prose"]


def test_strict_and_frozen():
    with pytest.raises(ValidationError):
        DataConfig(tokeniser="byte")  # a typo is an error
    cfg = DataConfig()
    with pytest.raises(ValidationError):
        cfg.source = "files"


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"source": "files", "domains": ["a"]}, "paths.a"),
        ({"source": "hf", "domains": ["poems"]}, "hf_datasets.poems"),
        ({"domains": ["klingon"]}, "choose from"),
        ({"domains": ["prose", "prose"]}, "twice"),
        ({"val_fraction": 0.0}, "val_fraction"),
    ],
)
def test_cross_field_checks(kwargs, hint):
    with pytest.raises(ValidationError) as e:
        DataConfig(**kwargs)
    assert hint in str(e.value)


def test_extras_are_valid_builtin_domains():
    assert DataConfig(domains=["austen", "kjv", "pydocs"]).domains == ["austen", "kjv", "pydocs"]
