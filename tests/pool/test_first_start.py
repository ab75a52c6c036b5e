"""From a fresh setup (an empty pool cache): `k1 pool calibrate` builds the default pool and calibrates it,
then `k1 pool serve` answers "What is 7 + 5?" with 12 through `auto`, from the official openai client,
LiteLLM and plain HTTP (what curl sends). Slow: converts SmolLM2 and runs every member on the calibration set (minutes on 2 cores)."""

import json
import os
import subprocess
import sys

import httpx
import openai
import pytest

from k1.pool.testing import free_port, wait_until_serving
from k1.testing import run_k1

pytestmark = pytest.mark.slow


def test_fresh_setup_then_auto_answers_arithmetic(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "K1_POOL_DIR": str(tmp_path / "cache")}
    cal = json.loads(run_k1("pool", "calibrate", "--json", env=env).stdout.strip().splitlines()[-1])
    assert set(cal["calibration"]) == {"smollm2", "smollm2-15l", "smollm2-6l"}
    assert cal["calibration"]["smollm2"]["arithmetic"]["solved"] >= 1  # it solves some; the students none
    st = json.loads(run_k1("pool", "status", "--json", env=env).stdout)
    rows = {(r["member"], r["context"]): r for r in st["trust"]}
    assert rows[("smollm2", "arithmetic")]["cal_n"] == 5
    assert rows[("smollm2", "arithmetic")]["mean"] > rows[("smollm2-6l", "arithmetic")]["mean"]

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "k1.cli", "pool", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(proc, port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "What is 7 + 5?"}],
                                           max_tokens=24)
        k1 = r.model_extra["k1"]
        assert k1["member"] == "smollm2" and k1["context"] == "arithmetic"
        assert "12" in r.choices[0].message.content
        body = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120,
                          json={"model": "auto", "max_tokens": 24,
                                "messages": [{"role": "user", "content": "What is 7 + 5?"}]}).json()
        assert "12" in body["choices"][0]["message"]["content"]
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never the network
        litellm = pytest.importorskip("litellm")
        r = litellm.completion(model="openai/auto", api_base=f"http://127.0.0.1:{port}/v1", api_key="x",
                               messages=[{"role": "user", "content": "What is 7 + 5?"}], max_tokens=24,
                               num_retries=0, timeout=120)
        assert "12" in r.choices[0].message.content and r.model_dump()["k1"]["member"] == "smollm2"
    finally:
        proc.terminate()
        proc.wait(30)
