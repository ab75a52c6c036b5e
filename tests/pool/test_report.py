"""The pool's HTML page from a real store: trust over time, cost, routing shares, state log."""

import re

from typer.testing import CliRunner

from k1.pool.cli import app
from k1.pool.store import PoolStore


def test_pool_report_has_every_section_with_data(tmp_path):
    s = PoolStore(tmp_path / "p.sqlite")
    for i in range(6):
        m = "a" if i % 2 else "b"
        s.charge(m, "success" if i < 5 else "cancelled", 1.0 + i, 1e9, 0.1, task_class="stable")
        s.record_outcome(m, "stable", float(i % 3 != 0), "feedback")
    s.log_state("WAKE", "CRISIS", "4 of the last 5 calls failed")
    s.close()
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", "--store", str(tmp_path / "p.sqlite"), "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0
    page = out.read_text()
    assert set(re.findall(r'data-plot="([^"]+)"', page)) == {"pool-trust", "pool-cost", "pool-shares"}
    assert "data-absent" not in page and "CRISIS" in page and "cancelled" in page
    assert "http://" not in page and "https://" not in page  # self-contained


def test_empty_store_says_what_is_missing(tmp_path):
    PoolStore(tmp_path / "p.sqlite").close()
    out = tmp_path / "r.html"
    CliRunner().invoke(app, ["report", "--store", str(tmp_path / "p.sqlite"), "--out", str(out)],
                       catch_exceptions=False)
    page = out.read_text()
    assert len(re.findall(r"data-absent=", page)) == 4 and "data-plot" not in page
