"""Judge a candidate's answer on the host in time linear in its size, whatever the candidate sent.

The answer is untrusted tagged data (see inside.py). Decoding it into Python values would hash values the
candidate chose: a set of integers that all hash alike costs quadratic time to build (36k of them took
a minute). So nothing is decoded: the answer is turned into a canonical string, where each set or dict is
its elements' canonical strings sorted (strings hash with a per-process random key, so the candidate
cannot make them collide), and compared with the expected value's. Two values have the same canonical
string exactly when they are equal with the same types all the way down (`3 != 3.0 != True`, `-0.0 == 0.0`).
"""

from __future__ import annotations

from k1.tasks.sandbox.inside import MAX_DEPTH, encode

_BRACKETS = {"l": ("[", "]"), "t": ("(", ")"), "S": ("{", "}"), "F": ("frozenset({", "})"), "d": ("{", "}")}


def _float(h) -> str:
    if type(h) is not str:
        raise ValueError("malformed value")
    return (float.fromhex(h) + 0.0).hex()  # + 0.0: -0.0 == 0.0, as Python's == has it


def _text(h) -> bytes:
    if type(h) is not str:
        raise ValueError("malformed value")
    return bytes.fromhex(h)


def canon(e, depth: int = 0) -> str:
    """An untrusted tagged value → its canonical string; ValueError if it is malformed."""
    if depth > MAX_DEPTH or type(e) is not list or not e or type(e[0]) is not str:
        raise ValueError("malformed value")
    tag, rest = e[0], e[1:]
    try:
        if tag == "N" and not rest:
            return "N"
        if tag == "B" and len(rest) == 1 and type(rest[0]) is bool:
            return "B1" if rest[0] else "B0"
        if tag == "i" and len(rest) == 1 and type(rest[0]) is str and len(rest[0]) <= 4096:
            return "i" + format(int(rest[0], 16), "x")
        if tag == "f" and len(rest) == 1:
            return "f" + _float(rest[0])
        if tag == "c" and len(rest) == 2:
            return f"c{_float(rest[0])};{_float(rest[1])}"
        if tag == "s" and len(rest) == 1:
            return "s" + _text(rest[0]).decode("utf-8", "surrogatepass").encode("utf-8", "surrogatepass").hex()
        if tag == "b" and len(rest) == 1:
            return "b" + _text(rest[0]).hex()
        if tag in ("l", "t", "S", "F") and len(rest) == 1 and type(rest[0]) is list:
            items = [canon(x, depth + 1) for x in rest[0]]
            if tag in ("S", "F"):
                items = sorted(set(items))
            return tag + "[" + ",".join(items) + "]"
        if tag == "d" and len(rest) == 1 and type(rest[0]) is list:
            pairs = []
            for kv in rest[0]:
                if type(kv) is not list or len(kv) != 2:
                    raise ValueError("malformed value")
                pairs.append(canon(kv[0], depth + 1) + ":" + canon(kv[1], depth + 1))
            return "d[" + ",".join(sorted(pairs)) + "]"
    except (TypeError, ValueError, OverflowError) as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("malformed value") else f"malformed value: {msg}") from None
    raise ValueError(f"malformed value (tag {tag!r})")


def same(answer, expected) -> bool:
    """Is the untrusted tagged `answer` the literal `expected` (same types all the way down)?"""
    return canon(answer) == canon(encode(expected))


class _Full(Exception):
    pass


def preview(e, limit: int = 200) -> str:
    """Python-like text of a tagged value, cut at `limit` characters, for feedback only (nothing is built or
    hashed: sets and dicts are shown in the order they came; a big int in hex)."""
    out, size = [], [0]

    def put(s: str) -> None:
        out.append(s)
        size[0] += len(s)
        if size[0] > limit:
            raise _Full

    def walk(e, depth: int) -> None:
        if depth > MAX_DEPTH or type(e) is not list or not e:
            raise ValueError
        tag, rest = e[0], e[1:]
        if tag == "N":
            put("None")
        elif tag == "B":
            put(repr(rest[0] is True))
        elif tag == "i":
            put(str(int(rest[0], 16)) if len(rest[0]) <= 64 else f"0x{rest[0][:limit]}")
        elif tag == "f":
            put(repr(float.fromhex(rest[0])))
        elif tag == "c":
            put(repr(complex(float.fromhex(rest[0]), float.fromhex(rest[1]))))
        elif tag in ("s", "b"):
            raw = bytes.fromhex(rest[0][:4 * limit])
            put(repr(raw.decode("utf-8", "surrogatepass" if len(raw) * 2 == len(rest[0]) else "replace")
                     if tag == "s" else raw))
        elif tag in ("S", "F") and not rest[0]:
            put("set()" if tag == "S" else "frozenset()")
        elif tag in _BRACKETS:
            opener, closer = _BRACKETS[tag]
            put(opener)
            closer = ",)" if tag == "t" and len(rest[0]) == 1 else closer
            for j, x in enumerate(rest[0]):
                put(", " if j else "")
                if tag == "d":
                    walk(x[0], depth + 1)
                    put(": ")
                    walk(x[1], depth + 1)
                else:
                    walk(x, depth + 1)
            put(closer)
        else:
            raise ValueError

    try:
        walk(e, 0)
    except _Full:
        pass
    except (ValueError, TypeError, IndexError, OverflowError):
        return "(malformed)"
    return "".join(out)[:limit]
