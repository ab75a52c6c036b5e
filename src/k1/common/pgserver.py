"""A throwaway Postgres server on a private loopback port, its data in a temporary folder: what the store's
tests, the replica soak and `bench/pool_server.py` run against. Not for production (no backups, no tuning).

Postgres refuses to run as root, so when this process is root the server runs as an unprivileged user
(`nobody`, through `setpriv`) that owns the data folder. The server's binaries are found on PATH or in
Debian's /usr/lib/postgresql/<version>/bin (`scripts/setup.sh` installs them). The superuser `k1` has a
random password; the server listens on 127.0.0.1 only, with its Unix socket inside the data folder.
`unavailable()` says in one line why a server cannot be started here (for a test's skip)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BINARIES = ("initdb", "postgres")
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}  # tests: speed over durability


def find_bin() -> Path | None:
    """The folder holding initdb and postgres: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0)
    for d in reversed(versions):
        if all((d / b).is_file() for b in BINARIES):
            return d
    return None


def _run_as() -> list[str]:
    """The prefix that drops root to `nobody` (postgres will not run as root); [] when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("running as root and no setpriv to start Postgres as another user")
    pw = pwd.getpwnam("nobody")
    return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]


def unavailable() -> str | None:
    """Why a local Postgres cannot start here (one line), or None if it can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed (pip install 'k1[pg]')"
    if find_bin() is None:
        return "no Postgres server binaries (initdb, postgres) on PATH or in /usr/lib/postgresql/*/bin"
    try:
        _run_as()
        if os.geteuid() == 0:
            pwd.getpwnam("nobody")
    except (RuntimeError, KeyError) as e:
        return f"cannot drop root to start Postgres: {e}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """`start()` → a server on 127.0.0.1:`port`; `url(db)`, `create_database(name)`, `restart()`,
    `kill()` (SIGKILL, as a crash), `close()` (stop and delete the data)."""

    def __init__(self, settings: dict[str, str] | None = None, *, user: str = "k1"):
        self.bin = find_bin()
        if self.bin is None:
            raise RuntimeError(unavailable() or "no Postgres")
        self.settings = dict(FAST if settings is None else settings)
        self.user, self.password = user, secrets.token_hex(12)
        self.root = Path(tempfile.mkdtemp(prefix="k1-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._prefix = _run_as()
        if self._prefix:  # the unprivileged user must reach and own the data folder
            pw = pwd.getpwnam("nobody")
            os.chmod(self.root, 0o700)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._prefix:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        out = subprocess.run([*self._prefix, str(self.bin / "initdb"), "-D", str(self.data), "-U", user,
                              f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                             cwd=self.root, capture_output=True, text=True, check=False)
        pwfile.unlink()
        if out.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"initdb failed: {last[0]}")

    def start(self, timeout_s: float = 60.0) -> LocalPostgres:
        for _ in range(3):  # a port taken between choosing and binding: choose another
            self.port = self.port or _free_port()
            args = [*self._prefix, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                    "-h", "127.0.0.1", "-k", str(self.data)]
            for k, v in self.settings.items():
                args += ["-c", f"{k}={v}"]
            with open(self.root / "server.log", "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                             start_new_session=True)
            if self._wait_ready(timeout_s):
                return self
            self.port = 0
        tail = (self.root / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"Postgres did not start: {' | '.join(tail)}")

    def _wait_ready(self, timeout_s: float) -> bool:
        import psycopg
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.kill()
        return False

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new empty database; → its URL."""
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, mode: int = signal.SIGINT, timeout_s: float = 30.0) -> None:
        """SIGINT: fast shutdown (sessions ended, nothing committed lost); SIGQUIT: immediate."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(mode)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
