"""The literal-value codec that carries a candidate's answers: exact round trips, strict comparison in
linear time, and malformed input refused (runs without the sandbox)."""

import json

import pytest

from k1.tasks.sandbox.checks import as_call, free_names
from k1.tasks.sandbox.inside import NotLiteral, decode, encode, message, parse
from k1.tasks.sandbox.judge import canon, preview, same

VALUES = [None, True, False, 0, -(10 ** 30), 2.5, -0.0, float("inf"), 3 + 4j, "", "h\u00e9llo \\ \" \u2603 \ud800",
          b"\x00\xff", [1, [2, (3,)]], (), {1: "a", "b": {2.0: None}}, {1, 2}, frozenset({(1, "x")})]


@pytest.mark.parametrize("v", VALUES, ids=repr)
def test_literals_round_trip_exactly(v):
    line = message(ok=encode(v))
    assert parse(line.strip()) == json.loads(line)  # the checker's parser agrees with json
    back = decode(parse(line.strip())["ok"])
    assert type(back) is type(v) and same(encode(back), v) and same(parse(line.strip())["ok"], v)
    assert preview(encode(v)) == repr(v)[:200] or isinstance(v, (set, frozenset))  # sets: in the order sent


def test_strict_equality_tells_types_apart_all_the_way_down():
    assert same(encode([1, (2, "x")]), [1, (2, "x")])
    assert same(encode({3, 1, 2}), {2, 3, 1}) and same(encode({"b": 1, "a": {2.0}}), {"a": {2.0}, "b": 1})
    assert same(encode(-0.0), 0.0) and same(encode([1e400]), [float("inf")])  # as == has it
    for a, b in [(1, True), (1, 1.0), ([1], (1,)), ({1: 2}, {True: 2}), ({1}, {1.0}), ([[0]], [[False]]),
                 ({"a": [1]}, {"a": [1.0]}), (frozenset({1}), {1}), ([1, 2], [2, 1]), ({1: 2}, {1: 3}),
                 ("a", b"a"), (None, False), (1 + 0j, 1.0)]:
        assert not same(encode(a), b) and not same(encode(b), a)
    assert not same(encode(float("nan")), 0.0)


def test_only_exact_builtin_types_are_literals():
    class I(int):
        pass

    for v in (I(3), object(), [1, object()], (x for x in ()), {1: I(0)}):
        with pytest.raises(NotLiteral):
            encode(v)


@pytest.mark.parametrize("line", [b"[" * 10_000, b'{"ok":["s","zz"]}', b'{"ok":["i","' + b"f" * 5000 + b'"]}',
                                  b'{"ok":["q"]}', b'{"ok":"x"}', b'{"ok":["l",["N"]]}', b'["s","a\\""]',
                                  b'{"ok":["s" "6869"]}', b'{"ok":["B",1]}', b"\xff"])
def test_malformed_answers_are_refused(line):
    for read in (decode, canon):
        with pytest.raises(ValueError):
            msg = parse(line)
            read(msg["ok"] if isinstance(msg, dict) else msg)


def test_tests_are_split_into_outside_calls_and_opaque_code():
    c = as_call("assert add_n(-3) == 0")
    assert (c.expr, c.expected) == ("add_n(-3)", 0)
    assert as_call('assert "heo" == remove_Occ("hello", "l")').expr == "remove_Occ('hello', 'l')"
    assert as_call("assert f(1) is None").expected is None
    for opaque in ("assert f(1) is 3", "assert not f(0)", "assert f(1) != 2", "assert abs(f(2) - 1.5) < 1e-6",
                   "def check(candidate):\n    assert candidate(1) == 2\ncheck(f)", "assert f(1) == g(1)",
                   "assert set(f(1)) == {1, 2} and True", "x = 1\nassert f(x) == 1"):
        assert as_call(opaque) is None
    assert free_names(["import math\nassert math.isclose(area(2), 12.56)", "def check(candidate):\n"
                       "    assert candidate(1) == helper(2)\ncheck(area)"]) == ["area", "helper"]
