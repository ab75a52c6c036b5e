"""The loop end to end on a tiny K-1 target, and its parts: split, improvement, provenance, LoRA, CLI."""

import json
import re

import pytest
import torch

from k1.selflearn import LoopConfig, Task, arithmetic_tasks, load_task_file, rejection_sampling, run_loop, split_tasks
from k1.selflearn.selfinstruct import self_instruct
from k1.errors import ConfigError
from k1.pool.members import K1Member
from k1.tasks.verifiers import solved


def test_split_is_disjoint_and_seeded():
    tasks = arithmetic_tasks("d2")
    a, b = split_tasks(tasks, 40, 40, seed=0)
    assert not {t.prompt for t in a} & {t.prompt for t in b}
    assert split_tasks(tasks, 40, 40, seed=0) == (a, b) and split_tasks(tasks, 40, 40, seed=1) != (a, b)
    with pytest.raises(ConfigError, match="distinct"):
        split_tasks(arithmetic_tasks("d1"), 20, 20, seed=0)


def test_task_file(tmp_path):
    f = tmp_path / "tasks.jsonl"
    f.write_text('{"kind": "arithmetic", "prompt": "What is 6 * 7?", "answer": 42}\n'
                 '{"kind": "python", "prompt": "Write inc(x).", "entry": "inc", "tests": ["assert inc(1) == 2"]}\n')
    ts = load_task_file(f)
    assert [t.kind for t in ts] == ["arithmetic", "python"] and ts[0].check == {"answer": 42}
    f.write_text('{"kind": "poetry", "prompt": "x"}\n')
    with pytest.raises(ConfigError, match="tasks.jsonl:1"):
        load_task_file(f)


def test_improved_response_is_model_text_that_passed_never_the_reference(format_target):
    m = K1Member.from_run(format_target)
    easy = Task("e", "arithmetic", "What is 0 + 0?", {"answer": 0})
    impossible = Task("h", "arithmetic", "What is 4 + 4?", {"answer": 123})  # no sample can state 123
    a = rejection_sampling(m, easy, n=8, seed=0)
    b = rejection_sampling(m, impossible, n=8, seed=0)
    assert a.improved is not None and a.improved.text in [c.text for c in [a.response, *a.candidates]]
    assert b.improved is None and b.record()["improved_response"] is None
    rec = json.dumps(b.record())
    # the reference is not in the provenance either (as a number of its own: a latency's digits may hold "123")
    assert not re.search(r"(?<![\d.])123(?![\d.])", rec) and "check" not in rec


def test_self_instruct_keeps_only_parseable_new_prompts_with_computed_answers(format_target):
    m = K1Member.from_run(format_target)
    seeds = arithmetic_tasks("d1")[:10]
    held = {t.prompt for t in arithmetic_tasks("d1")[10:15]}
    kept, records = self_instruct(m, seeds, 5, exclude=held, seed=0)
    assert len(records) >= len(kept) and all(r["reason"] for r in records)
    for t in kept:
        a, op, b = t.prompt[len("What is "):-1].split()
        assert t.check["answer"] == eval(f"{a}{op}{b}") and t.prompt not in held and t.source == "self-instruct"


