"""`Sleep`: the background thread of `k1 pool serve` that runs DREAM when it is due and takes up new students.

Every few seconds it takes up a student another process published (`StudentPoll`, waiting for the member's turn
like a request: a call answers wholly on the old weights or wholly on the new). Where `[pool.dream] mode =
"auto"`, every `check_s` seconds it also lets long idleness put the pool to REST and asks `due`. When DREAM is due it
takes the store's `dream` lease (one replica of many wins), asks again under the lease (another replica may have
just run a cycle), records the cycle as started in the store, and starts `python -m k1 pool dream --pool FILE
--json ARGS…` as a separate process handed the lease; the server keeps serving. The lease is renewed while the
child runs and released when it ends; a child that dies unrenewed lets it expire by itself (`lease_s`).

What a client can do about it: nothing directly — no endpoint starts a cycle. Verified experiences from
trusted tenants make it due; cycles are at least `every_s` apart whatever their outcome, on every replica
together; none starts with less than `min_budget_left` of the budget left; DREAM's own calls are charged to the
ledger like any other."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from k1.pool.sleep.lease import HOLDER_ENV, NAME, PARENT_ENV, TTL_ENV, HeldLease, own_holder
from k1.pool.sleep.settings import DreamSettings

log = logging.getLogger(__name__)

CYCLE_KEY = "dream_cycle"  # the store's record of the last cycle, whichever replica ran it
STUDENT_POLL_S = 5.0


def last_cycle(store) -> dict | None:
    """The last cycle any replica started (when, why, outcome, new versions); a 'running' one whose lease is gone
    is reported as abandoned (its server or process died)."""
    raw = store.get_meta(CYCLE_KEY)
    if not raw:
        return None
    rec = json.loads(raw)
    if rec.get("outcome") == "running" and store.lease_holder(NAME) != rec.get("replica"):
        rec["outcome"] = "abandoned (its process died before it finished)"
    return rec


def counted_from(last: dict | None) -> int:
    """The experience id the next cycle counts new experiences from: where the last cycle that ran to the end
    began; a cycle that failed, was killed or abandoned consumed nothing, so the next counts from where it did."""
    if last is None:
        return 0
    return last["watermark"] if last["outcome"].startswith("ok") else last.get("since", 0)


def class_marks(last: dict | None) -> dict[str, int] | None:
    """Per-class cycles: {task class: the experience id its new experiences count from} — where that class's last
    cycle that ran to the end began (a class never consolidated counts from 0): a cycle on one class consumes
    that class's experiences only. None for a record written before per-class marks (every class then counts
    from `counted_from`)."""
    if last is None:
        return {}
    if "marks" not in last:
        return None
    return last["marks"] if last["outcome"].startswith("ok") else last.get("since_marks", {})


def due(store, settings: DreamSettings, state: str, budget_left: float, now: float | None = None) -> tuple[bool, str]:
    """→ (whether a DREAM cycle is due, why or why not)."""
    now = time.time() if now is None else now
    last = last_cycle(store)
    if last is not None and now - last["started"] < settings.every_s:
        return False, f"the last cycle started {now - last['started']:.0f} s ago (every_s {settings.every_s:g})"
    if budget_left < settings.min_budget_left:
        return False, f"{budget_left:.0%} of the budget left (< {settings.min_budget_left:.0%})"
    n, cls = new_verified(store, settings, last)
    need = settings.rest_after if state == "REST" else settings.after
    of = f" of class {cls}" if cls else ""
    if n < need:
        return False, f"{n} of {need} new verified experiences{of} ({state})"
    return True, f"{n} new verified experiences{of} ({state})"


def new_verified(store, settings: DreamSettings, last: dict | None) -> tuple[int, str | None]:
    """(new verified experiences since the last cycle, None) — or, `per_class`, those of the task class (of
    `classes`, if given) that has the most since its own last cycle (`class_marks`), and that class."""
    marks = class_marks(last) if settings.per_class else None
    if marks is None:
        counts, _ = store.verified_since(counted_from(last))
    else:
        counts, _ = store.verified_since(0)
        counts = {c: store.verified_since(marks[c])[0].get(c, 0) if c in marks else n for c, n in counts.items()}
    if not settings.per_class:
        return sum(counts.values()), None
    if settings.classes:
        counts = {c: counts.get(c, 0) for c in settings.classes}
    counts = {c: n for c, n in counts.items() if c}
    if not counts:
        return 0, None
    cls = max(sorted(counts), key=lambda c: counts[c])
    return counts[cls], cls


def cycle_record(store, settings: DreamSettings, last: dict | None, why: str, holder: str) -> dict:
    """The store's record of a cycle about to start: its number, why, what it counts from and — if it ends well —
    where the next cycles count from (`watermark`; per class, `marks`: this class's moves, the others' stay)."""
    _, newest = store.verified_since(counted_from(last))
    rec = {"n": (last or {}).get("n", 0) + 1, "started": time.time(), "reason": why, "replica": holder,
           "since": counted_from(last), "watermark": newest, "outcome": "running"}
    if settings.per_class:
        _, cls = new_verified(store, settings, last)
        before = class_marks(last) or {}
        rec.update(task_class=cls, since_marks=before, marks={**before, cls: newest} if cls else before)
    return rec


def _versions(router) -> dict[str, int]:
    out = {}
    for name in router.pool.members:
        v = router.store.version(f"student:{name}")
        if v is not None:
            out[name] = v[0]
    return out


class Sleep:
    def __init__(self, router, pool_file: str | Path, settings: DreamSettings, *, python: str = sys.executable,
                 say=None, held_versions=None):
        self.router, self.store, self.settings = router, router.store, settings
        # member → loaded student version, for status(); passed in because the weights live above the sleep
        self.held_versions = held_versions or (lambda: {})
        self.pool_file, self.python = str(Path(pool_file).resolve()), python
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.proc: subprocess.Popen | None = None
        self.lease: HeldLease | None = None
        self.cycle: dict | None = None
        self.why = "not checked yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # tick() from the thread and stop() from the server's shutdown

    @property
    def auto(self) -> bool:
        return self.settings.mode == "auto"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="k1-pool-sleep", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        every = min(self.settings.check_s, STUDENT_POLL_S) if self.auto else STUDENT_POLL_S
        while not self._stop.wait(every):
            try:
                self.tick()
            except Exception as e:  # the store restarting, say: never the end of the server's sleep
                log.warning("sleep: %s: %s", type(e).__name__, e)

    def tick(self) -> None:
        """One look: students, idleness, and the DREAM cycle (start one, or see the running one through)."""
        students = getattr(self.router, "students", None)
        if students is not None:
            students.look(force=True, wait=True)
        if not self.auto:
            return
        with self.router.state_lock:
            state = self.router.metabolism.idle_check()  # a pool idle for rest_after_s rests: and sleeps sooner
        with self._lock:
            if self._stop.is_set():
                return
            if self.proc is not None:
                self._watch()
                return
            ok, self.why = due(self.store, self.settings, state, self.router.budget_left())
            if not ok:
                return
            lease = HeldLease(self.store, own_holder("serve"), self.settings.lease_s)
            if not lease.acquire():
                self.why = f"another replica runs DREAM ({self.store.lease_holder(NAME)})"
                return
            ok, self.why = due(self.store, self.settings, state, self.router.budget_left())  # under the lease
            if not ok:
                lease.release()
                return
            try:
                self._spawn(lease, self.why)
            except BaseException:
                if self.proc is None:  # the store went away before the child started: nobody keeps the lease
                    lease.release()
                    self.lease = None
                raise

    def _spawn(self, lease: HeldLease, why: str) -> None:
        self.cycle = {**cycle_record(self.store, self.settings, last_cycle(self.store), why, lease.holder),
                      "before": _versions(self.router)}
        self.store.set_meta(CYCLE_KEY, json.dumps(self.cycle))
        out = self.store.home / "dream"
        out.mkdir(parents=True, exist_ok=True)
        self.log_path, self.out_path = out / "last-cycle.log", out / "last-cycle.json"  # stderr, stdout
        env = {**os.environ, HOLDER_ENV: lease.holder, TTL_ENV: str(self.settings.lease_s), PARENT_ENV: str(os.getpid())}
        cmd = [self.python, "-m", "k1", "pool", "dream", "--pool", self.pool_file, "--json", *self.settings.args]
        if self.cycle.get("task_class") is not None:
            cmd += ["--task-class", self.cycle["task_class"]]
        self.lease = lease
        try:
            with open(self.log_path, "wb") as err, open(self.out_path, "wb") as f:
                self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=err)
        except OSError as e:
            self.proc = None
            self._end(f"failed to start: {e}")
            return
        self.cycle["pid"] = self.proc.pid
        self.store.set_meta(CYCLE_KEY, json.dumps(self.cycle))

    def _watch(self) -> None:
        rc = self.proc.poll()
        if rc is None:
            if time.time() - self.cycle["started"] > self.settings.timeout_s:
                self._kill()
                self._end(f"timed out after {self.settings.timeout_s:g} s")
            elif self.lease.lost:
                self._kill()
                self._end("stopped: the lease was lost (the store was out of reach)")
            return
        if rc == 0:
            self._end("ok")
        elif rc < 0:
            self._end(f"killed (signal {-rc})")
        else:
            self._end(f"failed (exit {rc}): {self._last_line(self.log_path)}")

    def _kill(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @staticmethod
    def _last_line(path: Path, limit: int = 300) -> str:
        try:
            if path.stat().st_size > 1 << 24:
                return ""
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:limit] if lines else ""

    def _report(self) -> dict:
        """What the child printed last as JSON (`k1 pool dream --json`), in brief."""
        try:
            rep = json.loads(self._last_line(self.out_path, limit=1 << 24))
        except ValueError:
            return {}
        return {k: rep[k] for k in ("teacher", "student", "train", "task_class", "weights", "seconds")
                if isinstance(rep, dict) and k in rep}

    def _end(self, outcome: str) -> None:
        c = self.cycle
        after = _versions(self.router)
        c["new_versions"] = {n: v for n, v in after.items() if v > c["before"].get(n, 0)}
        if outcome == "ok":
            c["report"] = self._report()
            if not c["new_versions"]:
                outcome = "ok (no new student)"
        c.update(outcome=outcome, ended=time.time(), seconds=round(time.time() - c["started"], 1))
        if self.proc is not None:
            c["exit"] = self.proc.returncode
        self.store.set_meta(CYCLE_KEY, json.dumps(c))
        self.proc = None
        self.lease.release()
        self.lease = None
        new = ", ".join(f"{n} v{v}" for n, v in c["new_versions"].items()) or "none"
        self.say(f"DREAM cycle {c['n']}: {outcome} · {c['seconds']:.0f} s · new students: {new} · {c['reason']} "
                 f"· log {self.log_path}")
        students = getattr(self.router, "students", None)
        if students is not None and c["new_versions"]:
            students.look(force=True, wait=True)  # this replica first; the others within their next look

    def stop(self) -> None:
        """The server is shutting down: a running cycle is stopped (and recorded so), its lease released."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            if self.proc is not None:
                self._kill()
                self._end("stopped: the server shut down")

    def status(self) -> dict:
        """For /v1/pool and `k1 pool status`: the mode, whether a cycle runs here, why not, and the last cycle."""
        running = self.proc is not None
        held = self.held_versions()
        return {"mode": self.settings.mode, "running_here": running, "pid": self.proc.pid if running else None,
                "due": None if running or not self.auto else self.why, "last": last_cycle(self.store),
                "every_s": self.settings.every_s, "after": self.settings.after, "students_held": held}
