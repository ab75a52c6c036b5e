"""Start a program inside a bubblewrap sandbox: new user, PID, network, mount, IPC, UTS and cgroup
namespaces; a read-only view of the system's programs and the Python installation only; a small private
/tmp; no environment; an unprivileged uid with no capabilities and `no_new_privs`. (The per-process limits
are set by the program inside, first thing: see inside.py.)

When the caller is root it first drops to an unprivileged host uid (nobody), so that the kernel's process
limit applies (root is exempt from it) and an escape from the namespaces would land as nobody, not root.
"""

from __future__ import annotations

import functools
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
TMP_BYTES = 16 << 20  # the private /tmp (tmpfs): the only writable place
_STAGE = "/tmp"  # as root: where the Python prefix is bind-mounted, in a mount namespace of bwrap's own


def python_exe() -> str:
    """The real interpreter behind this one (a virtual environment's `python` is a symlink to it)."""
    return os.path.realpath(sys.executable)


def bwrap_exe() -> str | None:
    return shutil.which("bwrap")


def _system_args() -> list[str]:
    """Read-only binds of what an interpreter needs: /usr (and the /bin, /lib links into it), the loader
    cache, and the Python installation when it lives outside /usr. Nothing else of the host is visible."""
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _prefix() -> Path | None:
    """The Python installation's root when it is outside /usr (pyenv under a home folder, /opt, ...)."""
    prefix = Path(sys.base_prefix).resolve()
    exe = Path(python_exe())
    if prefix == Path("/usr") or Path("/usr") in prefix.parents:
        return None
    if prefix not in exe.parents:
        raise OSError(f"the interpreter {exe} is outside its prefix {prefix}")
    return prefix


def command(files: dict[str, int], argv: list[str]) -> tuple[list[str], list[int]]:
    """bwrap argv that runs `argv` in the sandbox, with `files` (sandbox path → readable fd) copied in.

    → (argv, fds the child must inherit)."""
    fds = list(files.values())
    root = os.geteuid() == 0
    prefix = _prefix()
    args = [*(_as_nobody(prefix) if root else []), bwrap_exe() or "bwrap",
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox", "--clearenv",
            *_system_args(), "--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
            "--chdir", "/tmp"]
    if prefix is not None:
        args += ["--ro-bind", _STAGE if root else str(prefix), str(prefix)]
    for path, fd in files.items():
        args += ["--ro-bind-data", str(fd), path]
    # the root itself is bwrap's tmpfs: read-only, so the size-bounded /tmp is the only writable place
    return args + ["--remount-ro", "/", "--", *argv], fds


def _as_nobody(prefix: Path | None) -> list[str]:
    """As root: the commands that put bwrap in a mount namespace of its own with the Python prefix staged
    where nobody can reach it, then drop to nobody. The prefix often sits in root's private home folder; it
    is bind-mounted over /tmp in that namespace only (the host's mounts do not change), and bwrap binds it
    from there, read-only, to its own path inside the sandbox. Plain programs (util-linux), so the parent
    is not forked with a Python preexec hook: a large parent (a loaded model) would make that slow."""
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    if prefix is None:
        return drop
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(prefix), _STAGE, *drop]


def spawn(files: dict[str, bytes], argv: list[str], keep_fds: list[int]) -> subprocess.Popen:
    """Start `argv` in a sandbox with `files` (sandbox path → content) and `keep_fds` inherited.

    stdout is discarded; stderr is a pipe that only the interpreter's start-up can write to (the program
    inside points its stdio at /dev/null first thing)."""
    mem = {}
    try:
        for path, data in files.items():
            fd = os.memfd_create("k1-sandbox", 0)
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            mem[path] = fd
        cmd, fds = command(mem, argv)
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, pass_fds=[*fds, *keep_fds])
    finally:
        for fd in mem.values():
            os.close(fd)


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """None when a sandboxed interpreter starts and answers here; otherwise why not (one probe per process)."""
    from k1.tasks.sandbox.run import INSIDE

    if bwrap_exe() is None:
        return "bubblewrap (`bwrap`) is not installed"
    try:
        r = subprocess.run([bwrap_exe(), "--version"], capture_output=True, text=True, timeout=10)
        version = r.stdout.split()[-1]
        if tuple(int(x) for x in version.split(".")[:2]) < (0, 8):
            return f"bubblewrap {version} is too old (0.8 or newer is needed for --disable-userns and --size)"
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return f"`bwrap --version` failed: {e}"
    try:
        r, w = os.pipe()
        try:
            p = spawn({"/k1/inside.py": INSIDE.encode(), "/k1/job": marshal.dumps({})},
                      [python_exe(), "-I", "-S", "-B", "/k1/inside.py", "ping", "/k1/job", str(w)],
                      [w])
        finally:
            os.close(w)
        try:
            _, err = p.communicate(timeout=20)
            with os.fdopen(r, "rb") as f:
                got = f.read(16)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return "a sandboxed interpreter did not start within 20 s"
    except OSError as e:
        return f"bubblewrap could not start: {e}"
    if got != b"pong\n":
        msg = " ".join(err.decode(errors="replace").split())[-300:]
        return f"bubblewrap could not start a sandboxed interpreter (exit {p.returncode}: {msg or 'no message'})"
    return None
