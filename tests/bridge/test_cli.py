"""`k1 bridge serve / send / listen / log` as a person at a terminal runs them (real subprocesses)."""

import json
import subprocess

from k1.bridge.testing import bridge_cmd, start_hub_process, subprocess_env
from k1.testing import run_k1


def test_serve_send_listen_log(agents_file, tmp_path):
    db = tmp_path / "hub.sqlite"
    hub, port = start_hub_process(agents_file, db)
    u = f"ws://127.0.0.1:{port}"
    try:
        token_file = tmp_path / "alice.token"
        token_file.write_text("tok-alice\n")
        r = subprocess.run(bridge_cmd("send", "--url", u, "--name", "alice", "--token-file", token_file, "--to", "critic",
                                      "--data", '{"q": "2+2?"}', "--type", "ask"),
                           capture_output=True, text=True, env=subprocess_env(), check=True)
        msg_id = r.stdout.strip()
        r = subprocess.run(bridge_cmd("listen", "--url", u, "--name", "bob", "--roles", "critic", "--count", "1"),
                           capture_output=True, text=True, env={**subprocess_env(), "K1_BRIDGE_TOKEN": "tok-bob"},
                           check=True, timeout=30)
        got = json.loads(r.stdout.strip().splitlines()[-1])
        # bob had never registered: the role comes from the agents file, and the message waited for him
        assert got["from"] == "alice" and got["id"] == msg_id and got["data"] == {"q": "2+2?"}
    finally:
        hub.kill()
        hub.wait()
    r = run_k1("bridge", "log", "--db", db, "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["id"] == msg_id and rows[0]["type"] == "ask"


def test_cli_errors_are_one_line(agents_file, tmp_path):
    r = subprocess.run(bridge_cmd("send", "--url", "ws://127.0.0.1:9", "--name", "x", "--to", "y", "--data", "1"),
                       capture_output=True, text=True,
                       env={k: v for k, v in subprocess_env().items() if k != "K1_BRIDGE_TOKEN"})
    assert r.returncode == 2 and "K1_BRIDGE_TOKEN" in r.stderr and "Traceback" not in r.stderr
    r = run_k1("bridge", "serve", "--agents", tmp_path / "missing.toml", check=False)
    assert r.returncode == 2 and "no such file" in r.stderr
