"""BatchSampler and eval_windows: next-token alignment, exact resume, domain mixing, determinism, errors."""

from __future__ import annotations

import pytest
import torch

from k1.data import BatchSampler, DataConfig, eval_windows, load_corpus
from k1.errors import DataError


def test_y_is_x_shifted_by_one_in_the_token_stream(counting_corpus):
    sampler = BatchSampler(counting_corpus, batch_size=6, context=16, seed=0)
    for _ in range(5):
        x, y = sampler.next()
        assert x.shape == y.shape == (6, 16) and x.dtype == y.dtype == torch.int64
        for row, domain in zip(range(6), sampler.last_domains.tolist()):
            stream = counting_corpus.domains[sampler.domains[domain]].train.long()
            start = int((stream == x[row, 0]).nonzero())
            assert torch.equal(x[row], stream[start : start + 16])
            assert torch.equal(y[row], stream[start + 1 : start + 17])


def test_windows_are_real_text_of_their_domain(builtin_corpus):
    sampler = BatchSampler(builtin_corpus, batch_size=9, context=48, seed=3)
    raw = {d: bytes(s.train.numpy()) for d, s in builtin_corpus.domains.items()}
    x, y = sampler.next()
    assert torch.equal(y[:, :-1], x[:, 1:])
    for row, k in enumerate(sampler.last_domains.tolist()):
        window = bytes(x[row].tolist()) + bytes([int(y[row, -1])])
        assert raw[sampler.domains[k]].find(window) >= 0


def test_state_dict_resumes_exactly(counting_corpus, tmp_path):
    a = BatchSampler(counting_corpus, batch_size=5, context=8, seed=11)
    for _ in range(3):
        a.next()
    torch.save(a.state_dict(), tmp_path / "sampler.pt")
    expected = [a.next() for _ in range(4)]
    b = BatchSampler(counting_corpus, batch_size=5, context=8, seed=999)
    b.load_state_dict(torch.load(tmp_path / "sampler.pt"))
    for (xa, ya), (xb, yb) in zip(expected, (b.next() for _ in range(4))):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert b.batches_drawn == a.batches_drawn == 7


def test_state_dict_from_another_setup_is_refused(counting_corpus, one_line):
    state = BatchSampler(counting_corpus, batch_size=5, context=8).state_dict()
    with pytest.raises(DataError) as e:
        BatchSampler(counting_corpus, batch_size=5, context=9).load_state_dict(state)
    assert "context=8" in one_line(e)


def test_seeds(counting_corpus):
    def first(seed):
        return BatchSampler(counting_corpus, batch_size=4, context=8, seed=seed).next()[0]

    assert torch.equal(first(1), first(1)) and not torch.equal(first(1), first(2))


def test_domains_are_mixed_evenly(counting_corpus):
    sampler = BatchSampler(counting_corpus, batch_size=12, context=8, seed=0)
    firsts = []
    for _ in range(20):
        x, _ = sampler.next()
        assert torch.bincount(sampler.last_domains, minlength=3).tolist() == [4, 4, 4]
        domain_of_row = (x[:, 0] // 10_000).tolist()  # the counting streams start at 0, 10k, 20k
        assert domain_of_row == sampler.last_domains.tolist()
        firsts.append(int(sampler.last_domains[0]))
    assert len(set(firsts)) == 3  # the per-batch shuffle moves which domain leads
    odd = BatchSampler(counting_corpus, batch_size=4, context=8, seed=0)
    for _ in range(10):
        odd.next()
        assert sorted(torch.bincount(odd.last_domains, minlength=3).tolist()) == [1, 1, 2]


def test_domain_subset_and_val_split(counting_corpus, one_line):
    sampler = BatchSampler(counting_corpus, batch_size=4, context=8, split="val", domains=["b"])
    x, _ = sampler.next()
    assert ((x >= 15_000) & (x < 16_000)).all()
    with pytest.raises(DataError) as e:
        BatchSampler(counting_corpus, batch_size=4, context=8, domains=["z"])
    assert "choose from a, b, c" in one_line(e)


def test_eval_windows_are_fixed_and_span_the_split(counting_corpus):
    tokens = counting_corpus.domains["a"].val
    batches = eval_windows(tokens, batch_size=4, context=10, n_batches=3)
    assert len(batches) == 3 and all(x.shape == y.shape == (4, 10) for x, y in batches)
    again = eval_windows(tokens, batch_size=4, context=10, n_batches=3)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(batches, again))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert int(x[0, 0]) == int(tokens[0]) and int(y[-1, -1]) == int(tokens[-1])  # first and last window
    gaps = torch.diff(x[:, 0])
    assert int(gaps.max() - gaps.min()) <= 1  # evenly spaced


def test_too_small_split(tmp_path, one_line, counting_corpus):
    path = tmp_path / "tiny.txt"
    path.write_text("\n\n".join(f"doc {i}" for i in range(40)))
    corpus = load_corpus(DataConfig(source="files", domains=["tiny"], paths={"tiny": str(path)}))
    with pytest.raises(DataError) as e:
        BatchSampler(corpus, batch_size=2, context=1024)
    assert "tiny" in one_line(e) and "context + 1 = 1025" in one_line(e)
    with pytest.raises(DataError) as e:
        eval_windows(corpus.domains["tiny"].val, batch_size=2, context=1024, n_batches=1)
    one_line(e)
    with pytest.raises(DataError):
        BatchSampler(counting_corpus, batch_size=2, context=0)
