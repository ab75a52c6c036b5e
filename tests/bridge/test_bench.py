"""bench/bridge.py --quick runs against a real hub process and reports lost == 0 on its last line."""

import json
import subprocess
import sys
from pathlib import Path

from k1.bridge.testing import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_loses_nothing(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bridge.py"), "--quick", "--out", str(tmp_path / "b.json")],
                       capture_output=True, text=True, env=subprocess_env(), timeout=120, check=True)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["sent"] == result["received"] == 500 and result["lost"] == 0 and result["duplicates"] == 0
    assert result["msgs_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]


def test_bench_compare_quick_runs_both_backends(tmp_path):
    from k1.bridge.testing import start_nats

    try:
        p, _ = start_nats(tmp_path / "probe")
    except RuntimeError as e:
        import pytest

        pytest.skip(f"JetStream bench not run: {e}")
    p.kill()
    p.wait()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bridge.py"), "--quick", "--compare", "--out",
                        str(tmp_path / "c.json")], capture_output=True, text=True, env=subprocess_env(), timeout=180,
                       check=True)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(x["backend"], x["hub_processes"]) for x in result["runs"]] == [("sqlite", 1), ("jetstream", 1),
                                                                          ("jetstream", 2)]
    assert all(x["received"] == 500 and x["lost"] == 0 and x["duplicates"] == 0 for x in result["runs"])
