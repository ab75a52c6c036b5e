"""What runs inside the sandbox, and the value codec that both sides share (standard library only).

The sandbox is handed this file's text, so it must not import k1. Two roles:

- `candidate`: executes the model's code, then answers calls one line at a time: a request names an
  expression to evaluate or a function to call; the answer is the value, encoded as literal data. That is
  the only thing the candidate sends back.
- `checker`: runs opaque test code (a task's `check(candidate)` or asserts of other shapes) in a separate
  sandbox, after the task's own code (its imports, setup and the helpers its prompt defines); the
  candidate's functions are proxies that call it over a pipe, so the test code sees only decoded literal
  values, never a candidate object, and its helpers are the task's, never the candidate's. Its verdict
  goes out on a channel the candidate has no handle on.

Values cross as tagged JSON: exact built-in types only (bool, int, float, complex, str, bytes, None, list,
tuple, dict, set, frozenset). Anything else is refused, so no `__eq__` of the candidate's ever runs outside.
Every string in that JSON is a tag or hex digits, so the candidate writes it without the `json` module
(whose import would double its start-up). What goes in (the job, the calls) is `marshal` data: only the
host and the checker produce it, and the side that reads it is the sandboxed one.
"""

import marshal
import os
import resource
import sys

MAX_DEPTH = 64


class NotLiteral(TypeError):
    pass


def encode(v, depth=0):
    """A literal value → JSON-able tagged form; raises NotLiteral for anything else (subclasses included)."""
    if depth > MAX_DEPTH:
        raise NotLiteral("value nested too deeply")
    t = type(v)
    if v is None:
        return ["N"]
    if t is bool:
        return ["B", v]
    if t is int:
        return ["i", format(v, "x")]
    if t is float:
        return ["f", v.hex()]
    if t is complex:
        return ["c", v.real.hex(), v.imag.hex()]
    if t is str:
        return ["s", v.encode("utf-8", "surrogatepass").hex()]
    if t is bytes:
        return ["b", v.hex()]
    if t in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[t]
        return [tag, [encode(x, depth + 1) for x in v]]
    if t is dict:
        return ["d", [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in v.items()]]
    raise NotLiteral(f"a {t.__module__}.{t.__qualname__} is not a literal value")


