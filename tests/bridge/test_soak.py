"""The delivery promise under churn: senders, a consumer whose handler fails on 10 % of messages, and a hub
process SIGKILLed and restarted mid-run. Every receipted message is processed, none is lost, and none is
processed again after it was acked. A short run is in the default suite; the full one is slow-marked."""

import pytest

from k1.bridge.testing import run, soak


def check(r: dict, restarts: int) -> None:
    assert r["sent"] == r["senders"] * r["messages_per_sender"]
    assert r["delivered"] == r["sent"] and r["lost"] == 0
    assert r["processed_twice"] == 0
    assert r["restarts"] == restarts and r["failures"] > 0
    assert r["log_pending"] == 0 and r["log_messages"] == r["sent"]


def test_soak_short(tmp_path):
    check(run(soak(tmp_path, senders=3, messages=60, kills=1), timeout=120), restarts=1)


@pytest.mark.slow
def test_soak_full(tmp_path):
    check(run(soak(tmp_path, senders=5, messages=1000, kills=3), timeout=600), restarts=3)
