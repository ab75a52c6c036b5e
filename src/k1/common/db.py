"""One small DB-API adapter so that a store's SQL runs on SQLite (embedded, the default) and on Postgres
(shared by several replicas) alike.

A store writes SQLite-flavoured SQL once — `?` placeholders, `INTEGER PRIMARY KEY AUTOINCREMENT`, `REAL`,
`INSERT ... ON CONFLICT`, `RETURNING`, `json_extract(col, '$.key')`, `INSERT OR IGNORE` — and `Database`
runs it: on Postgres the placeholders become `%s`, DDL types become their Postgres twins (`REAL` is float4
there, so it becomes `DOUBLE PRECISION`), `json_extract` becomes `->>`, and an INSERT's `lastrowid` is
read back with `RETURNING id`. Rows come back by name and by index on both (`dict(row)` works).

`transaction()` is one write transaction taken before reading: `BEGIN IMMEDIATE` on SQLite (one writer
across processes), `BEGIN` on Postgres, where `lock(name)` takes a transaction-scoped advisory lock for the
read-then-write sections that need one writer at a time (a budget reservation, a migration). A Postgres
connection that broke (the server restarted) is opened again on the next call; a statement that failed
with it is not retried unless nothing of it can have run (the connection was already dead at `BEGIN`).

`migrate` runs named migrations on either, as `k1.common.sqlite.migrate` does for SQLite files."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from k1.errors import ConfigError, K1Error

POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreUnavailable(K1Error):
    """The database cannot be reached now (a Postgres server down or restarting): try again later."""


def is_url(target: str | Path) -> bool:
    """Whether `target` names a database by URL (`scheme:...`) rather than a file; a one-letter scheme
    is a Windows drive, not a URL."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", str(target))
    return bool(m) and len(m.group(1)) > 1 and not isinstance(target, Path)


def describe(target: str | Path) -> str:
    """`target` for messages and titles, with any password hidden."""
    if not is_url(target):
        return str(target)
    u = urlsplit(str(target))
    if u.password:
        netloc = u.netloc.replace(f":{u.password}@", ":***@")
        return urlunsplit(u._replace(netloc=netloc))
    return str(target)


def check_target(target: str | Path, what: str = "store") -> str:
    """→ "sqlite" or "postgres" for a file path or a URL of a kind we open; any other URL is a one-line
    error, never taken as a file name."""
    if not is_url(target):
        return "sqlite"
    scheme = str(target).split(":", 1)[0].lower()
    if scheme in POSTGRES_SCHEMES:
        return "postgres"
    if scheme == "sqlite":
        return "sqlite"
    raise ConfigError(f"{what} {describe(target)}: unknown URL scheme {scheme!r}; use a file path, "
                      "sqlite:///path or postgresql://user:password@host:port/database")


def open_database(target: str | Path, what: str = "store", *, durable: bool = False) -> Database:
    """A SQLite file path, a `sqlite:///path` URL or a `postgresql://` URL → an open `Database`."""
    if check_target(target, what) == "postgres":
        return PostgresDatabase(str(target), what)
    if is_url(target):
        path = str(target)[len("sqlite:"):]
        target = path.removeprefix("//")  # sqlite:///abs/path → /abs/path
    return SQLiteDatabase(target, what, durable=durable)


class Database:
    """The shared surface of both backends (see the module docstring)."""

    dialect: str
    label: str
    path: Path | None = None  # the SQLite file; None on Postgres

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one connection per store, shared by the server's threads

    def execute(self, sql: str, args: Any = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Any) -> Any:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        raise NotImplementedError
        yield self

    def lock(self, name: str) -> None:
        """Inside `transaction()`: hold a lock called `name` until it ends (SQLite's write lock already
        covers the whole file)."""

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: str | Path, what: str = "store", *, durable: bool = False):
        from k1.common.sqlite import connect
        super().__init__()
        self.path = Path(path)
        self.label = str(self.path)
        self.conn = connect(self.path, what, durable=durable)

    def execute(self, sql, args=()):
        return self.conn.execute(sql, args)

    def executemany(self, sql, rows):
        return self.conn.executemany(sql, rows)

    @contextmanager
    def transaction(self):
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def has_table(self, name):
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def close(self):
        with self._lock:
            self.conn.close()


# ---- Postgres ---------------------------------------------------------------------------------------------
class Row(tuple):
    """A row by index and by column name, as `sqlite3.Row` is (so `dict(row)` works)."""

    _names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self._names

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


def _row_factory(cursor):
    names = tuple(c.name for c in cursor.description or ())
    cls = type("Row", (Row,), {"_names": names, "__slots__": ()})
    return lambda values: cls(values)


