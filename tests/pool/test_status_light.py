"""`k1 pool status` and `k1 pool budget` read the pool file and its store only: no member is loaded (the
default pool's three models took most of the command's time just to print a table)."""

import json

from k1.testing import run_k1


def _pool_without_weights(tmp_path):
    f = tmp_path / "pool.toml"  # the members' folders do not exist: loading either one would fail
    f.write_text('[pool]\nbudget_atp = 50\nstore = "pool.sqlite"\n'
                 '[[members]]\nname = "big"\nkind = "hf"\npath = "absent/big"\nroles = ["teacher"]\n'
                 '[[members]]\nname = "small"\nkind = "hf"\npath = "absent/small"\n')
    return f


def test_status_prints_without_loading_any_member(tmp_path):
    f = _pool_without_weights(tmp_path)
    st = json.loads(run_k1("pool", "status", "--pool", f, "--json").stdout)
    assert [m["name"] for m in st["members"]] == ["big", "small"] and st["uncalibrated"] == ["big", "small"]
    assert st["budget"] == {"limit_atp": 50.0, "spent_atp": 0, "left_share": 1.0}
    r = run_k1("pool", "status", "--pool", f)
    assert "members" in r.stdout and "big" in r.stdout and "not calibrated: big, small" in r.stderr


def test_budget_prints_a_table_and_json_on_request(tmp_path):
    f = _pool_without_weights(tmp_path)
    table = run_k1("pool", "budget", "--pool", f).stdout
    assert "limit ATP" in table and "50" in table and "{" not in table
    assert json.loads(run_k1("pool", "budget", "--pool", f, "--json").stdout) == {"limit_atp": 50.0, "spent_atp": 0}
