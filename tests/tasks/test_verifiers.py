"""Verifiers score only what is checkable: the stated number, or code that passes tests in the sandbox."""

import pytest

from k1.tasks import Limits, SandboxUnavailable, Task, arithmetic_tasks, python_tasks, run_tests, verify
from k1.tasks import sandbox
from k1.tasks.verifiers import stated_answer

needs_sandbox = pytest.mark.skipif(sandbox.sandbox_problem() is not None,
                                   reason=f"no isolation here: {sandbox.sandbox_problem()}")


@pytest.mark.parametrize("text,value", [("12", 12), ("7 + 5 = 12\n\nThis is", 12), ("The answer is 12.", 12),
                                        ("-4", -4), ("[l)eY\ufffd0_", None), ("7xt", None), ("12 apples", None),
                                        ("3-1", None), ("To solve this, we", None), ("", None)])
def test_stated_answer_is_the_number_that_ends_the_first_line(text, value):
    assert stated_answer(text) == value


def test_arithmetic_verifier_cannot_be_satisfied_by_a_template():
    t = Task("t", "arithmetic", "What is 3 + 4?", {"answer": 7})
    assert verify(t, "7") == verify(t, "3 + 4 = 7") == 1.0
    # keyword-stuffed or templated text without the right number scores nothing
    for text in ("Great question! The answer is correct and verified.", "answer answer 6", "7 + 0 = 8", "0.7"):
        assert verify(t, text) == 0.0


@needs_sandbox
def test_python_verifier_runs_the_tests_in_the_sandbox():
    t = next(t for t in python_tasks() if t.id == "py-add_n-3")
    assert "add_n(x)" in t.prompt and "tests" in t.check
    good = "Here you go:\n```python\ndef add_n(x):\n    return x + 3\n```\nDone."
    assert verify(t, good) == 1.0
    assert verify(t, "def add_n(x):\n    return x + 2") == 0.0
    assert 0 < verify(t, "def add_n(x):\n    return 3 if x == 0 else x + 3 if x > 0 else -1") < 1.0


@needs_sandbox
def test_sandbox_has_no_network_and_enforces_limits():
    r = run_tests("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)", ["assert True"])
    assert r["passed"] == 0 and "unreachable" in r["error"].lower()
    r = run_tests("while True:\n    pass", ["assert True"], Limits(timeout_s=1))
    assert r["timeout"] and r["passed"] == 0
    r = run_tests("x = bytearray(2 ** 31)", ["assert True"])
    assert r["passed"] == 0 and "MemoryError" in r["error"]
    r = run_tests("import os\nos.fork()", ["assert 1 + 1 == 2"])  # processes=1: the code cannot fork
    assert r["passed"] == 0 and "BlockingIOError" in r["error"], r


def test_without_bwrap_the_verifier_refuses_instead_of_running_unsandboxed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `bwrap` on PATH
    sandbox.sandbox_problem.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="refusing"):
            run_tests("open('ran.txt', 'w').write('x')", ["assert True"])
    finally:
        monkeypatch.undo()
        sandbox.sandbox_problem.cache_clear()
    assert not (tmp_path / "ran.txt").exists()


def test_task_families_have_distinct_prompts_and_hidden_checks():
    for tasks in (arithmetic_tasks("d1"), arithmetic_tasks("d3"), python_tasks()):
        assert len({t.prompt for t in tasks}) == len(tasks)
        assert all("check" not in t.public() for t in tasks)
    assert all(0 <= t.check["answer"] <= 8 for t in arithmetic_tasks("d1"))


@pytest.mark.parametrize("prompt,answer,text,ok", [
    ("What is 1 + 0?", 1, "1", True),                      # the bare number is fine
    ("What is 1 + 0?", 1, "1 + 1 = 1", False),             # a wrong equation with the right number is not
    ("What is 1 + 0?", 1, "1 + 0 = 1", True),
    ("What is 7 + 5?", 12, "To add them: 7 + 5 = 12.", True),
    ("What is 7 + 5?", 12, "5 + 7 = 12", True),            # a commuted sum states the same problem
    ("What is 9 - 4?", 5, "4 - 9 = 5", False),             # a commuted difference does not
    ("What is 9 - 4?", 5, "9 - 4 = 5", True),
    ("What is 3 + 9?", 12, "2 + 10 = 12", False),          # a true equation about another problem
    ("What is 3 + 9?", 12, "3 + 9 = 12 = 12", True),       # chains must hold throughout
    ("What is 3 + 9?", 12, "3 + 9 = 11 = 12", False),
    ("What is 23 * 4?", 92, "23 x 4 = 92", True),
    ("What is 23 * 4?", 92, "23 * 4 = 82 so 92", False),
    ("What is 7 + 7?", 14, "7 + 7 = 11", False),
    ("What is 7 + 7?", 14, "The answer is 14.\n7 + 7 = 13", True),  # only the first line is read
])
def test_strict_arithmetic_verifier_checks_every_stated_equation(prompt, answer, text, ok):
    assert verify(Task("t", "arithmetic", prompt, {"answer": answer}), text) == float(ok)


def test_strict_verifier_reads_the_problem_from_the_check_before_the_prompt():
    t = Task("t", "arithmetic", "Add the two numbers.", {"answer": 3, "problem": [1, "+", 2]})
    assert verify(t, "2 + 1 = 3") == 1.0 and verify(t, "1 + 1 = 3") == 0.0 and verify(t, "0 + 3 = 3") == 0.0
