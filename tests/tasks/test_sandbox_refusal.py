"""Where the isolation is missing the loop refuses Python tasks with how to get it (runs everywhere: it
hides `bwrap` from PATH)."""

import pytest

from k1.tasks import sandbox
from k1.tasks.task import Task
from k1.tasks.verifiers import verify_python

ADD3 = Task("t-add3", "python", "add_n", {"entry": "add_n", "tests": ["assert add_n(0) == 3", "assert add_n(5) == 8"]})


def test_without_isolation_python_tasks_are_refused_with_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on PATH
    sandbox.sandbox_problem.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable) as e:
            verify_python(ADD3, "open('ran.txt', 'w').write('x')\ndef add_n(x):\n    return x + 3\n")
    finally:
        monkeypatch.undo()
        sandbox.sandbox_problem.cache_clear()
    msg = str(e.value)
    assert "\n" not in msg and "bubblewrap" in msg and "as root" not in msg
    assert not (tmp_path / "ran.txt").exists()


def test_the_loop_refuses_python_tasks_before_any_model_runs(monkeypatch, tmp_path):
    from k1.selflearn import LoopConfig, run_loop

    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox.sandbox_problem.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
            run_loop(LoopConfig(target="k1:/nonexistent", tasks="python"), tmp_path / "out", quiet=True)
    finally:
        monkeypatch.undo()
        sandbox.sandbox_problem.cache_clear()


def test_loop_eval_refuses_python_tasks_before_loading_the_model(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from k1.selflearn.cli import app

    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox.sandbox_problem.cache_clear()
    try:
        r = CliRunner().invoke(app, ["eval", "--target", "k1:/nonexistent", "--tasks", "python"])
    finally:
        monkeypatch.undo()
        sandbox.sandbox_problem.cache_clear()
    assert isinstance(r.exception, sandbox.SandboxUnavailable)  # not a missing-run error: it never got that far
