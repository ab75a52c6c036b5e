"""The live stream (bench/lifelong.py --quick) end to end against a real `k1 pool serve` of tiny members, with
DREAM running inside the stream in a separate process and the same pool without DREAM beside it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def copier():
    """A real OpenAI-compatible server on 127.0.0.1 standing in for a remote model that repeats the string of
    "Repeat this exactly: S" only when told how (a system message or earlier turns), else rambles."""
    import http.server

    from k1.pool.testing import serve_http

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            msgs = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
            last = msgs[-1]["content"]
            text = last.split(": ")[-1] if len(msgs) > 1 and "Repeat this exactly: " in last else "Sure! Here it is."
            chunk = {"choices": [{"delta": {"content": text}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 3}}
            out = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    with serve_http(Handler) as base:
        yield f"{base}/v1"


def test_lifelong_quick_stream_over_http_with_dream_inside(tmp_path, k1_run, hf_dir, copier):
    pool = tmp_path / "pool.toml"
    pool.write_text(f'[pool]\nstore = "pool.sqlite"\n[[members]]\nname = "k1"\nkind = "k1"\nrun = "{k1_run}"\n'
                    'roles = ["student"]\n'
                    f'[[members]]\nname = "tiny"\nkind = "hf"\npath = "{hf_dir}"\n'
                    f'[[members]]\nname = "copier"\nkind = "openai"\nbase_url = "{copier}"\nroles = ["teacher"]\n')
    out = tmp_path / "out"
    dream_args = ("--student-kind k1 --student k1 --teacher copier --practice 12 --shots 2 --steps 3 --max-tokens 8 "
                  "--teacher-system 'Repeat only.'")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "lifelong.py"), "--pool", str(pool), "--quick",
                        "--requests", "30", "--window", "10", "--oracle", "--strongest", "tiny", "--twin",
                        "--dream-class", "copy", "--dream-after", "16", "--dream-every-s", "3600", "--crisis-off",
                        "--dream-args", dream_args, "--out", str(out),
                        "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["requests"] == 30 and len(res["windows"]) == 3 and set(res["members"]) == {"k1", "tiny", "copier"}
    for w in res["windows"]:
        assert w["scored"] <= 10 and {"pool", "twin", "strongest", "oracle"} <= set(w)
        assert w["oracle"]["success"] >= max(w["pool"]["success"], w["strongest"]["success"])
        assert w["strongest"]["atp"] > 0
    assert (out / "lifelong.png").stat().st_size > 1000
    # DREAM ran once, in its own process, on the serving store: a K-1 student trained on the copier's verified
    # practice answers, calibrated on its trust prompts, published for the server to take up
    (cycle,) = res["dream"]  # one cycle: the next would be due an hour later
    assert cycle["outcome"] == "ok" and cycle["new_versions"] == {"k1": 1}, cycle
    assert 0 < cycle["started_at"] <= cycle["finished_at"] <= 30
    rep = cycle["report"]
    assert rep["student"] == "k1" and rep["method"] == "student:k1" and rep["train"] >= 1
    assert rep["calibrated_on"] == "trust prompts" and rep["practice"]["asked"] == 12
    import sqlite3

    db = sqlite3.connect(tmp_path / "pool.sqlite")
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 30  # every verdict through /v1/feedback
    assert db.execute("SELECT version FROM versions WHERE name = 'student:k1'").fetchone()[0] == len(res["dream"])
    twin = sqlite3.connect(out / "twin.sqlite")  # the pool without DREAM: same feedback, no student published
    assert twin.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 30
    assert twin.execute("SELECT COUNT(*) FROM versions WHERE name LIKE 'student:%'").fetchone()[0] == 0