def decode(e, depth=0):
    """The inverse of `encode`, for untrusted input: anything malformed raises ValueError."""
    if depth > MAX_DEPTH or type(e) is not list or not e or type(e[0]) is not str:
        raise ValueError("malformed value")
    tag, rest = e[0], e[1:]
    try:
        if tag == "N" and not rest:
            return None
        if tag == "B" and type(rest[0]) is bool:
            return rest[0]
        if tag == "i" and type(rest[0]) is str and len(rest[0]) <= 4096:
            return int(rest[0], 16)
        if tag == "f" and type(rest[0]) is str:
            return float.fromhex(rest[0])
        if tag == "c":
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag == "s" and type(rest[0]) is str:
            return bytes.fromhex(rest[0]).decode("utf-8", "surrogatepass")
        if tag == "b" and type(rest[0]) is str:
            return bytes.fromhex(rest[0])
        if tag in ("l", "t", "S", "F") and type(rest[0]) is list:
            xs = [decode(x, depth + 1) for x in rest[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](xs)
        if tag == "d" and type(rest[0]) is list:
            return {decode(k, depth + 1): decode(x, depth + 1) for k, x in rest[0]}
    except (IndexError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"malformed value: {exc}") from None
    raise ValueError(f"malformed value (tag {tag!r})")


# --- the in-sandbox programs ---------------------------------------------------------------------------

def _err(e: BaseException) -> str:
    """An exception as hex text (decoded with `unhex`)."""
    try:
        text = f"{type(e).__name__}: {e}"[:300]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = type(e).__name__
    return text.encode("utf-8", "replace").hex()


def unhex(h) -> str:
    try:
        return bytes.fromhex(h).decode("utf-8", "replace")
    except (TypeError, ValueError):
        return "(garbled)"


def dump(x) -> str:
    """JSON for the tagged form (lists, booleans and strings that need no escaping), without `json`."""
    if type(x) is list:
        return "[" + ",".join(map(dump, x)) + "]"
    if type(x) is bool:
        return "true" if x else "false"
    return '"' + x + '"'


_SAFE = frozenset(b"0123456789abcdefABCDEFghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ.+-_")


def parse(line: bytes):
    """The inverse of `message`/`dump` for untrusted input: objects, lists, true/false and safe strings only
    (ValueError otherwise). The checker's own parser, so it does not import `json` either."""
    pos, n = 0, len(line)

    def value(depth):
        nonlocal pos
        if depth > MAX_DEPTH + 4 or pos >= n:
            raise ValueError("malformed answer")
        c = line[pos]
        if c == 0x22:  # "
            end = line.index(b'"', pos + 1)
            text = line[pos + 1:end]
            if not _SAFE.issuperset(text):
                raise ValueError("malformed answer")
            pos = end + 1
            return text.decode()
        for word, v in ((b"true", True), (b"false", False)):
            if line.startswith(word, pos):
                pos += len(word)
                return v
        if c in (0x5B, 0x7B):  # [ {
            close, out, pos = (0x5D if c == 0x5B else 0x7D), [], pos + 1
            while pos < n and line[pos] != close:
                if out:
                    if line[pos] != 0x2C:  # ,
                        raise ValueError("malformed answer")
                    pos += 1
                if close == 0x7D:
                    k = value(depth + 1)
                    if type(k) is not str or line[pos:pos + 1] != b":":
                        raise ValueError("malformed answer")
                    pos += 1
                    out.append((k, value(depth + 1)))
                else:
                    out.append(value(depth + 1))
            if pos >= n:
                raise ValueError("malformed answer")
            pos += 1
            return dict(out) if close == 0x7D else out
        raise ValueError("malformed answer")

    v = value(0)
    if line[pos:].strip():
        raise ValueError("malformed answer")
    return v


def message(**kw) -> bytes:
    return ("{" + ",".join(f'"{k}":{dump(v)}' for k, v in kw.items()) + "}\n").encode()


def frame(obj) -> bytes:
    data = marshal.dumps(obj)
    return len(data).to_bytes(4, "big") + data


def _confine(limits: dict) -> None:
    """Silence stdio (the pipes to the host close with them), empty the environment, set the limits.

    Hard limits, so the code cannot raise them again. Memory, CPU and file size are per process and
    inherited; RLIMIT_NPROC counts the processes of this user namespace alone (this sandbox's tree), so
    `processes` bounds the whole tree, threads included."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.environ.clear()  # empty already, but for what the interpreter and bwrap set (LC_CTYPE, PWD, LD_LIBRARY_PATH)
    here = os.getpid()  # a fresh PID namespace has no /proc here: bwrap's init is 1, this program 2
    for what, n in ((resource.RLIMIT_AS, limits.get("memory_bytes", 512 << 20)),
                    (resource.RLIMIT_CPU, limits.get("cpu_s", 5)),
                    (resource.RLIMIT_FSIZE, limits.get("file_bytes", 1 << 20)),
                    (resource.RLIMIT_NOFILE, limits.get("open_files", 64)),
                    (resource.RLIMIT_CORE, 0),
                    (resource.RLIMIT_MSGQUEUE, 0),  # POSIX message queues: kernel memory no other limit counts
                    (resource.RLIMIT_NPROC, here + limits.get("processes", 1) - 1)):
        resource.setrlimit(what, (n, n))


def _frames(fd):
    """Length-prefixed marshal messages from `fd` until it closes."""
    with os.fdopen(fd, "rb") as f:
        while True:
            head = f.read(4)
            if len(head) < 4:
                return
            yield marshal.loads(f.read(int.from_bytes(head, "big")))


def candidate(rfd: int, wfd: int, job: dict) -> None:
    out = os.fdopen(wfd, "wb", buffering=0)

    def send(msg):
        out.write(message(**msg))

    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        for src in job.get("setup", []):
            exec(compile(src, "<setup>", "exec"), ns)
        exec(compile(job["code"], "solution.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - the code's failure is reported, not raised
        send({"err": _err(e)})
        return
    send({"ready": True})
    for req in _frames(rfd):
        try:
            if "call" in req:
                v = eval(compile(req["call"], "<test>", "eval"), ns)
            else:
                v = ns[req["fn"]](*decode(req["args"]), **decode(req["kwargs"]))
            send({"ok": encode(v)})  # an exception here (not literal, too deep) is reported below
        except BaseException as e:  # noqa: BLE001
            send({"err": _err(e)})


class _Proxy:
    """Stands for one of the candidate's functions inside the checker: arguments out, a literal back."""

    def __init__(self, name, link):
        self.__name__ = self.__qualname__ = name
        self._link = link

    def __call__(self, *args, **kwargs):
        send, recv = self._link
        send({"fn": self.__name__, "args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        msg = recv()
        if msg is None:
            raise RuntimeError("the candidate stopped answering")
        if "ok" in msg:
            return decode(msg["ok"])
        raise RuntimeError(f"candidate raised {unhex(msg.get('err'))[:300]}")

    def __repr__(self):
        return f"<candidate {self.__name__}>"


def checker(rfd: int, wfd: int, resfd: int, gofd: int, job: dict) -> None:
    """Run each opaque test against proxies; report one JSON line per test on `resfd`.

    Starts when the host writes a line on `gofd` (after its own calls to the candidate are done)."""
    res = os.fdopen(resfd, "wb", buffering=0)
    out = os.fdopen(wfd, "wb", buffering=0)
    answers = os.fdopen(rfd, "rb")

    def send(msg):
        out.write(frame(msg))

    def recv():
        line = answers.readline(1 << 21)
        if not line:
            return None
        msg = parse(line)
        if type(msg) is not dict:
            raise ValueError("garbled answer")
        return msg

    link = (send, recv)
    base = {"__name__": "__main__", "__builtins__": __builtins__}
    broken = None
    try:
        for src in job.get("setup", []):
            exec(compile(src, "<setup>", "exec"), base)
        exec(compile(job.get("task_code", ""), "<task>", "exec"), base)  # the prompt's helpers, e.g. `poly`
    except BaseException as e:  # noqa: BLE001 - the task's own code failed: every test fails with why
        broken = e
    with os.fdopen(gofd, "rb", buffering=0) as go:
        if not go.readline():
            return
    for name in job["names"]:
        base[name] = _Proxy(name, link)
    for i, src in enumerate(job["tests"]):
        ns = dict(base)
        if job.get("entry"):
            ns["candidate"] = ns[job["entry"]]
        try:
            if broken is not None:
                raise RuntimeError(f"the task's own code failed: {unhex(_err(broken))}")
            exec(compile(src, f"<test {i}>", "exec"), ns)
            msg = message(i=format(i, "x"), ok=True)
        except BaseException as e:  # noqa: BLE001
            msg = message(i=format(i, "x"), ok=False, err=_err(e))
        res.write(msg)


def main(argv) -> None:
    role = argv[1]
    with open(argv[2], "rb") as f:
        job = marshal.loads(f.read())
    fds = [int(a) for a in argv[3:]]
    _confine(job.get("limits", {}))
    if role == "candidate":
        candidate(*fds, job)
    elif role == "checker":
        checker(*fds, job)
    else:  # "ping": the availability probe
        os.write(fds[0], b"pong\n")


if __name__ == "__main__":
    main(sys.argv)
