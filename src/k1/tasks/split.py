"""Splits by problem, not by prompt: what one side of a split has seen, the other side never asks again.

Two prompts are the same problem when a model that learned one has learned the other for free:
- arithmetic: the same operation on the same operands, in either order where it commutes ("3 + 4", "4 + 3");
- Python: the same template, whatever its number ("returns x plus 3" and "returns x plus 7" are one problem;
  so one template's numbers are never on both sides of a split);
- anything else: the same prompt text.
`split_by_problem` keeps every group whole, so calibration and bench, or training and held-out sets, are disjoint
by problem and not merely by prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable

from k1.errors import ConfigError
from k1.tasks.task import Task


def problem_key(task: Task) -> Hashable:
    """The group a task belongs to (see the module docstring)."""
    if task.kind == "arithmetic":
        from k1.tasks.verifiers import problem_of

        p = tuple(task.check["problem"]) if "problem" in task.check else problem_of(task.prompt)
        if p is not None:
            a, op, b = p
            return ("arithmetic", op, *(sorted((a, b)) if op in "+*" else (a, b)))
    if task.kind == "python" and task.id.startswith("py-"):
        return ("python", task.id.split("-")[1])  # py-<template>-<n>: the template
    return (task.kind, task.prompt)


def groups(tasks: Iterable, key: Callable = problem_key) -> dict[Hashable, list]:
    out: dict[Hashable, list] = {}
    for t in tasks:
        out.setdefault(key(t), []).append(t)
    return out


def split_by_problem(tasks: list, n_held: int, seed: int, key: Callable = problem_key) -> tuple[list, list]:
    """(train, held-out): whole groups, shuffled with `seed`, go to the held-out side until it has ≥ `n_held` tasks."""
    g = list(groups(tasks, key).values())
    if sum(map(len, g)) < n_held:
        raise ConfigError(f"asked for {n_held} held-out tasks but only {len(tasks)} exist")
    random.Random(seed).shuffle(g)
    held, train = [], []
    for group in g:
        (held if len(held) < n_held else train).extend(group)
    return train, held


def disjoint(a: Iterable, b: Iterable, key: Callable = problem_key) -> bool:
    """No problem is on both sides."""
    return not {key(t) for t in a} & {key(t) for t in b}
