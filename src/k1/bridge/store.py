"""The exchange log: one SQLite file (WAL) that owns every message the hub accepted and who has acked it.

A message is written, with one delivery row per recipient, in one transaction *before* the sender's
receipt goes out; a delivery row is marked acked when its recipient says it processed the message. So
"replay everything unacked for X in order" is one query, and a hub killed at any instant loses nothing it
had receipted (WAL + synchronous=NORMAL survives a process kill; `durable=True` sets FULL for power loss).
Ids are unique per sender (one agent's id never shadows another's), and every delivery row carries the
message's size, so the hub can hold each (sender, recipient) pair to a budget of pending messages and bytes,
and each sender to a budget of bytes in the log (acked or not) over the retention window. The schema
evolves by named migrations (`k1.common.sqlite`); a log from before them, which counted its migrations in
`PRAGMA user_version`, is adopted at that count.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from k1.bridge.protocol import Envelope
from k1.common.sqlite import Migration, connect, migrate


def m001_messages(db: sqlite3.Connection) -> None:
    """Messages, their per-recipient deliveries, and the roles each agent last declared."""
    db.execute("""CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, sender TEXT NOT NULL, target TEXT NOT NULL, reply_to TEXT,
        ts REAL NOT NULL, stored_ts REAL NOT NULL, envelope TEXT NOT NULL, payload BLOB)""")
    db.execute("""CREATE TABLE deliveries (
        recipient TEXT NOT NULL, seq INTEGER NOT NULL REFERENCES messages(seq), acked_ts REAL,
        PRIMARY KEY (recipient, seq))""")
    db.execute("CREATE INDEX deliveries_pending ON deliveries(recipient, seq) WHERE acked_ts IS NULL")
    db.execute("CREATE TABLE agents (name TEXT PRIMARY KEY, roles TEXT NOT NULL, last_seen REAL NOT NULL)")


def m002_per_sender_ids(db: sqlite3.Connection) -> None:
    """Ids unique per sender (were: across all senders); the size of each delivery; an index for expiry."""
    db.execute("""CREATE TABLE messages_v2 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
        type TEXT NOT NULL, sender TEXT NOT NULL, target TEXT NOT NULL, reply_to TEXT,
        ts REAL NOT NULL, stored_ts REAL NOT NULL, envelope TEXT NOT NULL, payload BLOB,
        UNIQUE (sender, id))""")
    db.execute("""INSERT INTO messages_v2 SELECT seq, id, type, sender, target, reply_to, ts, stored_ts, envelope,
        payload FROM messages""")
    db.execute("DROP TABLE messages")
    db.execute("ALTER TABLE messages_v2 RENAME TO messages")
    db.execute("CREATE INDEX messages_stored ON messages(stored_ts)")
    db.execute("ALTER TABLE deliveries ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    db.execute("""UPDATE deliveries SET size = (SELECT length(CAST(envelope AS BLOB)) + COALESCE(length(payload), 0)
        FROM messages m WHERE m.seq = deliveries.seq)""")


MIGRATIONS: list[Migration] = [m001_messages, m002_per_sender_ids]


def _adopt(db: sqlite3.Connection) -> int:
    """A log from before named migrations counted them in `PRAGMA user_version`: version N holds the first N."""
    return db.execute("PRAGMA user_version").fetchone()[0]


class ExchangeLog:
    """All SQL of the bridge lives here. The hub calls these methods from one worker thread (`SqliteBackend`),
    never from its event loop: a locked file stalls that thread, not every connection."""

    def __init__(self, path: str | Path, durable: bool = False):
        self.path = Path(path)
        # a 5 s busy timeout: the hub's event loop must not block long on another process's lock
        self.db = connect(self.path, "exchange log", durable=durable, timeout_s=5.0, rows=False)
        migrate(self.db, MIGRATIONS, f"exchange log {self.path}", adopt=_adopt)

    # --- agents -------------------------------------------------------------------------------------------
    def remember_agent(self, name: str, roles: list[str]) -> None:
        self.db.execute("INSERT INTO agents VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET roles=excluded.roles, "
                        "last_seen=excluded.last_seen", (name, json.dumps(sorted(roles)), time.time()))

    def agent_roles(self) -> dict[str, set[str]]:
        return {n: set(json.loads(r)) for n, r in self.db.execute("SELECT name, roles FROM agents")}

    # --- messages -----------------------------------------------------------------------------------------
    @staticmethod
    def encode(env: Envelope) -> str:
        return json.dumps(env.wire(), separators=(",", ":"))

    def has(self, sender: str, mid: str) -> bool:
        """Was this sender's id stored already (a resend)?"""
        return self.db.execute("SELECT 1 FROM messages WHERE sender = ? AND id = ?", (sender, mid)).fetchone() is not None

    def append(self, env: Envelope, recipients: list[str], payload: bytes | None = None) -> bool:
        """Store a message and its deliveries atomically; False when the sender's id was already stored (a resend)."""
        envelope = self.encode(env)
        size = len(envelope.encode()) + (len(payload) if payload is not None else 0)
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("INSERT OR IGNORE INTO messages (id, type, sender, target, reply_to, ts, stored_ts, envelope, "
                        "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (env.id, env.type, env.sender, env.to, env.reply_to, env.ts, time.time(), envelope, payload))
            if cur.rowcount == 0:
                cur.execute("COMMIT")
                return False
            seq = cur.lastrowid
            cur.executemany("INSERT INTO deliveries (recipient, seq, size) VALUES (?, ?, ?)",
                            [(r, seq, size) for r in recipients])
            cur.execute("COMMIT")
            return True
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def pending(self, recipient: str, after_seq: int, limit: int = 256) -> list[tuple[int, str, bytes | None]]:
        """Unacked messages for `recipient` with seq > after_seq, oldest first: (seq, envelope json, payload)."""
        return self.db.execute(
            "SELECT m.seq, m.envelope, m.payload FROM deliveries d JOIN messages m ON m.seq = d.seq "
            "WHERE d.recipient = ? AND d.acked_ts IS NULL AND d.seq > ? ORDER BY d.seq LIMIT ?",
            (recipient, after_seq, limit)).fetchall()

    def count_pending(self, recipient: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE recipient = ? AND acked_ts IS NULL",
                               (recipient,)).fetchone()[0]

    def pending_totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(sender, recipient) → (pending messages, pending bytes): the hub's budgets start from this after a
        restart."""
        return {(s, r): (n, b) for s, r, n, b in self.db.execute(
            "SELECT m.sender, d.recipient, COUNT(*), COALESCE(SUM(d.size), 0) FROM deliveries d "
            "JOIN messages m ON m.seq = d.seq WHERE d.acked_ts IS NULL GROUP BY m.sender, d.recipient")}

    def sender_totals(self) -> dict[str, int]:
        """sender → bytes of its messages in the log, acked or not (what its byte budget counts)."""
        return {s: b for s, b in self.db.execute(
            "SELECT sender, COALESCE(SUM(length(CAST(envelope AS BLOB)) + COALESCE(length(payload), 0)), 0) "
            "FROM messages GROUP BY sender")}

    def ack(self, recipient: str, ids: list[str], sender: str | None = None) -> list[tuple[str, int]]:
        """Mark these messages processed by `recipient` (only `sender`'s, when given); returns the (sender, size)
        of each delivery that changed."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        by_sender, args = ("sender = ? AND ", (sender,)) if sender is not None else ("", ())
        rows = self.db.execute(
            f"UPDATE deliveries SET acked_ts = ? WHERE recipient = ? AND acked_ts IS NULL AND seq IN "
            f"(SELECT seq FROM messages WHERE {by_sender}id IN ({marks})) "
            f"RETURNING (SELECT sender FROM messages m WHERE m.seq = deliveries.seq), size",
            (time.time(), recipient, *args, *ids)).fetchall()
        return [(s, size) for s, size in rows]

    def expire(self, before: float) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
        """Delete every message stored before `before` (Unix time) with its deliveries, acked or not; returns the
        (sender, recipient, size) of each pending delivery dropped and the bytes freed per sender, so the hub
        can lower its budgets."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            freed = dict(cur.execute(
                "SELECT sender, SUM(length(CAST(envelope AS BLOB)) + COALESCE(length(payload), 0)) FROM messages "
                "WHERE stored_ts < ? GROUP BY sender", (before,)).fetchall())
            dropped = cur.execute(
                "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM messages WHERE stored_ts < ?) "
                "RETURNING (SELECT sender FROM messages m WHERE m.seq = deliveries.seq), recipient, size, acked_ts",
                (before,)).fetchall()
            cur.execute("DELETE FROM messages WHERE stored_ts < ?", (before,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return [(s, r, size) for s, r, size, acked in dropped if acked is None], freed

    def history(self, agent: str | None = None, limit: int = 50) -> list[dict]:
        """The newest `limit` messages (optionally to or from `agent`), oldest first, with per-recipient state."""
        where, args = ("", ()) if agent is None else (
            "WHERE m.sender = ? OR m.seq IN (SELECT seq FROM deliveries WHERE recipient = ?)", (agent, agent))
        rows = self.db.execute(f"SELECT m.seq, m.envelope, m.payload IS NOT NULL FROM messages m {where} "
                               f"ORDER BY m.seq DESC LIMIT ?", (*args, limit)).fetchall()
        out = []
        for seq, envelope, has_payload in reversed(rows):
            deliveries = self.db.execute("SELECT recipient, acked_ts FROM deliveries WHERE seq = ? ORDER BY recipient",
                                         (seq,)).fetchall()
            out.append({"seq": seq, **json.loads(envelope), "tensor": bool(has_payload),
                        "delivered": {r: a is not None for r, a in deliveries}})
        return out

    def counts(self) -> dict[str, int]:
        m = self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        p = self.db.execute("SELECT COUNT(*) FROM deliveries WHERE acked_ts IS NULL").fetchone()[0]
        return {"messages": m, "pending_deliveries": p}

    def close(self) -> None:
        self.db.close()
