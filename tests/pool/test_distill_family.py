"""Sequence-level distillation from a teacher of another family (Gemma-3-270M → SmolLM2 in real use, opt-in):
`k1 pool dream --student-kind lora --teacher T --student S --controls`, where T and S share neither
architecture nor tokenizer. Tiny real models built from configs (no download): a Gemma 3 teacher with its own
byte-pair tokenizer, fitted to answer "42", and a Llama student with the byte tokenizer and a chat template. The
student learns the text of the teacher's verified answers only, is measured on held-out prompts beside the two
controls, and every call DREAM makes is charged to the ledger as its own."""

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from k1.pool.learn.verifiers import arithmetic_answer
from k1.pool.route.taskclass import question

SUMS = [(a, 42 - a) for a in range(10, 33)] + [(a, 50 - a) for a in range(10, 20)]  # 23 make 42, 10 make 50


def gemma_tokenizer():
    """A byte-level BPE tokenizer unlike the student's: bytes in reverse order, a merge ("42"), its own specials,
    and no chat template (chat reaches it as `user:` / `assistant:` lines, as with Gemma-3-270M)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: 255 - i for i, ch in enumerate(alphabet)}
    vocab.update({"42": 256, "<pad>": 257, "<bos>": 258, "<eos>": 259})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("4", "2")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    """A tiny Gemma 3 (Gemma3ForCausalLM from a config) fitted to answer "42" to any sum, saved as a folder."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.set_num_threads(1)
    tok = gemma_tokenizer()
    cfg = Gemma3TextConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                           sliding_window=512, pad_token_id=257, bos_token_id=258, eos_token_id=259)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(cfg)
    rng = random.Random(0)
    text = "".join(f"user: What is {rng.randint(10, 99)} + {rng.randint(10, 99)}?\nassistant: 42\n" for _ in range(300))
    ids = torch.tensor(tok(text)["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):
        x = torch.stack([ids[s:s + 48] for s in (rng.randrange(len(ids) - 49) for _ in range(8))])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp_path_factory.mktemp("gemma") / "tiny-gemma"
    model.eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def used_pool(tmp_path, gemma_dir, hf_dir):
    """A pool file (the tiny Gemma teacher, a tiny Llama student) whose store holds the teacher's answers to
    33 served sums, as the pool served them."""
    from k1.pool.pool import load_pool
    from k1.pool.route.router import Router

    f = tmp_path / "pool.toml"
    f.write_text(f'[pool]\nstore = "s.sqlite"\n\n[[members]]\nname = "gemma-tiny"\nkind = "hf"\npath = "{gemma_dir}"\n'
                 f'roles = ["teacher"]\n\n[[members]]\nname = "smol-tiny"\nkind = "hf"\npath = "{hf_dir}"\n'
                 'roles = ["student"]\n')
    router = Router(load_pool(f))
    for a, b in SUMS:
        router.generate([{"role": "user", "content": f"What is {a} + {b}?"}], model="gemma-tiny",
                        context="arithmetic", max_tokens=4)
    router.pool.close()
    router.close()
    return f


def test_the_two_tiny_members_are_of_different_families(gemma_dir, hf_dir):
    from k1.pool.learn.dream import same_tokenizer
    from k1.pool.members.hf import HFMember

    t, s = HFMember.from_pretrained(gemma_dir, name="t"), HFMember.from_pretrained(hf_dir, name="s")
    assert t.model.config.model_type.startswith("gemma3") and s.model.config.model_type == "llama"
    assert not same_tokenizer(t, s) and t.encode("42") != s.encode("42")
    assert t.generate([{"role": "user", "content": "What is 13 + 29?"}], max_tokens=4).text.split("\n")[0] == " 42"


def test_cli_dream_distils_a_teacher_of_another_family_into_a_lora_student(tmp_path, used_pool, hf_dir):
    from safetensors.torch import load_file

    from k1.cli import app
    from k1.pool.members.hf import HFMember
    from k1.pool.store import PoolStore

    store = PoolStore(tmp_path / "s.sqlite")
    n_before = len(store.ledger(100_000))
    store.close()
    r = CliRunner().invoke(app, ["pool", "dream", "--pool", str(used_pool), "--task-class", "arithmetic",
                                 "--student-kind", "lora", "--teacher", "gemma-tiny", "--student", "smol-tiny",
                                 "--practice", "12", "--shots", "2", "--holdout", "0.3", "--max-tokens", "4",
                                 "--epochs", "1", "--lr", "1e-2", "--controls", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["teacher"] == "gemma-tiny" and rep["student"] == "smol-tiny" and rep["method"] == "student:lora"
    assert rep["distillation"] == "sequence-level" and rep["same_tokenizer"] is False
    # trained only on verified answers: every prompt trained on makes 42 (the teacher's only answer), none of the
    # 10 served sums that make 50, and the count is the store's accepted answers plus the kept practice
    assert rep["trained_on"] and all(arithmetic_answer(q) == 42 for q in rep["trained_on"])
    assert rep["train"] == rep["from_store"] + rep["practice"]["kept"] and rep["practice"]["asked"] == 12
    assert rep["from_store"] < rep["train_prompts"]  # the store's wrong answers (… + … = 50) were left out
    held = {question(p) for p in _held_prompts(tmp_path / "s.sqlite", rep)}
    assert not held & set(rep["trained_on"])
    # the student's weights changed (the published safetensors against the untouched folder)
    base = HFMember.from_pretrained(hf_dir, name="base").model.state_dict()
    tuned = load_file(rep["weights"])
    assert any(not torch.equal(base[k], v) for k, v in tuned.items() if k in base)
    # measured on the held-out trust prompts beside both controls, on the same prompts
    n = rep["trust_prompts"]
    assert rep["after"]["verifier_success"] is not None
    c = rep["controls"]
    assert c["constant"]["answer"] == "42" and c["constant"]["items"] == c["format_only"]["items"] == n
    makes_42 = sum(arithmetic_answer(q) == 42 for q in _trust_questions(tmp_path / "s.sqlite", rep))
    assert c["constant"]["verifier_success"] == makes_42 / n  # "42" is right exactly where the sum is 42
    assert c["format_only"]["verifier_success"] is not None and c["format_only"]["examples"] == rep["train"]
    # every call DREAM made is its own on the ledger: the teacher's practice, the measurement, both controls
    store = PoolStore(tmp_path / "s.sqlite")
    rows = store.ledger(100_000)[n_before:]
    store.close()
    assert rows and {r["kind"] for r in rows} <= {"dream", "dream-measure"}
    by = {(r["member"], r["kind"]) for r in rows}
    assert ("gemma-tiny", "dream") in by and ("smol-tiny", "dream-measure") in by
    assert ("smol-tiny-format-only", "dream-measure") in by and ("smol-tiny-constant", "dream-measure") in by
    assert sum(r["member"] == "gemma-tiny" and r["kind"] == "dream" for r in rows) >= 12


def test_cli_controls_need_a_student_kind(tmp_path):
    from k1.cli import app
    from k1.errors import ConfigError

    r = CliRunner().invoke(app, ["pool", "dream", "--pool", str(tmp_path / "none.toml"), "--controls"])
    assert isinstance(r.exception, ConfigError) and "--controls needs --student-kind" in str(r.exception)


def _split(store_path, rep):
    from k1.pool.learn.dream_student import split_prompts
    from k1.pool.store import PoolStore

    store = PoolStore(store_path)
    exps = [e for e in store.experiences() if e["context"] == "arithmetic"]
    store.close()
    _, trust, replay = split_prompts(exps, "arithmetic", 0.3, 0)
    assert len(trust) == rep["trust_prompts"] and len(replay) == rep["replay_prompts"]
    return trust, replay


def _held_prompts(store_path, rep):
    trust, replay = _split(store_path, rep)
    return [e["prompt"] for e in trust + replay]


def _trust_questions(store_path, rep):
    return [question(e["prompt"]) for e in _split(store_path, rep)[0]]


def test_the_pools_prose_verifier_judges_the_cloze_family_and_practice_makes_more_of_it():
    """DREAM can learn the measured prose family inside the pool: `prose` judges "Continue this text: …" on the
    corpus (and nothing it has no word for), and practice from a served cloze prompt is another corpus problem."""
    from k1.pool.learn.students.data import practice_prompts, problem_key
    from k1.pool.learn.students.families import cloze_tasks
    from k1.pool.learn.verifiers import class_verifier

    v = class_verifier("prose")
    t = cloze_tasks()[7]
    word = t.check["answer"]
    assert v(f"user: {t.prompt}\nassistant:", f" {word}.") == 1.0 and v(t.prompt, "the") == 0.0
    assert v("Continue this text: no such sentence", word) is None and v("Once upon a", "time") == 1.0
    made = practice_prompts([t.prompt], 20, exclude={t.prompt})
    assert len(made) == 20 and t.prompt not in made
    assert all(v(p, "x") == 0.0 for p in made)  # each one the verifier can judge
    assert len({problem_key("prose", p) for p in made}) == 20


def test_a_sliding_window_cache_past_its_window_is_read_afresh_not_a_crash():
    """Gemma 3's sliding-window layers cannot cut a cached prompt back once it is longer than the window: reusing
    a shared prefix of such a prompt raised "crop was called … sliding window size was already reached"."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from k1.pool.members.hf import HFMember

    torch.manual_seed(0)
    tok = gemma_tokenizer()
    cfg = Gemma3TextConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                           sliding_window=64, pad_token_id=257, bos_token_id=258, eos_token_id=259)
    model = Gemma3ForCausalLM(cfg).eval()
    cached, fresh = HFMember(model, tok, name="g"), HFMember(model, tok, name="g-fresh", prefix_cache=0)
    shared = "The same long opening of two prompts, read once and kept. " * 3  # about 180 tokens, past the window
    cached.generate(shared + "First question, much longer than the second one.", max_tokens=3)
    again = cached.generate(shared + "Second.", max_tokens=3)
    assert again.text == fresh.generate(shared + "Second.", max_tokens=3).text
