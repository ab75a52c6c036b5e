"""`PoolStore`: the pool's SQLite file — trust counts, the ATP ledger, outcomes, experiences, state log.

One class owns the connection and every SQL statement (simonw/llm's pattern). The file is in WAL mode with
a busy timeout, and every write is one `BEGIN IMMEDIATE` transaction whose counters are updated in SQL
(`successes = successes + 1`), so several processes (a server and a `k1 pool dream`, say) can write at
once without losing an update (tests/pool/test_store.py runs four writer processes). The file is opened
and its schema evolved by `k1.common.sqlite`: `MIGRATIONS` is an ordered list of named functions; those
not yet recorded in `_migrations` run once, in order, when a store opens.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from k1.common.sqlite import Migration, connect, migrate


def m001_trust_and_ledger(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE trust (
        member TEXT NOT NULL, context TEXT NOT NULL,
        successes REAL NOT NULL DEFAULT 0, failures REAL NOT NULL DEFAULT 0, updated REAL NOT NULL,
        PRIMARY KEY (member, context))""")
    db.execute("""CREATE TABLE ledger (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request TEXT, session TEXT, member TEXT NOT NULL,
        context TEXT, path TEXT NOT NULL, stream INTEGER NOT NULL DEFAULT 0, atp REAL NOT NULL, flops REAL NOT NULL, latency_s REAL NOT NULL,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0)""")
    db.execute("CREATE INDEX ledger_member ON ledger (member)")
    db.execute("""CREATE TABLE outcomes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request TEXT, member TEXT NOT NULL,
        context TEXT NOT NULL, success REAL NOT NULL, source TEXT NOT NULL)""")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def m002_experiences(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE experiences (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request TEXT UNIQUE, session TEXT,
        prompt TEXT NOT NULL, response TEXT NOT NULL, member TEXT NOT NULL, context TEXT,
        latency_s REAL, atp REAL, outcome REAL,
        surprise REAL, novelty REAL, arousal REAL, reward REAL, conflict REAL, importance REAL,
        extra TEXT)""")
    db.execute("CREATE INDEX experiences_session ON experiences (session, id)")


def m003_state_log(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE state_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL,
        reason TEXT NOT NULL)""")


def m004_feedback_once(db: sqlite3.Connection) -> None:
    """One feedback outcome per request id: replaying a verdict must not move trust again."""
    db.execute("""CREATE TABLE feedback (
        request TEXT PRIMARY KEY, ts REAL NOT NULL, success REAL NOT NULL, source TEXT NOT NULL)""")


def m005_calibration(db: sqlite3.Connection) -> None:
    """Calibration answers per (member, task class): the measured priors of the trust per (member, class)."""
    db.execute("""CREATE TABLE calibration (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, member TEXT NOT NULL, task_class TEXT NOT NULL,
        task TEXT NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, score REAL NOT NULL, atp REAL NOT NULL)""")
    db.execute("CREATE INDEX calibration_member ON calibration (member, task_class)")


def m006_tenants_and_kinds(db: sqlite3.Connection) -> None:
    """Who spent (the tenant) and on what (the call kind: request, judge, cross-check, verify, dream,
    calibration); which tenant an experience belongs to (feedback only for its own requests)."""
    db.execute("ALTER TABLE ledger ADD COLUMN tenant TEXT")
    db.execute("ALTER TABLE ledger ADD COLUMN kind TEXT NOT NULL DEFAULT 'request'")
    db.execute("ALTER TABLE experiences ADD COLUMN tenant TEXT")


MIGRATIONS: list[Migration] = [m001_trust_and_ledger, m002_experiences, m003_state_log,
                              m004_feedback_once, m005_calibration, m006_tenants_and_kinds]
SCHEMA_VERSION = len(MIGRATIONS)

# what an ATP spend was for (the ledger's `kind`)
CALL_KINDS = ("request", "judge", "cross-check", "verify", "dream", "calibration")
# every way a call can end; each is charged to the ledger, so the budget and the routing shares count the calls
# that failed, timed out or were cancelled, not only those that succeeded
CALL_PATHS = ("success", "failure", "timeout", "unavailable", "cancelled")


def _add_outcome(db: sqlite3.Connection, member: str, context: str, success: float, source: str,
                 request: str | None, now: float) -> None:
    """One outcome into the Beta counts and the outcome log (inside the caller's write transaction)."""
    db.execute("""INSERT INTO trust (member, context, successes, failures, updated) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (member, context) DO UPDATE SET successes = successes + excluded.successes,
        failures = failures + excluded.failures, updated = excluded.updated""",
               (member, context, success, 1.0 - success, now))
    db.execute("INSERT INTO outcomes (ts, request, member, context, success, source) VALUES (?, ?, ?, ?, ?, ?)",
               (now, request, member, context, success, source))


