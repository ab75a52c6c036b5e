"""SQLite files for the stores (the pool's, the bridge's exchange log and inbox): one way to open a file
and one way to evolve its schema.

`connect` opens in autocommit mode with WAL (readers never block the writer), a busy timeout (several
processes may write) and `synchronous=NORMAL` (a killed process loses nothing committed; `durable=True`
sets FULL, for power loss). `migrate` runs named migrations: an ordered list of functions, each run once
in its own transaction and recorded by name in `_migrations`, so a file written by a newer k1 (a name
this code does not know) is refused instead of misread. A file written before its store used named
migrations is adopted once: `adopt` says how many of the migrations it already holds, and their names are
recorded without running them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Callable

from k1.errors import ConfigError

Migration = Callable[[sqlite3.Connection], None]


def connect(path: str | Path, what: str = "store", *, durable: bool = False, timeout_s: float = 60.0,
            rows: bool = True) -> sqlite3.Connection:
    """Open (creating it and its folder) the SQLite file at `path`; an unusable file is a one-line error.
    `rows`: rows come back as `sqlite3.Row` (by name and by index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{what} {path}: not a usable SQLite file ({e})") from None
    db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    if rows:
        db.row_factory = sqlite3.Row
    return db


def migrate(db: sqlite3.Connection, migrations: list[Migration], what: str = "store", *,
            adopt: Callable[[sqlite3.Connection], int] | None = None) -> list[str]:
    """Run the migrations (by `__name__`) this file has not recorded, in order, each in one
    `BEGIN IMMEDIATE` transaction with its record; → the names run now.

    `adopt(db)`: for a file with no `_migrations` table yet, the number of leading `migrations` it already
    holds (a file from before named migrations); they are recorded, not run, in the transaction that
    creates the table."""
    if not has_table(db, "_migrations"):
        db.execute("BEGIN IMMEDIATE")
        try:
            if not has_table(db, "_migrations"):  # another process may have created it meanwhile
                db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, ts REAL NOT NULL)")
                held = adopt(db) if adopt is not None else 0
                now = time.time()
                db.executemany("INSERT INTO _migrations VALUES (?, ?)", [(m.__name__, now) for m in migrations[:held]])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    unknown = done - {m.__name__ for m in migrations}
    if unknown:
        raise ConfigError(f"{what} was written by a newer k1 (migrations {sorted(unknown)}); "
                          "upgrade k1 or use another file")
    ran = []
    for m in migrations:
        if m.__name__ in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if m.__name__ in {r[0] for r in db.execute("SELECT name FROM _migrations")}:  # another process won
                db.execute("ROLLBACK")
                continue
            m(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (m.__name__, time.time()))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        ran.append(m.__name__)
    return ran


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether the file holds table `name` (what an `adopt` function looks at)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
