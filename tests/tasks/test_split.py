"""Splits by problem: a + b and b + a on one side, one Python template's numbers on one side."""

from k1.tasks.split import disjoint, problem_key, split_by_problem
from k1.tasks.task import Task, arithmetic_tasks, python_tasks


def test_commuted_twins_and_templates_share_a_key():
    t = {x.id: x for x in arithmetic_tasks("d3") + python_tasks()}
    assert problem_key(t["arith-d3-12+34"]) == problem_key(t["arith-d3-34+12"])
    assert problem_key(t["arith-d3-34-12"]) != problem_key(t["arith-d3-34+12"])
    assert problem_key(t["py-add_n-3"]) == problem_key(t["py-add_n-7"]) != problem_key(t["py-times_n-3"])
    assert problem_key(Task("a", "copy", "Repeat: x")) != problem_key(Task("b", "copy", "Repeat: y"))


def test_split_by_problem_keeps_groups_whole():
    tasks = arithmetic_tasks("d3") + python_tasks()
    train, held = split_by_problem(tasks, 300, seed=1)
    assert len(held) >= 300 and len(train) + len(held) == len(tasks)
    assert disjoint(train, held)
    ids = {t.id for t in held}
    for a, b in ((12, 34), (50, 61), (99, 10)):  # a sum and its twin are on the same side
        assert (f"arith-d3-{a}+{b}" in ids) == (f"arith-d3-{b}+{a}" in ids)
    templates_held = {problem_key(t) for t in held if t.kind == "python"}
    assert not templates_held & {problem_key(t) for t in train if t.kind == "python"}
    assert split_by_problem(tasks, 300, seed=1)[1] == held  # fixed by its seed
