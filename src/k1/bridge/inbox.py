"""The client's side of exactly-once: a record of messages already processed, in memory or in a SQLite file.

The hub redelivers every message until its recipient acks it, so a recipient sees duplicates after a
reconnect. A message is known by its sender and id (ids are unique per sender, not across senders).
In memory, `done(msg)` records a message once it was processed and `seen(msg)` asks; with a file,
`take(msg)` commits the message itself and its key in one transaction, so a process killed at any instant
and restarted with the same file neither loses nor repeats a message: what is in the inbox was taken
exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path

from k1.common.sqlite import Migration, connect, has_table, migrate


def key(envelope: dict) -> tuple[str, str]:
    return envelope.get("from", ""), envelope["id"]


def m001_inbox(db: sqlite3.Connection) -> None:
    """The first inbox, when ids were unique across senders."""
    db.execute("CREATE TABLE inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, envelope TEXT NOT NULL, "
               "payload BLOB, received_ts REAL NOT NULL)")


def m002_per_sender_ids(db: sqlite3.Connection) -> None:
    """A message is known by (sender, id): ids are unique per sender only."""
    db.execute("ALTER TABLE inbox RENAME TO inbox_v1")
    db.execute("CREATE TABLE inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, sender TEXT NOT NULL, "
               "envelope TEXT NOT NULL, payload BLOB, received_ts REAL NOT NULL, UNIQUE (sender, id))")
    db.execute("INSERT INTO inbox (n, id, sender, envelope, payload, received_ts) SELECT n, id, "
               "COALESCE(json_extract(envelope, '$.from'), ''), envelope, payload, received_ts FROM inbox_v1")
    db.execute("DROP TABLE inbox_v1")


MIGRATIONS: list[Migration] = [m001_inbox, m002_per_sender_ids]


def _adopt(db: sqlite3.Connection) -> int:
    """An inbox from before named migrations: none (a new file), the first table, or the per-sender one."""
    if not has_table(db, "inbox"):
        return 0
    return 2 if "sender" in [r[1] for r in db.execute("PRAGMA table_info(inbox)")] else 1


class Inbox:
    """Processed keys (bounded, in memory) or, with `path`, a durable inbox table that also holds the messages."""

    def __init__(self, path: str | Path | None = None, memory_limit: int = 200_000):
        self.path = None if path is None else Path(path)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.memory_limit = memory_limit
        self.db = None
        if self.path is not None:
            # synchronous=FULL (`durable`), as SQLite's default was here: a taken message survives power loss
            self.db = connect(self.path, "inbox", durable=True, timeout_s=5.0, rows=False)
            migrate(self.db, MIGRATIONS, f"inbox {self.path}", adopt=_adopt)

    def take(self, envelope: dict, payload: bytes | None = None) -> bool:
        """Record this message (durably, with its content, when the inbox has a file); False when it was
        recorded before (a redelivery to drop)."""
        if self.db is not None:
            sender, mid = key(envelope)
            cur = self.db.execute("INSERT OR IGNORE INTO inbox (id, sender, envelope, payload, received_ts) "
                                  "VALUES (?, ?, ?, ?, ?)", (mid, sender, json.dumps(envelope), payload, time.time()))
            return cur.rowcount == 1
        if self.seen(envelope):
            return False
        self.done(envelope)
        return True

    def seen(self, envelope: dict) -> bool:
        if self.db is not None:
            return self.db.execute("SELECT 1 FROM inbox WHERE sender = ? AND id = ?", key(envelope)).fetchone() is not None
        return key(envelope) in self._seen

    def done(self, envelope: dict) -> None:
        """Record a processed message (in memory; the durable inbox records at `take`)."""
        self._seen[key(envelope)] = None
        if len(self._seen) > self.memory_limit:
            self._seen.popitem(last=False)

    def messages(self) -> list[dict]:
        """Everything taken so far, in arrival order (durable inbox only)."""
        if self.db is None:
            raise ValueError("an in-memory inbox keeps ids only; pass a path to keep messages")
        return [json.loads(e) for (e,) in self.db.execute("SELECT envelope FROM inbox ORDER BY n")]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
