"""The delivery promise under churn: senders, a consumer whose handler fails on 10 % of messages, and hub
processes SIGKILLed and restarted mid-run (on JetStream: two hub processes on one NATS, the consumer's hub
and the NATS server itself killed). Every receipted message is processed, none is lost, and none is
processed again after it was acked. A short run of each is in the default suite; the full ones are
slow-marked."""

import pytest

from k1.bridge.testing import run, soak, start_nats


def check(r: dict, restarts: int) -> None:
    assert r["sent"] == r["senders"] * r["messages_per_sender"]
    assert r["delivered"] == r["sent"] and r["lost"] == 0
    assert r["processed_twice"] == 0
    assert r["restarts"] == restarts and r["failures"] > 0
    assert r["log_pending"] == 0
    if r["backend"] == "sqlite":  # SQLite keeps acked messages for the retention; a JetStream work queue does not
        assert r["log_messages"] == r["sent"]


def needs_nats(tmp_path):
    try:
        p, _ = start_nats(tmp_path / "probe")
    except RuntimeError as e:
        pytest.skip(f"JetStream soak not run: {e}")
    p.kill()
    p.wait()


def test_soak_short(tmp_path):
    check(run(soak(tmp_path, senders=3, messages=60, kills=1), timeout=120), restarts=1)


def test_soak_short_jetstream_two_hubs(tmp_path):
    needs_nats(tmp_path)
    r = run(soak(tmp_path, senders=3, messages=60, kills=2, backend="jetstream"), timeout=180)
    check(r, restarts=2)
    assert r["killed"] == ["hub", "nats"] and r["hub_processes"] == 2


@pytest.mark.slow
def test_soak_full(tmp_path):
    check(run(soak(tmp_path, senders=5, messages=1000, kills=3), timeout=600), restarts=3)


@pytest.mark.slow
def test_soak_full_jetstream_two_hubs(tmp_path):
    needs_nats(tmp_path)
    check(run(soak(tmp_path, senders=5, messages=1000, kills=2, backend="jetstream"), timeout=600), restarts=2)
