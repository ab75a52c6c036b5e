"""Bridge files written before named migrations (the exchange log counted its schema in `PRAGMA user_version`,
the inbox looked at its columns) open with the current code: adopted, not migrated again, data kept."""

import json
import sqlite3

import pytest

from k1.bridge import ExchangeLog, Inbox
from k1.bridge.protocol import Envelope
from k1.errors import ConfigError

# the exchange log as the hub wrote it at user_version 2 (after its second migration)
V2_LOG = """
CREATE TABLE deliveries (recipient TEXT NOT NULL, seq INTEGER NOT NULL REFERENCES messages(seq), acked_ts REAL,
    size INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (recipient, seq));
CREATE INDEX deliveries_pending ON deliveries(recipient, seq) WHERE acked_ts IS NULL;
CREATE TABLE agents (name TEXT PRIMARY KEY, roles TEXT NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, type TEXT NOT NULL,
    sender TEXT NOT NULL, target TEXT NOT NULL, reply_to TEXT, ts REAL NOT NULL, stored_ts REAL NOT NULL,
    envelope TEXT NOT NULL, payload BLOB, UNIQUE (sender, id));
CREATE INDEX messages_stored ON messages(stored_ts);
"""

ENV = json.dumps({"id": "m1", "type": "message", "from": "alice", "to": "dave"})


def old_log(path, version=2):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(f"BEGIN; {V2_LOG}; PRAGMA user_version={version}; COMMIT;")
    db.execute("INSERT INTO messages (id, type, sender, target, ts, stored_ts, envelope, payload) VALUES "
               "('m1', 'message', 'alice', 'dave', 0, 0, ?, x'0102')", (ENV,))
    db.execute("INSERT INTO deliveries (recipient, seq, size) VALUES ('dave', 1, ?), ('erin', 1, ?)",
               (len(ENV) + 2, len(ENV) + 2))
    db.execute("UPDATE deliveries SET acked_ts = 5 WHERE recipient = 'erin'")
    db.close()


def migrations(path):
    db = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in db.execute("SELECT name FROM _migrations"))
    finally:
        db.close()


def test_an_exchange_log_at_user_version_2_is_adopted_as_it_is(tmp_path):
    path = tmp_path / "hub.sqlite"
    old_log(path)
    log = ExchangeLog(path)
    assert migrations(path) == ["m001_messages", "m002_per_sender_ids"]  # recorded, not run again
    assert log.pending_totals() == {("alice", "dave"): (1, len(ENV) + 2)}  # the acked delivery stays acked
    assert [(seq, env, payload) for seq, env, payload in log.pending("dave", 0)] == [(1, ENV, b"\x01\x02")]
    assert not log.append(Envelope(id="m1", type="message", sender="alice", to="dave"), ["dave"])  # a resend
    assert log.append(Envelope(id="m1", type="message", sender="bob", to="dave"), ["dave"])  # bob's own m1
    log.close()
    log = ExchangeLog(path)  # opened again: nothing to adopt or run
    assert log.counts() == {"messages": 2, "pending_deliveries": 2}
    log.close()


def test_a_new_exchange_log_runs_both_migrations_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "hub.sqlite"
    ExchangeLog(path).close()
    assert migrations(path) == ["m001_messages", "m002_per_sender_ids"]
    db = sqlite3.connect(path)
    db.execute("INSERT INTO _migrations VALUES ('m003_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer k1"):
        ExchangeLog(path)


def test_an_inbox_with_per_sender_ids_from_before_named_migrations_is_adopted(tmp_path):
    path = tmp_path / "inbox.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, sender TEXT NOT NULL, "
               "envelope TEXT NOT NULL, payload BLOB, received_ts REAL NOT NULL, UNIQUE (sender, id))")
    db.execute("INSERT INTO inbox (id, sender, envelope, received_ts) VALUES ('m1', 'alice', ?, 0)", (ENV,))
    db.close()
    box = Inbox(path)
    assert migrations(path) == ["m001_inbox", "m002_per_sender_ids"]
    assert not box.take({"id": "m1", "from": "alice"}) and box.take({"id": "m1", "from": "bob"})
    assert [m["from"] for m in box.messages()] == ["alice", "bob"]
    box.close()


def test_a_new_inbox_keys_messages_by_sender(tmp_path):
    box = Inbox(tmp_path / "inbox.sqlite")
    assert migrations(tmp_path / "inbox.sqlite") == ["m001_inbox", "m002_per_sender_ids"]
    assert box.take({"id": "m1", "from": "alice"}) and box.take({"id": "m1", "from": "bob"})
    assert not box.take({"id": "m1", "from": "alice"})
    box.close()
