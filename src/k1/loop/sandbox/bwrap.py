"""Start a program inside a bubblewrap sandbox: new user, PID, network, mount, IPC, UTS and cgroup
namespaces; a read-only view of the system's programs and the Python installation only; a small private
/tmp; no environment; an unprivileged uid with no capabilities and `no_new_privs`; per-process limits.

When the caller is root it first drops to an unprivileged host uid (nobody), so that the kernel's process
limit applies (root is exempt from it) and an escape from the namespaces would land as nobody, not root.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
TMP_BYTES = 16 << 20  # the private /tmp (tmpfs): the only writable place
_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20000, 0x1000, 0x4000, 0x40000
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
    args = [bwrap_exe() or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox", "--clearenv",
            *_system_args(), "--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
            "--chdir", "/tmp"]
    prefix = _prefix()
    if prefix is not None:
        args += ["--ro-bind", _STAGE if os.geteuid() == 0 else str(prefix), str(prefix)]
    for path, fd in files.items():
        args += ["--ro-bind-data", str(fd), path]
    # the root itself is bwrap's tmpfs: read-only, so the size-bounded /tmp is the only writable place
    return args + ["--remount-ro", "/", "--", *argv], fds


def _call(fn, *args):
    if fn(*args) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def limiter(memory_bytes: int, cpu_s: int, file_bytes: int, open_files: int):
    """preexec_fn for the bwrap process: drop root to nobody, then per-process limits (inherited below).

    Root first stages the Python prefix where nobody can reach it: the prefix often sits in root's private
    home folder, so, in a mount namespace of this process alone, it is bind-mounted over /tmp, and bwrap
    binds it from there (read-only) to its own path inside the sandbox. The host's mounts do not change."""
    prefix = _prefix()

    def apply():
        if os.geteuid() == 0:
            if prefix is not None:
                _call(_LIBC.unshare, _CLONE_NEWNS)
                _call(_LIBC.mount, b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
                _call(_LIBC.mount, os.fsencode(prefix), _STAGE.encode(), None, _MS_BIND | _MS_REC, None)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        for what, n in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_s),
                        (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_NOFILE, open_files),
                        (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(what, (n, n))
    return apply


def spawn(files: dict[str, bytes], argv: list[str], keep_fds: list[int], limits) -> subprocess.Popen:
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
                                env={}, pass_fds=[*fds, *keep_fds], close_fds=True,
                                preexec_fn=limiter(limits.memory_bytes, limits.cpu_s, limits.file_bytes,
                                                   limits.open_files))
    finally:
        for fd in mem.values():
            os.close(fd)


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """None when a sandboxed interpreter starts and answers here; otherwise why not (one probe per process)."""
    from k1.loop.sandbox.limits import Limits
    from k1.loop.sandbox.run import INSIDE

    if bwrap_exe() is None:
        return "bubblewrap (`bwrap`) is not installed"
    try:
        r, w = os.pipe()
        try:
            p = spawn({"/k1/inside.py": INSIDE.encode(), "/k1/job.json": b"{}"},
                      [python_exe(), "-I", "-S", "-B", "/k1/inside.py", "ping", "1", "/k1/job.json", str(w)],
                      [w], Limits())
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
