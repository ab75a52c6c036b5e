"""The live stream (bench/lifelong.py --quick) end to end against a real `k1 pool serve` of tiny members."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lifelong_quick_stream_over_http(tmp_path, k1_run, hf_dir):
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[pool]\nstore = "pool.sqlite"\n[[members]]\nname = "k1"\nkind = "k1"\nrun = "{k1_run}"\n'
                    f'[[members]]\nname = "tiny"\nkind = "hf"\npath = "{hf_dir}"\n')
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "lifelong.py"), "--pool", str(pool), "--quick",
                        "--requests", "20", "--window", "10", "--oracle", "--strongest", "tiny", "--out", str(out),
                        "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["requests"] == 20 and len(res["windows"]) == 2 and set(res["members"]) == {"k1", "tiny"}
    for w in res["windows"]:
        assert w["scored"] == 10 and {"pool", "strongest", "oracle"} <= set(w)
        assert w["oracle"]["success"] >= max(w["pool"]["success"], w["strongest"]["success"])
        assert w["strongest"]["atp"] > 0
    assert (out / "lifelong.png").stat().st_size > 1000
    # every answer's verdict went back through /v1/feedback: the server's store holds 20 feedback rows
    import sqlite3

    db = sqlite3.connect(tmp_path / "pool.sqlite")
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 20
    assert "not run" in res["dream"]
