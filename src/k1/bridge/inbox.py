"""The client's side of exactly-once: a record of message ids already taken, in memory or in a SQLite file.

The hub redelivers every message until its recipient acks it, so a recipient sees duplicates after a
reconnect. `Inbox.take(msg)` is True only the first time an id is seen. With a file, the message itself is
committed in the same transaction, so a process killed at any instant and restarted with the same file
neither loses nor repeats a message: what is in the inbox was taken exactly once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path


class Inbox:
    """Seen ids (bounded, in memory) or, with `path`, a durable inbox table that also holds the messages."""

    def __init__(self, path: str | Path | None = None, memory_limit: int = 200_000):
        self.path = None if path is None else Path(path)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.memory_limit = memory_limit
        self.db = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS inbox (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, "
                            "envelope TEXT NOT NULL, payload BLOB, received_ts REAL NOT NULL)")

    def take(self, envelope: dict, payload: bytes | None = None) -> bool:
        """Record this message; False when its id was taken before (a redelivery to drop)."""
        mid = envelope["id"]
        if self.db is not None:
            cur = self.db.execute("INSERT OR IGNORE INTO inbox (id, envelope, payload, received_ts) VALUES (?, ?, ?, ?)",
                                  (mid, json.dumps(envelope), payload, time.time()))
            return cur.rowcount == 1
        if mid in self._seen:
            return False
        self._seen[mid] = None
        if len(self._seen) > self.memory_limit:
            self._seen.popitem(last=False)
        return True

    def messages(self) -> list[dict]:
        """Everything taken so far, in arrival order (durable inbox only)."""
        if self.db is None:
            raise ValueError("an in-memory inbox keeps ids only; pass a path to keep messages")
        return [json.loads(e) for (e,) in self.db.execute("SELECT envelope FROM inbox ORDER BY n")]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