def test_loop_runs_end_to_end_on_a_tiny_k1_target(format_target, tmp_path):
    cfg = LoopConfig(target=f"k1:{format_target}", tasks="arithmetic:d1", n_train=10, n_heldout=10, samples=6,
                     train_steps=20, seeds=[0, 1, 2], self_instruct=2)
    r = run_loop(cfg, tmp_path / "loop", quiet=True)
    assert [s["seed"] for s in r["seeds"]] == [0, 1, 2]
    for s in r["seeds"]:
        assert s["heldout_in_train"] == 0 and s["before"]["n"] == s["after"]["n"] == 10
        assert s["train"]["trained"] == (s["improved"] > 0)
        assert s["delta"] == pytest.approx(s["after"]["rate"] - s["before"]["rate"])
    assert set(r["delta"]) >= {"mean", "std", "values"} and r["verdict"]
    rows = [json.loads(line) for line in (tmp_path / "loop" / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) >= 30
    assert {"task", "response", "score", "improved_response", "models", "time", "config", "seed"} <= set(rows[0])
    for row in rows:  # an improved response is a model's text that scored 1
        assert row["improved_response"] is None or (row["improved_score"] == 1.0 and row["improved_response"] in
                                                    [row["response"], *[c["text"] for c in row["candidates"]]])
    assert any(s["train"]["trained"] for s in r["seeds"])
    assert (tmp_path / "loop" / "seed0" / "target" / "config.toml").exists()
    assert "verifiers only" in (tmp_path / "loop" / "report.md").read_text()


def test_lora_trains_a_hugging_face_target(tmp_path):
    from k1.pool.learn.train_hf import finetune_lora
    from k1.pool.testing import tiny_hf_member

    m = tiny_hf_member()
    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    tuned, info = finetune_lora(m, [(prompt, "4")] * 4, tmp_path, epochs=5, lr=5e-3, seed=0)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert info["loss_last"] < info["loss_first"]
    changed = [n for (n, p), (_, q) in zip(m.model.named_parameters(), tuned.model.named_parameters())
               if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # only the LoRA-targeted matrices moved (merged)
    # the tuned model gives the trained answer more probability than the base model did
    assert tuned.score(prompt, "4").bits_per_byte < m.score(prompt, "4").bits_per_byte


def test_cli_loop_run_and_errors(format_target, tmp_path):
    from k1.testing import run_k1

    r = run_k1("loop", "run", "--target", f"k1:{format_target}", "--tasks", "arithmetic:d1", "--seeds", "5",
               "--out", tmp_path / "cli", "--quiet", "--config", _small_config(tmp_path))
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(report["seeds"]) == 1 and (tmp_path / "cli" / "report.md").exists()
    r = run_k1("loop", "run", "--target", "nonsense", "--out", tmp_path / "x", check=False)
    assert r.returncode == 2 and "k1:RUN_DIR" in r.stderr and "Traceback" not in r.stderr


def test_cli_loop_eval_prints_one_row_per_family_and_shows_progress(format_target):
    from k1.selflearn.evaluate import evaluate
    from k1.selflearn.members import load
    from k1.testing import run_k1

    r = run_k1("loop", "eval", "--target", f"k1:{format_target}", "--tasks", "arithmetic:d1,arithmetic:d2", "--n", "3")
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [(row["tasks"], row["n"]) for row in rows] == [("arithmetic:d1", 3), ("arithmetic:d2", 3)]
    assert "loading k1:" in r.stderr  # the model load is said before the wait, not after
    ticks = []
    evaluate(load(f"k1:{format_target}"), arithmetic_tasks("d1")[:4], on_task=lambda: ticks.append(1))
    assert len(ticks) == 4  # the progress bar advances once per answered task


def test_loop_defaults_are_the_settings_the_published_figures_used():
    cfg = LoopConfig(target="smollm2")
    assert (cfg.n_train, cfg.n_heldout, cfg.samples, cfg.seeds) == (30, 30, 4, [0, 1, 2])


def _small_config(tmp_path):
    p = tmp_path / "loop.toml"
    p.write_text('target = "unused"\nn_train = 6\nn_heldout = 6\nsamples = 3\ntrain_steps = 10\n')
    return p


def test_teacher_rewrite_and_self_refine_keep_only_verified_model_text(format_target):
    from k1.selflearn import self_refine, teacher_rewrite

    m = K1Member.from_run(format_target)
    task = Task("e", "arithmetic", "What is 1 + 1?", {"answer": 2})
    for imp in (teacher_rewrite(m, task, teacher=m, n=6, seed=1), self_refine(m, task, rounds=3, seed=1)):
        texts = [imp.response.text, *[c.text for c in imp.candidates]]
        passing = [c for c in [imp.response, *imp.candidates] if solved(c.score)]
        # improved exactly when some model-written answer passed, and then it is one of them
        assert (imp.improved is None) == (not passing)
        assert imp.improved is None or (imp.improved.score == 1.0 and imp.improved.text in texts)
        assert imp.record()["method"] in ("teacher", "refine")


def test_a_judge_only_orders_verified_candidates(format_target):
    from k1.selflearn.improve import Candidate, _best

    m = K1Member.from_run(format_target)
    task = Task("e", "arithmetic", "What is 1 + 1?", {"answer": 2})
    cands = [Candidate("2", 1.0, "m", 0, 0), Candidate("1 + 1 = 2", 1.0, "m", 0, 0), Candidate("3", 0.0, "m", 0, 0)]
    best = _best(cands, judge=m, task=task)
    assert best.text in ("2", "1 + 1 = 2")  # the judge picks among the passing ones...
    assert _best([Candidate("3", 0.0, "m", 0, 0)], judge=m, task=task) is None  # ...and cannot make a failure pass
    imp = rejection_sampling(m, task, n=4, seed=0, judge=m)
    passing = [c for c in [imp.response, *imp.candidates] if solved(c.score)]
    assert (imp.improved is None) == (not passing) and (imp.improved is None or imp.improved in passing)
