"""Task files in K-1's layout and in HumanEval- and MBPP-like layouts: detected from fields, scored end to end."""

import json

import pytest

from k1.errors import ConfigError
from k1.tasks import load_task_file, sandbox, verify

HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
              "    \"\"\" Check if in given list of numbers, are any two numbers closer to each other than\n"
              "    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    \"\"\"\n",
    "entry_point": "has_close_elements",
    "canonical_solution": "    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
                          "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n",
    "test": "\n\nMETADATA = {'author': 'jt', 'dataset': 'test'}\n\n\ndef check(candidate):\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
            "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n",
}
MBPP = {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character "
        "from the string.", "code": "...", "test_setup_code": "",
        "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                      'assert remove_Occ("PHP","P") == "H"'], "challenge_test_list": []}
MBPP_SANITIZED = {"source_file": "x", "task_id": 2, "prompt": "Write a function to find the shared elements "
                  "from the given two lists.", "code": "...", "test_imports": [],
                  "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"]}
K1 = {"kind": "python", "prompt": "Write `sq(x)`.", "entry": "sq", "tests": ["assert sq(3) == 9"]}

REMOVE_OCC = ("```python\ndef remove_Occ(s, ch):\n    i = s.find(ch)\n    if i >= 0:\n        s = s[:i] + s[i + 1:]\n"
              "    j = s.rfind(ch)\n    if j >= 0:\n        s = s[:j] + s[j + 1:]\n    return s\n```")
needs_sandbox = pytest.mark.skipif(sandbox.sandbox_problem() is not None,
                                   reason=f"no isolation here: {sandbox.sandbox_problem()}")


def write(tmp_path, *rows, name="tasks.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_layouts_are_told_from_their_fields(tmp_path):
    tasks = load_task_file(write(tmp_path, HUMANEVAL, MBPP, MBPP_SANITIZED, K1,
                                 {"kind": "arithmetic", "prompt": "What is 2 + 2?", "answer": 4}))
    he, mb, ms, k1, ar = tasks
    assert [t.kind for t in tasks] == ["python"] * 4 + ["arithmetic"]
    assert he.id == "HumanEval/0" and he.check["entry"] == "has_close_elements"
    assert "def has_close_elements" in he.prompt and he.check["prefix"] == HUMANEVAL["prompt"]
    assert he.check["tests"][0].rstrip().endswith("check(has_close_elements)")
    assert he.check["setup"] == ["from typing import List"]
    assert mb.check["entry"] == "remove_Occ" and mb.check["tests"] == MBPP["test_list"]
    assert "`remove_Occ`" in mb.prompt and "heo" not in mb.prompt  # the name, never an expected value
    assert ms.check["entry"] == "similar_elements"  # `set(...)` is a builtin, not the entry point
    assert k1.check == {"entry": "sq", "tests": ["assert sq(3) == 9"]} and ar.check == {"answer": 4}
    assert all("check" not in t.public() for t in tasks)


@pytest.mark.parametrize("row,match", [
    ({"question": "2+2?", "answer": 4}, "match no layout"),
    ({"prompt": "x", "entry_point": "f"}, "match no layout"),
    ({"kind": "python", "prompt": "x", "tests": []}, "missing field 'entry'"),
    ({"text": "x", "test_list": []}, "test_list is empty"),
    ({"text": "x", "test_list": ["assert 1 == 1"]}, "no function call"),
    ([1, 2], "JSON object"),
])
def test_anything_else_is_a_one_line_error_naming_the_line(tmp_path, row, match):
    p = write(tmp_path, K1, row)
    with pytest.raises(ConfigError, match=match) as e:
        load_task_file(p)
    assert f"{p}:2:" in str(e.value) and "\n" not in str(e.value)


def test_empty_or_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_task_file(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no tasks"):
        load_task_file(write(tmp_path))


@needs_sandbox
def test_humaneval_task_is_scored_by_its_check_in_the_checker(tmp_path):
    (t,) = load_task_file(write(tmp_path, HUMANEVAL))
    right = "```python\n" + HUMANEVAL["prompt"] + HUMANEVAL["canonical_solution"] + "```"
    assert verify(t, right) == 1.0
    # a function alone, without the prompt's imports: the prompt's lines run first, so `List` is defined
    alone = ("def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n")
    assert verify(t, alone) == 1.0
    assert verify(t, "def has_close_elements(numbers, threshold):\n    return True\n") == 0.0


@needs_sandbox
def test_humaneval_test_code_sees_the_prompts_imports(tmp_path):
    row = {"task_id": "T/1", "prompt": "import math\n\n\ndef area(r):\n    \"\"\"Area of a circle.\"\"\"\n",
           "entry_point": "area", "test": "def check(candidate):\n    assert math.isclose(candidate(2.0), 4 * math.pi)\n"}
    (t,) = load_task_file(write(tmp_path, row))
    assert verify(t, "def area(r):\n    return math.pi * r * r\n") == 1.0
    assert verify(t, "def area(r):\n    return 3 * r * r\n") == 0.0


@needs_sandbox
def test_mbpp_tasks_are_scored_outside_and_in_the_checker(tmp_path):
    mb, ms = load_task_file(write(tmp_path, MBPP, MBPP_SANITIZED))
    assert verify(mb, REMOVE_OCC) == 1.0
    assert verify(mb, "def remove_Occ(s, ch):\n    return s[1:-1]\n") == pytest.approx(2 / 3)
    assert verify(ms, "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n") == 1.0
    assert verify(ms, "def similar_elements(a, b):\n    return ()\n") == 0.0