class PoolStore:
    """The pool's persistent state in one SQLite file (thread-safe; safe across processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self.db = connect(self.path, "pool store")
        self.migrate()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (BEGIN IMMEDIATE: no lost updates across processes)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Run the migrations this file has not seen; → their names."""
        with self._lock:
            return migrate(self.db, MIGRATIONS, f"pool store {self.path}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ---- trust ------------------------------------------------------------------------------------
    def record_outcome(self, member: str, context: str, success: float, source: str, request: str | None = None) -> None:
        """Add one outcome (success in [0, 1]; fractional for graded verifiers) to the Beta counts."""
        if not 0.0 <= success <= 1.0:
            raise ValueError(f"success must be in [0, 1], got {success}")
        now = time.time()
        with self.write() as db:
            _add_outcome(db, member, context, success, source, request, now)

    def record_feedback(self, member: str, context: str, success: float, source: str, request: str) -> bool:
        """The outcome of `request` as told by its caller, once: → False (nothing recorded) if it was told before."""
        if not 0.0 <= success <= 1.0:
            raise ValueError(f"success must be in [0, 1], got {success}")
        now = time.time()
        with self.write() as db:
            if db.execute("INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?)",
                          (request, now, success, source)).rowcount == 0:
                return False
            _add_outcome(db, member, context, success, source, request, now)
        return True

    def trust(self, context: str | None = None) -> dict[tuple[str, str], tuple[float, float]]:
        """(member, context) → (successes, failures); one context, or all."""
        q, args = "SELECT member, context, successes, failures FROM trust", ()
        if context is not None:
            q, args = q + " WHERE context = ?", (context,)
        with self._lock:
            return {(r[0], r[1]): (r[2], r[3]) for r in self.db.execute(q, args)}

    def outcome_history(self, limit: int = 10_000) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM outcomes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in reversed(rows)]

    # ---- the ATP ledger ----------------------------------------------------------------------------
    def charge(self, member: str, path: str, atp: float, flops: float, latency_s: float, *, request: str | None = None,
               session: str | None = None, context: str | None = None, prompt_tokens: int = 0,
               completion_tokens: int = 0, stream: bool = False, tenant: str | None = None,
               kind: str = "request") -> int:
        """One ledger row. Callers go through `k1.pool.ledger.Ledger` (reserve, then charge), not here."""
        if path not in CALL_PATHS:
            raise ValueError(f"unknown call path {path!r}; one of {CALL_PATHS}")
        if kind not in CALL_KINDS:
            raise ValueError(f"unknown call kind {kind!r}; one of {CALL_KINDS}")
        with self.write() as db:
            cur = db.execute("""INSERT INTO ledger (ts, request, session, member, context, path, stream, atp, flops,
                latency_s, prompt_tokens, completion_tokens, tenant, kind)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                             (time.time(), request, session, member, context, path, int(stream), atp, flops, latency_s,
                              prompt_tokens, completion_tokens, tenant, kind))
            return cur.lastrowid

    def charges(self, request: str) -> list[dict]:
        """The ledger rows of one request (its call, any retries, a judge or a cross-check)."""
        with self._lock:
            rows = self.db.execute("SELECT * FROM ledger WHERE request = ? ORDER BY id", (request,)).fetchall()
        return [dict(r) for r in rows]

    def spent(self, tenant: str | None = None) -> float:
        """ATP charged since the budget was last reset (by one tenant, or by all)."""
        with self._lock:
            start = self.db.execute("SELECT value FROM meta WHERE key = 'budget_from_id'").fetchone()
            q, args = "SELECT COALESCE(SUM(atp), 0) FROM ledger WHERE id > ?", [int(start[0]) if start else 0]
            if tenant is not None:
                q, args = q + " AND tenant = ?", args + [tenant]
            return self.db.execute(q, args).fetchone()[0]

    def spent_by_kind(self) -> dict[str, float]:
        """kind → ATP charged in all (request, judge, cross-check, verify, dream, calibration)."""
        with self._lock:
            return {r[0]: r[1] for r in self.db.execute("SELECT kind, SUM(atp) FROM ledger GROUP BY kind")}

    def reset_budget(self) -> None:
        with self.write() as db:
            last = db.execute("SELECT COALESCE(MAX(id), 0) FROM ledger").fetchone()[0]
            db.execute("INSERT INTO meta VALUES ('budget_from_id', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (str(last),))

    def mean_cost(self) -> dict[str, float]:
        """member → mean ATP per call over its completed calls (what the router expects a call to cost)."""
        with self._lock:
            rows = self.db.execute("SELECT member, AVG(atp) FROM ledger WHERE path = 'success' GROUP BY member")
            return {r[0]: r[1] for r in rows}

    def ledger(self, limit: int = 1000) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM ledger ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def ledger_totals(self) -> dict[str, dict]:
        """member → {calls, atp, by path}: the routing shares and what each member cost."""
        out: dict[str, dict] = {}
        with self._lock:
            for r in self.db.execute("SELECT member, path, COUNT(*), SUM(atp) FROM ledger GROUP BY member, path"):
                d = out.setdefault(r[0], {"calls": 0, "atp": 0.0, "paths": {}})
                d["calls"] += r[2]
                d["atp"] += r[3]
                d["paths"][r[1]] = r[2]
        return out

    # ---- small named values (budget period start, DREAM weights) ------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self.write() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    # ---- metabolic state log ------------------------------------------------------------------------
    def log_state(self, from_state: str | None, to_state: str, reason: str) -> None:
        with self.write() as db:
            db.execute("INSERT INTO state_log (ts, from_state, to_state, reason) VALUES (?, ?, ?, ?)",
                       (time.time(), from_state, to_state, reason))

    def state_log(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM state_log ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in reversed(rows)]

    # ---- experiences (SNARC; see snarc.py for how the scores are computed) ----- ----------------------
    def add_experience(self, row: dict) -> int:
        cols = ("ts", "request", "session", "prompt", "response", "member", "context", "latency_s", "atp", "outcome",
                "surprise", "novelty", "arousal", "reward", "conflict", "importance", "tenant")
        values = [row.get(c) for c in cols] + [json.dumps(row.get("extra") or {})]
        with self.write() as db:
            cur = db.execute(f"INSERT INTO experiences ({', '.join(cols)}, extra) VALUES ({', '.join('?' * (len(cols) + 1))})",
                             values)
            return cur.lastrowid

    def update_experience(self, request: str, **fields) -> bool:
        if not fields:
            return False
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as db:
            cur = db.execute(f"UPDATE experiences SET {sets} WHERE request = ?", (*fields.values(), request))
            return cur.rowcount > 0

    def experiences(self, *, session: str | None = None, after_id: int = 0, limit: int = 100_000,
                    newest_first: bool = False) -> list[dict]:
        q = "SELECT * FROM experiences WHERE id > ?"
        args: list = [after_id]
        if session is not None:
            q += " AND session = ?"
            args.append(session)
        q += f" ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self.db.execute(q, args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["extra"] = json.loads(d["extra"] or "{}")
            out.append(d)
        return out

    def labelled_prompts(self, limit: int) -> list[tuple[str, str]]:
        """(prompt, class) of the newest `limit` experiences whose class was stated (by the caller or with
        feedback) by a trusted tenant, not guessed by the classifier nor stated by an untrusted tenant; a chat
        prompt's last user message is the prompt. (Rows written before tenants existed count as trusted.)"""
        with self._lock:
            rows = self.db.execute("""SELECT prompt, context, extra FROM experiences
                WHERE json_extract(extra, '$.task_class_source') IN ('caller', 'feedback') AND context IS NOT NULL
                AND COALESCE(json_extract(extra, '$.label_trusted'), 1) = 1
                ORDER BY id DESC LIMIT ?""", (limit,)).fetchall()
        out = []
        for r in rows:
            msgs = json.loads(r["extra"] or "{}").get("messages")
            users = [m.get("content") for m in msgs or [] if m.get("role") == "user" and isinstance(m.get("content"), str)]
            out.append((users[-1] if users else r["prompt"], r["context"]))
        return out

    def experience(self, request: str) -> dict | None:
        rows = [e for e in self._select_request(request)]
        return rows[0] if rows else None

    def _select_request(self, request: str) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM experiences WHERE request = ?", (request,)).fetchall()
        return [{**dict(r), "extra": json.loads(r["extra"] or "{}")} for r in rows]

    # ---- calibration (the measured priors of trust per (member, task class); see calibrate.py) -------------
    def set_calibration(self, member: str, rows: list[dict], task_class: str | None = None) -> None:
        """Replace `member`'s calibration answers (of one task class, or all) with `rows`
        ({cls, task, prompt, response, score, atp})."""
        now = time.time()
        with self.write() as db:
            if task_class is None:
                db.execute("DELETE FROM calibration WHERE member = ?", (member,))
            else:
                db.execute("DELETE FROM calibration WHERE member = ? AND task_class = ?", (member, task_class))
            db.executemany("""INSERT INTO calibration (ts, member, task_class, task, prompt, response, score, atp)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)""", [(now, member, r["cls"], r["task"], r["prompt"], r["response"],
                                                      float(r["score"]), float(r["atp"])) for r in rows])

    def calibration_summary(self) -> dict[tuple[str, str], dict]:
        """(member, task class) → {n, solved, atp (mean per item), ts}."""
        with self._lock:
            rows = self.db.execute("""SELECT member, task_class, COUNT(*), SUM(score), AVG(atp), MAX(ts)
                FROM calibration GROUP BY member, task_class""").fetchall()
        return {(r[0], r[1]): {"n": r[2], "solved": r[3], "atp": r[4], "ts": r[5]} for r in rows}

    def calibration_prompts(self) -> list[tuple[str, str]]:
        """(prompt, class) of every distinct calibration prompt (labelled by construction)."""
        with self._lock:
            return [(r[0], r[1]) for r in self.db.execute(
                "SELECT prompt, task_class FROM calibration GROUP BY prompt, task_class ORDER BY MIN(id)")]

    def calibration_rows(self, member: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM calibration", ()
        if member is not None:
            q, args = q + " WHERE member = ?", (member,)
        with self._lock:
            return [dict(r) for r in self.db.execute(q + " ORDER BY id", args)]
