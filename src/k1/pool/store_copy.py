"""Copy a pool store into another, table by table, ids kept: `k1 pool migrate-store` (a SQLite file into
Postgres, when one server becomes several replicas) and a scratch copy of any store (DREAM's replay).

Both stores are opened as `PoolStore`, so both hold the same migrations before a row moves; the destination
must be empty (a half-filled or live database is refused, not merged) and is filled in one transaction, so a
failed copy leaves it empty. The counts of every table are compared afterwards."""

from __future__ import annotations

from k1.errors import ConfigError
from k1.pool.store import PoolStore

CHUNK = 2000  # rows read and written at a time


def tables(store: PoolStore) -> list[str]:
    """The store's tables, `_migrations` and SQLite's own left out (the destination records its own)."""
    if store.dialect == "sqlite":
        q = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    else:
        q = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
    return [r[0] for r in store.db.execute(q) if r[0] != "_migrations" and not r[0].startswith("sqlite_")]


def count(store: PoolStore, table: str) -> int:
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def copy_store(src: PoolStore, dst: PoolStore) -> dict[str, int]:
    """Copy every row of `src` into the empty `dst`; → table → rows copied."""
    if src.label == dst.label:
        raise ConfigError(f"{src.label}: the source and the destination are the same store")
    if src.schema_version != dst.schema_version:
        raise ConfigError(f"{src.label} and {dst.label} hold different migrations")
    names = tables(src)
    full = [t for t in names if count(dst, t)]
    if full:
        raise ConfigError(f"{dst.label} is not empty ({', '.join(full)} hold rows); copy into a new database")
    copied: dict[str, int] = {}
    with dst.write() as out:
        for t in names:
            cols = _columns(src, t)
            has_id = "id" in cols
            order = " ORDER BY id" if has_id else ""
            sql = f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            n, last = 0, None
            while True:
                if has_id:
                    rows = src.db.execute(f"SELECT {', '.join(cols)} FROM {t} WHERE id > ?{order} LIMIT {CHUNK}",
                                          (last if last is not None else -1,)).fetchall()
                else:
                    rows = src.db.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall()
                if not rows:
                    break
                out.executemany(sql, [tuple(r) for r in rows])
                n += len(rows)
                if not has_id:
                    break
                last = rows[-1][cols.index("id")]
            if has_id and dst.dialect == "postgres" and n:  # the next id the database hands out follows the copied ones
                out.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT MAX(id) FROM {t}))")
            copied[t] = n
    wrong = {t: (n, count(dst, t)) for t, n in copied.items() if count(dst, t) != n}
    if wrong:
        raise ConfigError(f"copy into {dst.label} is incomplete: {wrong}")
    return copied


def _columns(store: PoolStore, table: str) -> list[str]:
    if store.dialect == "sqlite":
        return [r[1] for r in store.db.execute(f"PRAGMA table_info({table})")]
    return [r[0] for r in store.db.execute("""SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position""", (table,))]
