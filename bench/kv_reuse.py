"""KV caches, measured side by side in one process, with outputs checked equal to the uncached path.

1. K-1 sampling: the engine's uncached sampler (`AgentTree.generate`, which re-reads the window every
   token) against `K1Member` with its KV cache, on the default K-1 model shape — inside the context
   (prompt + answer ≤ 64 tokens, where the cache holds) and past it (the window slides every token, so the
   cache is rebuilt: no speedup is expected there, and none is claimed).
2. Prefix reuse on a multi-turn chat: a Hugging Face member with its prefix cache on and off; every turn
   re-sends the whole conversation, so with reuse only the new turn's tokens are computed.

    python bench/kv_reuse.py              # a tiny Llama built from a config (no download)
    python bench/kv_reuse.py --smollm2    # SmolLM2-135M-Instruct from the local cache (see k1.pool.default)

Burn-in runs are thrown away; each candidate is timed over `--rounds` interleaved rounds and the median is
reported. Prints a table, then the results as one JSON object on the last line; saves it under runs/bench/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from k1.engine.config import load_config
from k1.data import load_tokenizer
from k1.engine.run.build import build_model
from k1.pool.members.k1 import K1Member

TURNS = ["Hi! What is a river?", "Where do rivers end?", "Name a long one.", "How long is it?",
         "Is it longer than the Nile?", "Thanks. One more fact about it?"]


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def k1_sampling(rounds: int, seed: int = 0) -> dict:
    cfg = load_config(preset="default")
    tok = load_tokenizer(cfg.data.tokenizer)
    torch.manual_seed(seed)
    model = build_model(cfg, tok.vocab_size).eval()
    member = K1Member(model, tok, "k1-default", prefix_cache=0)
    ctx = model.cfg.context
    prompt = "The river "
    p_ids = tok.encode(prompt)
    out = {}
    for label, new in (("inside_window", ctx - len(p_ids)), ("past_window", 3 * ctx)):
        def uncached():
            g = torch.Generator().manual_seed(seed)
            return model.generate(torch.tensor([p_ids]), new, 0.8, None, generator=g)[0, len(p_ids):].tolist()

        def cached():
            return member.generate(prompt, max_tokens=new, temperature=0.8, seed=seed)

        ref, got = uncached(), cached()  # burn-in, and the equality check
        equal = got.text == tok.decode(ref)
        t_u, t_c = _median_time(uncached, rounds), _median_time(cached, rounds)
        out[label] = {"new_tokens": new, "uncached_s": t_u, "cached_s": t_c, "speedup": t_u / t_c,
                      "outputs_equal": equal}
    out["model"] = {"parameters": model.num_parameters(), "context": ctx,
                    "agents": sum(lv.n_agents for lv in model.levels)}
    return out


def _member(smollm2: bool):
    if smollm2:
        from k1.pool.default import smollm2_member
        return smollm2_member
    from k1.pool.testing import tiny_hf_member
    return lambda **kw: tiny_hf_member("tiny-llama", seed=0, hidden=128, layers=4, init=0.1, **kw)


def prefix_reuse(rounds: int, smollm2: bool, max_tokens: int) -> dict:
    make = _member(smollm2)
    reuse, plain = make(), make()
    plain.enable_prefix_cache(0)

    def chat(m):
        m_reset = getattr(m, "prefix_cache", None)
        if m_reset is not None:
            m_reset.clear()  # every round starts a fresh conversation
        msgs, answers, flops = [], [], 0.0
        for t in TURNS:
            msgs.append({"role": "user", "content": t})
            g = m.generate(list(msgs), max_tokens=max_tokens)
            msgs.append({"role": "assistant", "content": g.text})
            answers.append(g.text)
            flops += g.cost.flops
        return answers, flops

    (a_reuse, f_reuse), (a_plain, f_plain) = chat(reuse), chat(plain)  # burn-in + equality check
    t_r = _median_time(lambda: chat(reuse), rounds)
    t_p = _median_time(lambda: chat(plain), rounds)
    return {"member": reuse.name, "turns": len(TURNS), "max_tokens": max_tokens,
            "uncached_s": t_p, "cached_s": t_r, "speedup": t_p / t_r,
            "flops_uncached": f_plain, "flops_cached": f_reuse, "flops_ratio": f_plain / f_reuse,
            "answers_equal": a_reuse == a_plain, "turns_equal": sum(x == y for x, y in zip(a_reuse, a_plain)),
            "prefix_hits_per_chat": len(TURNS) - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smollm2", action="store_true", help="prefix reuse on SmolLM2-135M-Instruct")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/kv_reuse.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"command": " ".join(["python"] + sys.argv), "torch": torch.__version__, "python": platform.python_version(),
           "device": "cpu", "threads": args.threads,
           "k1_sampling": k1_sampling(args.rounds),
           "prefix_reuse": prefix_reuse(args.rounds, args.smollm2, args.max_tokens)}
    k, p = res["k1_sampling"], res["prefix_reuse"]
    for label in ("inside_window", "past_window"):
        r = k[label]
        print(f"K-1 sampling {label:14s} {r['new_tokens']:4d} tokens: uncached {r['uncached_s'] * 1e3:8.1f} ms, "
              f"cached {r['cached_s'] * 1e3:8.1f} ms → ×{r['speedup']:.2f} (outputs equal: {r['outputs_equal']})")
    print(f"prefix reuse, {p['turns']}-turn chat on {p['member']}: uncached {p['uncached_s']:.2f} s, cached "
          f"{p['cached_s']:.2f} s → ×{p['speedup']:.2f}; FLOPs ×{p['flops_ratio']:.2f} fewer "
          f"(answers equal: {p['answers_equal']}, {p['turns_equal']}/{p['turns']} turns)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
