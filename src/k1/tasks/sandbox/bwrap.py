"""Start a program inside a bubblewrap sandbox: new user, PID, network, mount, IPC, UTS and cgroup
namespaces; an empty read-only root holding only the interpreter, its standard library and the shared
libraries they load; five device nodes; a small private /tmp; no /proc; no environment; a seccomp filter;
an unprivileged uid with no capabilities and `no_new_privs`. (The per-process limits are set by the
program inside, first thing: see inside.py.)

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
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from k1.tasks.sandbox import seccomp

INSIDE = (Path(__file__).parent / "inside.py").read_text()  # what runs inside: the candidate server and the checker

NOBODY = 65534
TMP_BYTES = 16 << 20  # the private /tmp (tmpfs): the only writable place
PY_HOME = "/python"   # where an interpreter installed outside /usr appears inside, so its host path stays hidden
DEVICES = ("null", "zero", "full", "random", "urandom")  # the only entries of /dev (read-only otherwise)
_STAGE = "/tmp"  # as root: where the Python prefix is bind-mounted, in a mount namespace of bwrap's own


def python_exe() -> str:
    """The real interpreter behind this one (a virtual environment's `python` is a symlink to it)."""
    return os.path.realpath(sys.executable)


def bwrap_exe() -> str | None:
    return shutil.which("bwrap")


def _packages(d: Path) -> list[Path]:
    """Installed-package folders in (or just below) a library folder: what the sandbox must not see."""
    globs = ("site-packages", "dist-packages", "python3*/site-packages", "python3*/dist-packages")
    return sorted({p for g in globs for p in d.glob(g) if p.is_dir()})


@functools.lru_cache(maxsize=1)
def _system_args() -> tuple[str, ...]:
    """Read-only binds of the shared libraries an interpreter loads: the multiarch library folder (or all of
    /usr/lib where there is none, with its Python packages hidden), /usr/lib64, the /lib links (or folders)
    and the loader cache. No programs (/usr/bin), no /usr/share, /usr/local or /etc."""
    multi = sysconfig.get_config_var("MULTIARCH")
    libs = [Path("/usr/lib", multi)] if multi and Path("/usr/lib", multi).is_dir() else [Path("/usr/lib")]
    libs += [p for p in (Path("/usr/lib64"),) if p.is_dir() and not p.is_symlink()]
    args = []
    for p in libs:
        args += ["--ro-bind", str(p), str(p)]
    for d in ("lib", "lib32", "lib64", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
            libs.append(p)
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return tuple(args + _hide([h for p in libs for h in _packages(p)]))  # (once: globbing /usr/lib is slow)


def _hide(dirs) -> list[str]:
    """Cover each folder with an empty, read-only, one-page tmpfs."""
    args = []
    for d in dirs:
        args += ["--size", "4096", "--tmpfs", str(d), "--remount-ro", str(d)]
    return args


@dataclass(frozen=True)
class Layout:
    """The interpreter's files as the sandbox sees them."""

    parts: tuple[tuple[str, str], ...]  # (path relative to `home` on the host, path inside), bound read-only
    home: str | None                    # the host folder `parts` are relative to when relocated, else None
    hidden: tuple[str, ...]             # paths inside covered empty (the installation's site-packages)
    exe: str                            # the interpreter's path inside
    env: tuple[tuple[str, str], ...]    # fixed variables inside (LD_LIBRARY_PATH for a relocated libpython)


@functools.lru_cache(maxsize=1)
def layout() -> Layout:
    """The interpreter, its standard library, lib-dynload and libpython (a shared build), nothing else of the
    installation (site-packages is covered). Installed under /usr they keep their paths; anywhere else (pyenv
    under a home folder, /opt) they appear under PY_HOME, where the interpreter finds its library by itself."""
    prefix = Path(sys.base_prefix).resolve()
    exe = Path(python_exe())
    stdlib = Path(os.__file__).resolve().parent
    parts = [exe, stdlib]
    dyn = sysconfig.get_config_var("DESTSHARED")
    if dyn and Path(dyn).is_dir() and stdlib not in Path(dyn).resolve().parents:
        parts.append(Path(dyn).resolve())
    lib = None
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and sysconfig.get_config_var("INSTSONAME"):
        lib = Path(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
        parts += [lib] if lib.exists() else []
    hidden = _packages(stdlib)
    if prefix == Path("/usr") or Path("/usr") in prefix.parents:
        return Layout(tuple((str(p), str(p)) for p in parts), None, tuple(map(str, hidden)), str(exe), ())
    outside = [p for p in parts if prefix not in p.parents]
    if outside:
        raise OSError(f"{outside[0]} is outside the Python installation {prefix}")
    inside = {p: str(PY_HOME / p.relative_to(prefix)) for p in [*parts, *hidden]}
    env = (("LD_LIBRARY_PATH", str(Path(inside[lib]).parent)),) if lib in inside else ()
    return Layout(tuple((str(p.relative_to(prefix)), inside[p]) for p in parts), str(prefix),
                  tuple(inside[p] for p in hidden), inside[exe], env)


def command(files: dict[str, int], argv: list[str], filter_fd: int | None = None) -> tuple[list[str], list[int]]:
    """bwrap argv that runs `argv` (with the interpreter's path inside as argv[0]) in the sandbox, with
    `files` (sandbox path → readable fd) copied in and the seccomp program read from `filter_fd`.

    → (argv, fds the child must inherit)."""
    fds = list(files.values())
    root = os.geteuid() == 0
    lay = layout()
    args = [*(_as_nobody(lay.home) if root else []), bwrap_exe() or "bwrap",
            "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox", "--clearenv"]
    for k, v in lay.env:
        args += ["--setenv", k, v]
    args += _system_args()
    for src, dst in lay.parts:
        host = src if lay.home is None else os.path.join(_STAGE if root else lay.home, src)
        args += ["--ro-bind", host, dst]
    args += _hide(lay.hidden)
    for d in DEVICES:
        args += ["--dev-bind", f"/dev/{d}", f"/dev/{d}"]
    args += ["--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    for path, fd in files.items():
        args += ["--ro-bind-data", str(fd), path]
    if filter_fd is not None:
        args += ["--seccomp", str(filter_fd)]
        fds.append(filter_fd)
    # the root itself is bwrap's tmpfs: read-only, so the size-bounded /tmp is the only writable place
    return args + ["--remount-ro", "/", "--", lay.exe, *argv[1:]], fds


def _as_nobody(home: str | None) -> list[str]:
    """As root: the commands that put bwrap in a mount namespace of its own with the Python installation
    staged where nobody can reach it, then drop to nobody. The installation often sits in root's private home
    folder; it is bind-mounted over /tmp in that namespace only (the host's mounts do not change), and bwrap
    binds its parts from there, read-only, to PY_HOME inside the sandbox. Plain programs (util-linux) called
    by absolute path with an empty environment, so the parent is not forked with a Python preexec hook (a
    large parent, a loaded model, would make that slow) and nothing of the caller's environment follows."""
    drop = [_which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    if home is None:
        return drop
    return [_which("unshare"), "--mount", "--propagation", "private", "--", _which("sh"), "-c",
            '"$1" --bind "$2" "$3" && shift 3 && exec "$@"', "sh", _which("mount"), home, _STAGE, *drop]


def _which(name: str) -> str:
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or name


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("k1-sandbox", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def spawn(files: dict[str, bytes], argv: list[str], keep_fds: list[int]) -> subprocess.Popen:
    """Start `argv` in a sandbox with `files` (sandbox path → content) and `keep_fds` inherited.

    stdout is discarded; stderr is a pipe that only the interpreter's start-up can write to (the program
    inside points its stdio at /dev/null first thing)."""
    mine = []
    try:
        mem = {}
        for path, data in files.items():
            mem[path] = _memfd(data)
            mine.append(mem[path])
        prog = seccomp.program()
        filter_fd = None if prog is None else _memfd(prog)
        mine += [] if filter_fd is None else [filter_fd]
        cmd, fds = command(mem, argv, filter_fd)
        # an empty environment and / as the working folder: nothing of the caller's reaches the sandbox
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={}, cwd="/", pass_fds=[*fds, *keep_fds])
    finally:
        for fd in mine:
            os.close(fd)


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """None when a sandboxed interpreter starts and answers here; otherwise why not (one probe per process)."""
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
