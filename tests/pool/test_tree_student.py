"""The K-1 tree student's training: whole examples, the loss on the answer only, the served prompt byte for byte,
and still the engine's sparse update (only a root → culprit path of agents moves in a step)."""

import pytest
import torch

from k1.data import load_tokenizer
from k1.pool.learn.students.k1tree import (
    IGNORE,
    ExampleSampler,
    example_rows,
    train_k1_student,
    training_text,
)


def _copy_examples(n: int = 12):
    return [([{"role": "user", "content": f"Repeat this exactly: s{i}x{i * 7}"}], f"s{i}x{i * 7}") for i in range(n)]


def test_rows_are_the_served_prompt_then_the_answer_and_only_the_answer_is_a_target():
    tok = load_tokenizer("byte")
    ex = _copy_examples(5)
    rows = example_rows(ex, tok, context=128)
    ids, n = rows[2]
    assert bytes(ids[:n]).decode() == "user: Repeat this exactly: s2x14\nassistant:"
    assert bytes(ids[n:]).decode() == " s2x14\n"
    x, y = ExampleSampler(rows, batch_size=5, seed=0).next()
    for i in range(5):  # whichever example row i is: inputs from its first token, targets on its answer only
        row = next(r for r in rows if r[0][:len(r[0]) - 1] == x[i, :len(r[0]) - 1].tolist())
        ids, n = row
        assert (y[i, :n - 1] == IGNORE).all() and (y[i, len(ids) - 1:] == IGNORE).all()
        assert y[i, n - 1:len(ids) - 1].tolist() == ids[n:]
    assert training_text(ex[:1]) == "user: Repeat this exactly: s0x0\nassistant: s0x0\n\n"


def test_answer_only_loss_has_no_gradient_on_the_prompt():
    from k1.engine.config import load_config
    from k1.engine.run.build import build_model

    cfg = load_config(preset="tiny", overrides=["model.context=64"])
    model = build_model(cfg, 256)
    x, y = ExampleSampler(example_rows(_copy_examples(4), load_tokenizer("byte"), 64), 4, seed=1).next()
    logits, loss = model(x, y)
    (g,) = torch.autograd.grad(loss, logits)
    target = y != IGNORE
    assert g[~target].abs().max() == 0 and g[target].abs().sum(-1).min() > 0
    # the same loss as a cross-entropy over the answer positions alone
    ref = torch.nn.functional.cross_entropy(logits[target].float(), y[target])
    assert torch.allclose(loss, ref)


def test_sampler_resumes_and_covers_every_example_each_pass():
    rows = example_rows(_copy_examples(7), load_tokenizer("byte"), 128)
    a = ExampleSampler(rows, batch_size=7, seed=3)
    seen = {tuple(r[: (r != 0).sum()].tolist()) for r in a.next()[0]}
    assert len(seen) == 7  # one pass: each example once
    state = a.state_dict()
    x1, y1 = a.next()
    b = ExampleSampler(rows, batch_size=7, seed=99)
    b.load_state_dict(state)
    x2, y2 = b.next()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_a_long_prompt_keeps_its_last_tokens_and_an_answer_that_cannot_fit_is_a_clear_error():
    import pytest

    from k1.errors import DataError

    tok = load_tokenizer("byte")
    ex = _copy_examples(2) + [([{"role": "user", "content": "Repeat this exactly: " + "z" * 200}], "z" * 200)]
    rows = example_rows(ex, tok, 24)
    assert len(rows) == 2 and all(len(ids) == 25 for ids, _ in rows)  # the prompt's last tokens, the whole answer
    ids, n = rows[1]
    assert bytes(ids[:n]).decode() == "ly: s1x7\nassistant:" and bytes(ids[n:]).decode() == " s1x7\n"
    with pytest.raises(DataError, match="fits the student's context"):
        example_rows(ex[-1:], tok, 64)


