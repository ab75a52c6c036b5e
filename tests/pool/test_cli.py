"""`k1 pool` on the real command line: serve (a subprocess on 127.0.0.1), status, budget, and errors."""

import json
import os
import subprocess
import sys

import openai

from k1.pool.testing import free_port, wait_until_serving
from k1.testing import run_k1


def _pool_file(tmp_path, hf_dir, k1_run):
    f = tmp_path / "pool.toml"
    f.write_text(f'''
[pool]
budget_atp = 100
store = "state/pool.sqlite"
[[members]]
name = "k1"
kind = "k1"
run = "{k1_run}"
[[members]]
name = "tiny"
kind = "hf"
path = "{hf_dir}"
''')
    return f


def test_serve_answers_the_openai_client_then_status_shows_it(tmp_path, hf_dir, k1_run):
    f = _pool_file(tmp_path, hf_dir, k1_run)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "k1.cli", "pool", "serve", "--pool", str(f), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(proc, port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "the river"}],
                                           max_tokens=4)
        answered = r.model_extra["k1"]["member"]
        assert answered in ("k1", "tiny")
    finally:
        proc.terminate()
        proc.wait(20)
    st = json.loads(run_k1("pool", "status", "--pool", f, "--json").stdout)
    assert st["calls"][answered]["calls"] == 1 and st["budget"]["spent_atp"] > 0
    assert st["recent"][0]["member"] == answered
    assert (tmp_path / "state" / "pool.sqlite").is_file()
    from typer.testing import CliRunner

    from k1.pool.cli import app
    table = CliRunner().invoke(app, ["status", "--pool", str(f)], catch_exceptions=False).stdout
    assert "trust" in table and "recent experiences" in table and answered in table
    spent = json.loads(run_k1("pool", "budget", "--pool", f, "--reset", "--json").stdout)
    assert spent == {"limit_atp": 100.0, "spent_atp": 0}


def test_a_bad_pool_file_is_one_line_and_exit_2(tmp_path):
    r = run_k1("pool", "status", "--pool", tmp_path / "missing.toml", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[members]]\nname = "x"\nkind = "nope"\n')
    r = run_k1("pool", "status", "--pool", bad, check=False)
    assert r.returncode == 2 and "kind" in r.stderr and "Traceback" not in r.stderr


def test_ask_routes_one_prompt_and_records_feedback(tmp_path, hf_dir, k1_run):
    from typer.testing import CliRunner

    from k1.pool.cli import app
    from k1.pool.config import read_pool_config
    from k1.pool.store import PoolStore
    from k1.pool.route.taskclass import TaskClassifier

    f = _pool_file(tmp_path, hf_dir, k1_run)
    r = CliRunner().invoke(app, ["ask", "the river", "--pool", str(f), "--max-tokens", "4", "--good"],
                           catch_exceptions=False)
    cls = TaskClassifier().classify("the river")  # trust is keyed by the prompt's task class
    assert r.exit_code == 0 and "ATP" in r.stdout and f"task class {cls}" in r.stdout
    store = PoolStore(read_pool_config(f).pool.store)
    (member, ctx), (s, fails) = next(iter(store.trust().items()))
    assert ctx == cls and (s, fails) == (1.0, 0.0) and member in r.stdout
