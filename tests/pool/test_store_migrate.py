"""`k1 pool migrate-store`: a SQLite store copied into a store on the other backend keeps every row and id,
keeps refusing replayed feedback, goes on numbering after the copied ids, and refuses a non-empty target."""

import json

import pytest

from k1.errors import ConfigError
from k1.pool.store import PoolStore
from k1.pool.store_copy import copy_store
from k1.testing.cli import run_k1


def _filled(path) -> PoolStore:
    s = PoolStore(path)
    s.record_outcome("a", "math", 1.0, "verifier")
    assert s.record_feedback("a", "math", 0.0, "feedback", "req-1")
    s.charge("a", "success", 2.5, 1e9, 0.1, request="req-1", prompt_tokens=3, completion_tokens=4)
    s.charge("b", "timeout", 0.5, 0.0, 1.0, request="req-2")
    s.add_experience({"ts": 1.0, "request": "req-1", "prompt": "2+2?", "response": "4", "member": "a",
                      "context": "math", "extra": {"task_class_source": "caller"}})
    s.set_calibration("a", [{"cls": "math", "task": "add", "prompt": "1+1", "response": "2", "score": 1, "atp": 0.5}])
    s.log_state(None, "WAKE", "start")
    s.set_meta("dream_weights:a", "/w/a.safetensors")
    s.publish("student:a", "v1")
    return s


def test_migrate_store_copies_everything_and_the_copy_goes_on(tmp_path, store_url):
    src = _filled(tmp_path / "old.sqlite")
    from typer.testing import CliRunner

    from k1.pool.cli import app

    r = CliRunner().invoke(app, ["migrate-store", "--from", str(tmp_path / "old.sqlite"), "--to", store_url],
                           catch_exceptions=False)
    out = json.loads(r.stdout)
    assert out["rows"]["ledger"] == 2 and out["rows"]["experiences"] == 1 and out["spent_atp"] == 3.0
    dst = PoolStore(store_url)
    assert dst.trust() == src.trust()
    assert [dict(x) for x in dst.ledger()] == [dict(x) for x in src.ledger()]
    assert dst.experiences() == src.experiences() and dst.labelled_prompts(5) == [("2+2?", "math")]
    assert dst.calibration_rows() == src.calibration_rows() and dst.state_log() == src.state_log()
    assert dst.get_meta("dream_weights:a") == "/w/a.safetensors" and dst.version("student:a") == (1, "v1")
    assert not dst.record_feedback("a", "math", 1.0, "feedback", "req-1")  # still a replay
    assert dst.charge("c", "success", 1.0, 0, 0) == 3  # ids go on after the copied ones
    with pytest.raises(ConfigError, match="not empty"):
        copy_store(src, dst)


def test_migrate_store_refuses_a_url_it_does_not_know(tmp_path):
    _filled(tmp_path / "old.sqlite").close()
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_k1("pool", "migrate-store", "--from", tmp_path / "old.sqlite", "--to", "mysql://u@h/db", check=False)
    assert r.returncode == 2 and "unknown URL scheme" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file called `mysql:`
