"""`PoolStore`: the pool's state — trust counts, the ATP ledger and its reservations, outcomes, experiences,
feedback, calibration, the state log, leases and published versions — in a SQLite file (the embedded
default) or a Postgres database (`postgresql://...`, shared by several `k1 pool serve` replicas).

One class owns the connection and every SQL statement (simonw/llm's pattern), written once in SQLite's
dialect and run on either backend by `k1.common.db` (placeholders, DDL types and the like are translated
there). Every write is one transaction whose counters are updated in SQL (`successes = successes + 1`),
so several processes or replicas can write at once without losing an update (tests/pool/test_store.py runs
four writer processes on each backend). `MIGRATIONS` is an ordered list of named functions; those not yet
recorded in `_migrations` run once, in order, when a store opens.

Across replicas: a reservation is taken atomically against the budget (`reserve`: spent + reserved +
estimate ≤ budget, under one lock), feedback is once per request id (a primary key), DREAM-like jobs take a
`lease` so that one replica runs each, and `publish`/`version` is a version row replicas poll to take up a
new student without a restart.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from k1.common.db import Database, Migration, migrate, open_database


def m001_trust_and_ledger(db: Database) -> None:
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


def m002_experiences(db: Database) -> None:
    db.execute("""CREATE TABLE experiences (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, request TEXT UNIQUE, session TEXT,
        prompt TEXT NOT NULL, response TEXT NOT NULL, member TEXT NOT NULL, context TEXT,
        latency_s REAL, atp REAL, outcome REAL,
        surprise REAL, novelty REAL, arousal REAL, reward REAL, conflict REAL, importance REAL,
        extra TEXT)""")
    db.execute("CREATE INDEX experiences_session ON experiences (session, id)")


def m003_state_log(db: Database) -> None:
    db.execute("""CREATE TABLE state_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL,
        reason TEXT NOT NULL)""")


def m004_feedback_once(db: Database) -> None:
    """One feedback outcome per request id: replaying a verdict must not move trust again."""
    db.execute("""CREATE TABLE feedback (
        request TEXT PRIMARY KEY, ts REAL NOT NULL, success REAL NOT NULL, source TEXT NOT NULL)""")


def m005_calibration(db: Database) -> None:
    """Calibration answers per (member, task class): the measured priors of the trust per (member, class)."""
    db.execute("""CREATE TABLE calibration (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, member TEXT NOT NULL, task_class TEXT NOT NULL,
        task TEXT NOT NULL, prompt TEXT NOT NULL, response TEXT NOT NULL, score REAL NOT NULL, atp REAL NOT NULL)""")
    db.execute("CREATE INDEX calibration_member ON calibration (member, task_class)")


def m006_tenants_and_kinds(db: Database) -> None:
    """Who spent (the tenant) and on what (the call kind: request, judge, cross-check, verify, dream,
    calibration); which tenant an experience belongs to (feedback only for its own requests)."""
    db.execute("ALTER TABLE ledger ADD COLUMN tenant TEXT")
    db.execute("ALTER TABLE ledger ADD COLUMN kind TEXT NOT NULL DEFAULT 'request'")
    db.execute("ALTER TABLE experiences ADD COLUMN tenant TEXT")


def m007_replicas(db: Database) -> None:
    """What several replicas on one database share beyond the ledger: budget reservations held by calls
    running now (each expires, so a killed replica's hold ends), leases (one replica runs a DREAM cycle) and
    version rows (a new student published once, taken up by every replica)."""
    db.execute("""CREATE TABLE reservations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, expires REAL NOT NULL, request TEXT, member TEXT,
        atp REAL NOT NULL)""")
    db.execute("""CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL, ts REAL NOT NULL)""")
    db.execute("""CREATE TABLE versions (
        name TEXT PRIMARY KEY, version INTEGER NOT NULL, value TEXT NOT NULL, ts REAL NOT NULL)""")


def m008_task_class(db: Database) -> None:
    """The column `context` of trust, ledger, outcomes and experiences held the task class (what a prompt
    asks: arithmetic, code, ...), not the context signals: it is named `task_class` now, as in calibration."""
    for table in ("trust", "ledger", "outcomes", "experiences"):
        db.execute(f"ALTER TABLE {table} RENAME COLUMN context TO task_class")


MIGRATIONS: list[Migration] = [m001_trust_and_ledger, m002_experiences, m003_state_log, m004_feedback_once,
                              m005_calibration, m006_tenants_and_kinds, m007_replicas, m008_task_class]
SCHEMA_VERSION = len(MIGRATIONS)

# what an ATP spend was for (the ledger's `kind`)
CALL_KINDS = ("request", "judge", "cross-check", "verify", "dream", "dream-measure", "calibration")
# every way a call can end; each is charged to the ledger, so the budget and the routing shares count the calls
# that failed, timed out or were cancelled, not only those that succeeded
CALL_PATHS = ("success", "failure", "timeout", "unavailable", "cancelled")
BUDGET_LOCK = "k1 pool budget"
OLD_NAMES = {"context": "task_class"}  # rows also carry a column's old name, for one release


def _row(r) -> dict:
    """A row as a dict, with the old name of a renamed column beside the new one (read-only, for one release)."""
    d = dict(r)
    for old, new in OLD_NAMES.items():
        if new in d:
            d[old] = d[new]
    return d


def _add_outcome(db: Database, member: str, task_class: str, success: float, source: str,
                 request: str | None, now: float) -> None:
    """One outcome into the Beta counts and the outcome log (inside the caller's write transaction)."""
    db.execute("""INSERT INTO trust (member, task_class, successes, failures, updated) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (member, task_class) DO UPDATE SET successes = trust.successes + excluded.successes,
        failures = trust.failures + excluded.failures, updated = excluded.updated""",
               (member, task_class, success, 1.0 - success, now))
    db.execute("INSERT INTO outcomes (ts, request, member, task_class, success, source) VALUES (?, ?, ?, ?, ?, ?)",
               (now, request, member, task_class, success, source))


class PoolStore:
    """The pool's persistent state in a SQLite file or a Postgres database (thread-safe; safe across
    processes and replicas). `target`: a file path, `sqlite:///path` or `postgresql://...`; any other URL
    is a one-line error."""

    def __init__(self, target: str | Path):
        self.db = open_database(target, "pool store")
        self.path: Path | None = self.db.path  # the SQLite file; None on Postgres
        self.label = self.db.label  # for titles and messages (a URL's password hidden)
        self._lock = self.db._lock
        self.migrate()

    @property
    def dialect(self) -> str:
        return self.db.dialect

    @property
    def home(self) -> Path:
        """A folder for files that belong with the store (DREAM's weights): the SQLite file's folder, or the
        pool's cache folder ($K1_POOL_DIR) for a database on a server."""
        if self.path is not None:
            return self.path.parent
        return Path(os.environ.get("K1_POOL_DIR", "~/.cache/k1/pool")).expanduser()

    @contextmanager
    def write(self) -> Iterator[Database]:
        """One write transaction, taken before reading (no lost updates across processes)."""
        with self.db.transaction() as db:
            yield db

    def migrate(self) -> list[str]:
        """Run the migrations this database has not seen; → their names."""
        with self._lock:
            return migrate(self.db, MIGRATIONS, f"pool store {self.label}")

    @property
    def schema_version(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM _migrations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ---- trust ------------------------------------------------------------------------------------
    def record_outcome(self, member: str, task_class: str, success: float, source: str,
                       request: str | None = None) -> None:
        """Add one outcome (success in [0, 1]; fractional for graded verifiers) to the Beta counts."""
        if not 0.0 <= success <= 1.0:
            raise ValueError(f"success must be in [0, 1], got {success}")
        now = time.time()
        with self.write() as db:
            _add_outcome(db, member, task_class, success, source, request, now)

    def record_feedback(self, member: str, task_class: str, success: float, source: str, request: str) -> bool:
        """The outcome of `request` as told by its caller, once: → False (nothing recorded) if it was told before."""
        if not 0.0 <= success <= 1.0:
            raise ValueError(f"success must be in [0, 1], got {success}")
        now = time.time()
        with self.write() as db:
            if db.execute("""INSERT INTO feedback (request, ts, success, source) VALUES (?, ?, ?, ?)
                ON CONFLICT (request) DO NOTHING""", (request, now, success, source)).rowcount == 0:
                return False
            _add_outcome(db, member, task_class, success, source, request, now)
        return True

    def trust(self, task_class: str | None = None) -> dict[tuple[str, str], tuple[float, float]]:
        """(member, task class) → (successes, failures); one task class, or all."""
        q, args = "SELECT member, task_class, successes, failures FROM trust", ()
        if task_class is not None:
            q, args = q + " WHERE task_class = ?", (task_class,)
        with self._lock:
            return {(r[0], r[1]): (r[2], r[3]) for r in self.db.execute(q, args)}

    def outcome_history(self, limit: int = 10_000) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM outcomes ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in reversed(rows)]

    # ---- the ATP ledger ----------------------------------------------------------------------------
    def charge(self, member: str, path: str, atp: float, flops: float, latency_s: float, *, request: str | None = None,
               session: str | None = None, task_class: str | None = None, prompt_tokens: int = 0,
               completion_tokens: int = 0, stream: bool = False, tenant: str | None = None,
               kind: str = "request", reservation: int | None = None) -> int:
        """One ledger row; `reservation` (from `reserve`) is released in the same transaction. Callers go
        through `k1.pool.ledger.Ledger` (reserve, then charge), not here."""
        if path not in CALL_PATHS:
            raise ValueError(f"unknown call path {path!r}; one of {CALL_PATHS}")
        if kind not in CALL_KINDS:
            raise ValueError(f"unknown call kind {kind!r}; one of {CALL_KINDS}")
        with self.write() as db:
            db.lock(BUDGET_LOCK)  # a reservation elsewhere reads spent and reserved as one
            cur = db.execute("""INSERT INTO ledger (ts, request, session, member, task_class, path, stream, atp, flops,
                latency_s, prompt_tokens, completion_tokens, tenant, kind)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                             (time.time(), request, session, member, task_class, path, int(stream), atp, flops, latency_s,
                              prompt_tokens, completion_tokens, tenant, kind))
            if reservation is not None:
                db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))
            return cur.lastrowid

    # ---- reservations: the budget held by calls running now, on every replica -------------------------------
    def reserve(self, atp: float, budget_atp: float, *, request: str | None = None, member: str | None = None,
                ttl_s: float = 900.0) -> int | None:
        """Hold `atp` of the budget for a call about to run, if spent + held + `atp` ≤ `budget_atp`; → the
        reservation's id (pass it to `charge` or `release`), or None when the budget cannot pay. Atomic across
        processes and replicas (one lock), so N replicas together never hold more than the budget; a hold not
        charged or released within `ttl_s` (its replica was killed) stops counting."""
        now = time.time()
        with self.write() as db:
            db.lock(BUDGET_LOCK)
            db.execute("DELETE FROM reservations WHERE expires < ?", (now,))
            held = db.execute("SELECT COALESCE(SUM(atp), 0) FROM reservations").fetchone()[0]
            if self._spent(db) + held + atp > budget_atp:
                return None
            return db.execute("INSERT INTO reservations (ts, expires, request, member, atp) VALUES (?, ?, ?, ?, ?)",
                              (now, now + ttl_s, request, member, atp)).lastrowid

    def release(self, reservation: int) -> None:
        """Give back a hold that no call will charge (the call never started)."""
        with self.write() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation,))

    def reserved(self) -> float:
        """ATP held now by running calls (all replicas), expired holds left out."""
        with self._lock:
            return self.db.execute("SELECT COALESCE(SUM(atp), 0) FROM reservations WHERE expires >= ?",
                                   (time.time(),)).fetchone()[0]

    def charges(self, request: str) -> list[dict]:
        """The ledger rows of one request (its call, any retries, a judge or a cross-check)."""
        with self._lock:
            rows = self.db.execute("SELECT * FROM ledger WHERE request = ? ORDER BY id", (request,)).fetchall()
        return [_row(r) for r in rows]

    def spent(self, tenant: str | None = None) -> float:
        """ATP charged since the budget was last reset (by one tenant, or by all)."""
        with self._lock:
            return self._spent(self.db, tenant)

    @staticmethod
    def _spent(db: Database, tenant: str | None = None) -> float:
        start = db.execute("SELECT value FROM meta WHERE key = 'budget_from_id'").fetchone()
        q, args = "SELECT COALESCE(SUM(atp), 0) FROM ledger WHERE id > ?", [int(start[0]) if start else 0]
        if tenant is not None:
            q, args = q + " AND tenant = ?", args + [tenant]
        return db.execute(q, args).fetchone()[0]

    def spent_by_kind(self) -> dict[str, float]:
        """kind → ATP charged in all (one of `CALL_KINDS`)."""
        with self._lock:
            return {r[0]: r[1] for r in self.db.execute("SELECT kind, SUM(atp) FROM ledger GROUP BY kind")}

    def reset_budget(self) -> None:
        with self.write() as db:
            db.lock(BUDGET_LOCK)
            last = db.execute("SELECT COALESCE(MAX(id), 0) FROM ledger").fetchone()[0]
            db.execute("""INSERT INTO meta (key, value) VALUES ('budget_from_id', ?)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value""", (str(last),))

    def mean_cost(self) -> dict[str, float]:
        """member → mean ATP per call over its completed calls (what the router expects a call to cost)."""
        with self._lock:
            rows = self.db.execute("SELECT member, AVG(atp) FROM ledger WHERE path = 'success' GROUP BY member")
            return {r[0]: r[1] for r in rows}

    def ledger(self, limit: int = 1000) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM ledger ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in reversed(rows)]

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
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
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
        cols = ("ts", "request", "session", "prompt", "response", "member", "task_class", "latency_s", "atp",
                "outcome", "surprise", "novelty", "arousal", "reward", "conflict", "importance", "tenant")
        row = {**{new: row[old] for old, new in OLD_NAMES.items() if old in row}, **row}  # the old name, read once
        values = [row.get(c) for c in cols] + [json.dumps(row.get("extra") or {})]
        with self.write() as db:
            cur = db.execute(f"INSERT INTO experiences ({', '.join(cols)}, extra) VALUES ({', '.join('?' * (len(cols) + 1))})",
                             values)
            return cur.lastrowid

    def update_experience(self, request: str, **fields) -> bool:
        fields = {OLD_NAMES.get(k, k): v for k, v in fields.items()}
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
            d = _row(r)
            d["extra"] = json.loads(d["extra"] or "{}")
            out.append(d)
        return out

    def labelled_prompts(self, limit: int) -> list[tuple[str, str]]:
        """(prompt, class) of the newest `limit` experiences whose class was stated (by the caller or with
        feedback) by a trusted tenant, not guessed by the classifier nor stated by an untrusted tenant; a chat
        prompt's last user message is the prompt. (Rows written before tenants existed count as trusted.)"""
        with self._lock:
            rows = self.db.execute("""SELECT prompt, task_class, extra FROM experiences
                WHERE json_extract(extra, '$.task_class_source') IN ('caller', 'feedback') AND task_class IS NOT NULL
                AND COALESCE(CAST(json_extract(extra, '$.label_trusted') AS TEXT), '1') IN ('1', 'true')
                ORDER BY id DESC LIMIT ?""", (limit,)).fetchall()
        out = []
        for r in rows:
            msgs = json.loads(r["extra"] or "{}").get("messages")
            users = [m.get("content") for m in msgs or [] if m.get("role") == "user" and isinstance(m.get("content"), str)]
            out.append((users[-1] if users else r["prompt"], r["task_class"]))
        return out

    def verified_since(self, after_id: int = 0) -> tuple[int, int]:
        """(how many experiences after `after_id` have an outcome — feedback, a verifier, a judge — and were asked
        by a trusted tenant; the newest experience's id): what makes the server's DREAM due (k1.pool.sleep)."""
        with self._lock:
            n = self.db.execute("""SELECT COUNT(*) FROM experiences WHERE id > ? AND outcome IS NOT NULL
                AND COALESCE(CAST(json_extract(extra, '$.label_trusted') AS TEXT), '1') IN ('1', 'true')""",
                                (after_id,)).fetchone()[0]
            newest = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM experiences").fetchone()[0]
        return int(n), int(newest)

    def experience(self, request: str) -> dict | None:
        rows = [e for e in self._select_request(request)]
        return rows[0] if rows else None

    def _select_request(self, request: str) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM experiences WHERE request = ?", (request,)).fetchall()
        return [{**_row(r), "extra": json.loads(r["extra"] or "{}")} for r in rows]

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

    # ---- leases: one replica at a time runs a job (a DREAM cycle) --------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take (or renew, if `holder` has it) the lease `name` for `ttl_s` seconds; → False while another
        holder's lease has not expired. The pattern for a job due on every replica: take the lease, check again
        under it that the job is still due (the last holder may have just run it), run, record, release.
        Expiry uses each replica's clock: keep them within a small part of `ttl_s` (NTP)."""
        now = time.time()
        with self.write() as db:
            row = db.execute("""INSERT INTO leases (name, holder, expires, ts) VALUES (?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires, ts = excluded.ts
                WHERE leases.expires < ? OR leases.holder = excluded.holder RETURNING holder""",
                             (name, holder, now + ttl_s, now, now)).fetchone()
        return row is not None

    def release_lease(self, name: str, holder: str) -> bool:
        """End `holder`'s lease early; → False if it was not (or no longer) theirs."""
        with self.write() as db:
            return db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)).rowcount > 0

    def lease_holder(self, name: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT holder FROM leases WHERE name = ? AND expires >= ?",
                                  (name, time.time())).fetchone()
        return row[0] if row else None

    # ---- published versions: every replica takes up a new student without a restart -------------------------
    def publish(self, name: str, value: str) -> int:
        """Publish a new `value` under `name` (a student's weights file and digest, say); → its version,
        one more than the last, whichever replica published it."""
        with self.write() as db:
            return db.execute("""INSERT INTO versions (name, version, value, ts) VALUES (?, 1, ?, ?)
                ON CONFLICT (name) DO UPDATE SET version = versions.version + 1, value = excluded.value,
                ts = excluded.ts RETURNING version""", (name, value, time.time())).fetchone()[0]

    def version(self, name: str) -> tuple[int, str] | None:
        """(version, value) last published under `name`, or None: a cheap read replicas poll."""
        with self._lock:
            row = self.db.execute("SELECT version, value FROM versions WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None