def test_the_served_member_reads_what_the_student_trained_on_and_one_step_moves_one_path(tmp_path):
    """A served K1Member's prompt ids are the training row's prompt ids; and a step of the student's training
    changes the rows of at most one agent per level (the attribution policy's root → culprit path)."""
    from k1.pool.members.k1 import K1Member

    ex = _copy_examples(12)
    first = train_k1_student(ex, tmp_path / "a", preset="tiny", steps=2, batch_size=4)
    member = K1Member.from_run(first)
    rows = example_rows(ex, member.tokenizer, member.context)
    for (prompt, _), (ids, n) in zip(ex, rows):
        assert member.prompt_ids(prompt) == ids[:n]
    before = {k: v.clone() for k, v in member.model.state_dict().items()}
    second = K1Member.from_run(train_k1_student(ex, tmp_path / "b", base_run=first, steps=1, batch_size=4))
    after = second.model.state_dict()
    moved_per_level = []
    for lv, level in enumerate(member.model.levels):
        moved = torch.zeros(level.n_agents, dtype=torch.bool)
        for name, p in level.named_parameters():
            key = f"levels.{lv}.{name}"
            if p.dim() and p.shape[0] == level.n_agents:
                moved |= (after[key] != before[key]).reshape(level.n_agents, -1).any(1)
        moved_per_level.append(int(moved.sum()))
    assert all(m <= 1 for m in moved_per_level) and sum(moved_per_level) >= 1, moved_per_level
    assert sum(lv.n_agents for lv in member.model.levels) > len(moved_per_level)  # sparse: most agents stay


@pytest.fixture(scope="module")
def fitted_copy_student(tmp_path_factory):
    """A tiny tree trained for 200 steps on 30 verified copy answers: (its run directory, the examples)."""
    from k1.pool.learn.students.families import copy_tasks

    ex = [([{"role": "user", "content": t.prompt}], t.check["answer"]) for t in copy_tasks(30, seed=1)]
    run = train_k1_student(ex, tmp_path_factory.mktemp("copy") / "s", preset="tiny", steps=200,
                           overrides=["optim.lr=1e-2"])
    return run, ex


def test_a_tiny_tree_reproduces_its_verified_answers_in_seconds(fitted_copy_student):
    """The answer-only loss on whole examples makes a tiny tree fit its training answers exactly (the random
    windows over the concatenated text of before left it at the answers' first characters). Fitting is not
    learning the class — held-out success is measured by bench/students.py — but without it nothing is learnt."""
    from k1.pool.members.k1 import K1Member

    run, ex = fitted_copy_student
    m = K1Member.from_run(run)
    fit = sum(m.generate(p, max_tokens=12).text.split("\n")[0].strip() == a for p, a in ex)
    assert fit >= 27, fit


def test_a_served_tree_student_stops_at_the_line_end_it_was_trained_to_write(fitted_copy_student):
    """Its pool-file entry carries stop = ["\\n"]: the answer ends at the trained line end (finish "stop") instead
    of filler up to max_tokens, for fewer tokens charged; the same run without it writes max_tokens tokens."""
    from k1.pool.learn.students.k1tree import k1_member_spec
    from k1.pool.members.k1 import K1Member
    from k1.pool.pool import load_member

    run, ex = fitted_copy_student
    served, plain = load_member(k1_member_spec(run, "student")), K1Member.from_run(run)
    assert served.stop == ["\n"] and plain.stop == []
    p, a = ex[0]
    g, h = served.generate(p, max_tokens=40), plain.generate(p, max_tokens=40)
    assert g.text.strip() == a and "\n" not in g.text and g.finish_reason == "stop"
    assert h.completion_tokens == 40 and g.completion_tokens < h.completion_tokens and g.cost.atp < h.cost.atp


def test_k1_pool_add_writes_a_trees_stop_into_the_pool_file(fitted_copy_student, tmp_path):
    """`k1 pool add k1:RUN --stop '\\n'` (a backslash-n on the command line) → stop = ["\\n"] in the pool file."""
    from k1.pool.config import read_pool_config
    from k1.pool.spec import append_member, parse_spec

    run, _ = fitted_copy_student
    f = tmp_path / "pool.toml"
    f.write_text('[pool]\nstore = "s.sqlite"\n')
    append_member(f, parse_spec(f"k1:{run}", name="copy", roles=["student"], stop=["\\n"]), [])
    (m,) = read_pool_config(f).members
    assert m.kind == "k1" and m.stop == ["\n"] and m.roles == ["student"]
