"""`k1 pool dream --verified-only` on the command line: the CLI supplies the task class's verifier, DREAM trains
only on the teacher's answers it accepts; a class without a verifier is a one-line error. Tiny real models,
saved as Hugging Face folders, in a pool file with a real SQLite store."""

import json
import random
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from k1.errors import K1Error
from k1.pool.learn.verifiers import arithmetic_answer, class_verifier, question

KNOWN = {"What is 7 + 5?": 12, "What is 3 + 4?": 7, "What is 9 - 2?": 7, "What is 6 + 2?": 8}
UNKNOWN = ["What is 1 + 1?", "What is 9 + 9?", "What is 5 - 5?", "What is 3 * 3?"]  # answers the adder never saw


@pytest.fixture(scope="module")
def adder_dir(tmp_path_factory):
    """A tiny Llama fitted to answer four sums through its chat template, saved as a Hugging Face folder."""
    from k1.pool.testing import byte_hf_tokenizer, tiny_llama, train_tiny_llama

    torch.set_num_threads(1)
    model = tiny_llama(seed=3, hidden=64, layers=2)
    rng = random.Random(0)
    lines = [f"<|user|>{q}\n<|assistant|>{a}\n" for q, a in KNOWN.items()]
    train_tiny_llama(model, "".join(rng.choice(lines) for _ in range(400)), steps=200, seq=40, lr=3e-3)
    d = tmp_path_factory.mktemp("adder") / "adder"
    model.save_pretrained(d)
    byte_hf_tokenizer().save_pretrained(d)
    return d


@pytest.fixture
def used_pool(tmp_path, adder_dir, hf_dir):
    """A pool file (the adder as teacher, a tiny student) whose store holds 8 arithmetic experiences."""
    from k1.pool.pool import load_pool
    from k1.pool.route.router import Router

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "s.sqlite"\n\n[[members]]\nname = "adder"\nkind = "hf"\npath = "{adder_dir}"\n'
                 f'roles = ["teacher"]\n\n[[members]]\nname = "student"\nkind = "hf"\npath = "{hf_dir}"\n'
                 'roles = ["student"]\n')
    router = Router(load_pool(f))
    for q in [*KNOWN, *UNKNOWN]:
        router.generate([{"role": "user", "content": q}], model="adder", context="arithmetic", max_tokens=4)
    router.pool.close()
    router.close()
    return f


def test_class_verifiers_judge_what_they_can_check():
    v = class_verifier("arithmetic")
    assert question("user: What is 7 + 5?\nassistant:") == "What is 7 + 5?"
    assert v("user: What is 7 + 5?\nassistant:", "7 + 5 = 12.") == 1.0
    assert v("user: What is 7 + 5?\nassistant:", "13") == 0.0
    assert v("How much is 3 times 4?", "12") == 1.0 and arithmetic_answer("48 minus 13") == 35
    assert v("Tell me a story.", "12") is None  # nothing to check: not trained on under --verified-only
    facts = class_verifier("facts")
    assert facts("user: What is the capital of France?\nassistant:", "Paris.") == 1.0
    assert facts("user: Who are you?\nassistant:", "Paris.") is None
    assert class_verifier("prose")("Once upon a", " time there was") == 1.0
    copy = class_verifier("copy")
    assert copy("user: Repeat this exactly: ab12x\nassistant:", '"ab12x".') == 1.0
    assert copy("Repeat this exactly: ab12x", "Sure! ab12x") == 0.0 and copy("Name a colour.", "ab12x") is None
    with pytest.raises(K1Error, match="no verifier for task class 'chat'"):
        class_verifier("chat")


def test_cli_dream_verified_only_trains_on_verified_answers(tmp_path, used_pool):
    from k1.cli import app

    common = ["pool", "dream", "--pool", str(used_pool), "--task-class", "arithmetic", "--k", "8", "--epochs", "1",
              "--max-tokens", "4", "--json"]
    r = CliRunner().invoke(app, common + ["--verified-only"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["verified_only"] and rep["teacher"] == "adder" and rep["student"] == "student"
    assert f"DREAM trained on {rep['train']} example(s), far too few" in " ".join(r.stderr.split())
    assert rep["experiences"] == 8 and rep["held_out"] == 2
    # the adder answers the four sums it was fitted to and none of the others: only those are trained on
    assert 2 <= rep["train"] <= 4
    assert rep["after"]["verifier_success"] is not None  # the class's verifier also judged the held-out answers
    r = CliRunner().invoke(app, common)
    rep_all = json.loads(r.stdout.strip().splitlines()[-1])
    assert not rep_all["verified_only"] and rep_all["train"] == 6 > rep["train"]
    r = CliRunner().invoke(app, common + ["--ce-weight", "0.5", "--val", "0.3", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    rep_knobs = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep_knobs["validation"] >= 1 and rep_knobs["batch_size"] == 2 and rep_knobs["train"] < rep_all["train"]


def test_cli_dream_verified_only_errors_are_one_line(used_pool):
    for extra, msg in ((["--task-class", "chat"], "no verifier for task class 'chat'"),
                       ([], "--verified-only needs --task-class")):
        p = subprocess.run([sys.executable, "-m", "k1.cli", "pool", "dream", "--pool", str(used_pool),
                            "--verified-only", *extra], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr


def test_cli_dream_trains_a_lora_student_from_the_pools_own_use(used_pool):
    from k1.cli import app

    r = CliRunner().invoke(app, ["pool", "dream", "--pool", str(used_pool), "--task-class", "arithmetic",
                                 "--student-kind", "lora", "--epochs", "1", "--max-tokens", "4", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["method"] == "student:lora" and rep["student"] == "student" and rep["teacher"] == "adder"
    assert rep["trust_prompts"] >= 1 and rep["replay_prompts"] >= 1 and rep["train_prompts"] == 8 - 2
    assert 1 <= rep["train"] == rep["from_store"] <= 4  # only the adder's accepted answers on the training side
    assert rep["weights"] and rep["after"]["verifier_success"] is not None
    r = CliRunner().invoke(app, ["pool", "dream", "--pool", str(used_pool), "--task-class", "arithmetic",
                                 "--student-kind", "lora", "--epochs", "1", "--max-tokens", "4"])
    assert r.exit_code == 0, r.output
    assert "trust from 1" in " ".join(r.stdout.split()) and "published" in r.stdout


def test_cli_dream_student_errors_are_one_line(used_pool):
    from k1.cli import app
    from k1.errors import ConfigError

    p = subprocess.run([sys.executable, "-m", "k1.cli", "pool", "dream", "--pool", str(used_pool), "--student-kind",
                        "k1"], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 2 and "--student-kind needs --task-class" in p.stderr and "Traceback" not in p.stderr
    r = CliRunner().invoke(app, ["pool", "dream", "--pool", str(used_pool), "--student-kind", "gpt", "--task-class",
                                 "arithmetic"])
    assert isinstance(r.exception, ConfigError) and "choose k1 or lora" in str(r.exception)