_DDL_TYPES = [(re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.IGNORECASE),
               "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
              (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
              (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA")]
_JSON_EXTRACT = re.compile(r"json_extract\(\s*([\w.]+)\s*,\s*'\$\.(\w+)'\s*\)", re.IGNORECASE)
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


@lru_cache(maxsize=1024)
def to_postgres(sql: str) -> str:
    """SQLite-flavoured SQL → Postgres: placeholders, DDL types, json_extract, INSERT OR IGNORE."""
    if re.match(r"^\s*(CREATE|ALTER)\s", sql, re.IGNORECASE):
        for pat, repl in _DDL_TYPES:
            sql = pat.sub(repl, sql)
    if re.match(r"^\s*INSERT\s+OR\s+REPLACE\b", sql, re.IGNORECASE):
        raise ValueError("INSERT OR REPLACE is SQLite only; write INSERT ... ON CONFLICT (key) DO UPDATE")
    if _OR_IGNORE.match(sql):
        sql = _OR_IGNORE.sub("INSERT INTO", sql) + " ON CONFLICT DO NOTHING"
    sql = _JSON_EXTRACT.sub(r"((\1)::jsonb ->> '\2')", sql)
    out, quoted = [], False
    for ch in sql:  # `?` → `%s` and `%` → `%%`, outside string literals for the former
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


class _PgCursor:
    """What a store reads of a cursor: rows, rowcount and an INSERT's lastrowid."""

    def __init__(self, cur, lastrowid=None, rows=None):
        self._cur, self.lastrowid, self._rows = cur, lastrowid, rows
        self.rowcount = cur.rowcount

    def fetchone(self):
        if self._rows is not None:
            return self._rows.pop(0) if self._rows else None
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self):
        if self._rows is not None:
            rows, self._rows = self._rows, []
            return rows
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self):
        return iter(self.fetchall())


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, what: str = "store", *, connect_timeout_s: float = 10.0):
        super().__init__()
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(f"{what} {describe(url)}: Postgres needs psycopg 3; "
                              "pip install 'k1[pg]' (or 'psycopg[binary]')") from None
        self.url, self.what, self.label = url, what, describe(url)
        self.connect_timeout_s = connect_timeout_s
        self._in_tx = False
        self._id_tables: dict[str, bool] = {}
        self.conn = self._connect()

    def _connect(self):
        import psycopg
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreUnavailable(f"{self.what} {self.label}: cannot connect ({first})") from None
        conn.row_factory = _row_factory
        return conn

    def _alive(self) -> None:
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()

    def _has_id(self, table: str) -> bool:
        if table not in self._id_tables:
            row = self.conn.execute("""SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                AND table_name = %s AND column_name = 'id'""", (table.lower(),)).fetchone()
            self._id_tables[table] = row is not None
        return self._id_tables[table]

    def _run(self, sql: str, args: Any):
        q = to_postgres(sql)
        if not args:
            q = q.replace("%%", "%")
        m = _INSERT_INTO.match(sql)
        if m and "RETURNING" not in sql.upper() and self._has_id(m.group(1)):
            cur = self.conn.execute(q + " RETURNING id", args or None)
            rows = cur.fetchall()
            return _PgCursor(cur, rows[0][0] if rows else None, [])
        cur = self.conn.execute(q, args or None)
        if re.match(r"^\s*(CREATE|ALTER|DROP)\s", sql, re.IGNORECASE):
            self._id_tables.clear()
        return _PgCursor(cur)

    def execute(self, sql, args=()):
        import psycopg
        with self._lock:
            if self._in_tx:
                return self._run(sql, args)
            self._alive()
            try:
                return self._run(sql, args)
            except psycopg.OperationalError as e:
                if not self.conn.broken or not re.match(r"^\s*SELECT\s", sql, re.IGNORECASE):
                    raise StoreUnavailable(f"{self.what} {self.label}: {str(e).strip().splitlines()[0]}") from None
                self.conn = self._connect()  # a read can be asked again on a new connection
                return self._run(sql, args)

    def executemany(self, sql, rows):
        with self._lock:
            rows = list(rows)
            if rows:
                with self.conn.cursor() as cur:
                    cur.executemany(to_postgres(sql), rows)
            return

    @contextmanager
    def transaction(self):
        import psycopg
        with self._lock:
            self._alive()
            try:
                self.conn.execute("BEGIN")
            except psycopg.OperationalError:  # died since the last call: nothing of this transaction ran yet
                self.conn = self._connect()
                self.conn.execute("BEGIN")
            self._in_tx = True
            try:
                yield self
            except BaseException as e:
                self._in_tx = False
                if not self.conn.broken:
                    self.conn.execute("ROLLBACK")
                if isinstance(e, psycopg.OperationalError):
                    raise StoreUnavailable(f"{self.what} {self.label}: {str(e).strip().splitlines()[0]}") from None
                raise
            self._in_tx = False
            try:
                self.conn.execute("COMMIT")
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"{self.what} {self.label}: {str(e).strip().splitlines()[0]}") from None

    def lock(self, name: str) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))

    def has_table(self, name):
        return self.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                            "AND table_name = ?", (name.lower(),)).fetchone() is not None

    def close(self):
        with self._lock:
            self.conn.close()


# ---- named migrations ---------------------------------------------------------------------------------------
Migration = Callable[[Database], None]


def migrate(db: Database, migrations: list[Migration], what: str = "store", *,
            adopt: Callable[[Database], int] | None = None) -> list[str]:
    """Run the migrations (by `__name__`) `db` has not recorded, in order, each in one transaction with its
    record (under a lock, so replicas starting together run each once); → the names run now. A database
    that records a name this code does not know was written by a newer k1 and is refused.
    `adopt(db)`: for a database with no `_migrations` table, how many leading migrations it already holds."""
    with db.transaction():
        db.lock("k1 migrations")
        if not db.has_table("_migrations"):
            db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, ts REAL NOT NULL)")
            held = adopt(db) if adopt is not None else 0
            for m in migrations[:held]:
                db.execute("INSERT INTO _migrations (name, ts) VALUES (?, ?)", (m.__name__, time.time()))
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    unknown = done - {m.__name__ for m in migrations}
    if unknown:
        raise ConfigError(f"{what} was written by a newer k1 (migrations {sorted(unknown)}); "
                          "upgrade k1 or use another database")
    ran = []
    for m in migrations:
        if m.__name__ in done:
            continue
        with db.transaction():
            db.lock("k1 migrations")
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (m.__name__,)).fetchone():
                continue  # another process ran it meanwhile
            m(db)
            db.execute("INSERT INTO _migrations (name, ts) VALUES (?, ?)", (m.__name__, time.time()))
        ran.append(m.__name__)
    return ran
