"""Perplexity of the pool's two families on the first sentence of *Pride and Prejudice* (public domain).

Two conventions, both reported: the sentence read after the tokenizer's own beginning-of-text token (every
token scored), and read bare (the first token unscored). Per token of each model's own tokenizer (what
"perplexity" usually means; not comparable across tokenizers) and as bits per UTF-8 byte of the scored text.
For SmolLM2 the start token matters: its `bos_token` is the chat marker <|im_start|>.

    K1_POOL_DIR=... python bench/prose_perplexity.py      # SmolLM2 and, if converted, Gemma-3-270M
"""

from __future__ import annotations

import json
import math

import torch

SENTENCE = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
            "must be in want of a wife.")


@torch.no_grad()
def measure(path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = tok(SENTENCE, add_special_tokens=False)["input_ids"]
    out = {"tokens": len(ids), "bos_token": tok.bos_token}
    for name, start in (("after_bos", [tok.bos_token_id]), ("bare", [])):
        x = torch.tensor([start + ids])
        logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
        nll = -logp.gather(1, x[0, 1:, None]).sum().item()
        n = x.shape[1] - 1
        scored = tok.decode(ids if start else ids[1:])
        out[name] = {"perplexity": math.exp(nll / n), "bits_per_byte": nll / math.log(2) / len(scored.encode())}
    return out


def main() -> None:
    from k1.pool import gemma
    from k1.pool.default import _ready, cache_root, converted_dir

    torch.set_num_threads(1)
    out = {"sentence": SENTENCE, "smollm2": measure(converted_dir())}
    g = cache_root() / "gemma-3-270m"
    if _ready(g) or gemma.installed():
        out["gemma3"] = measure(gemma.converted_dir(quiet=False))
    for k, v in out.items():
        if k != "sentence":
            print(f"{k} ({v['tokens']} tokens; bos {v['bos_token']}): " + "; ".join(
                f"{c}: perplexity {v[c]['perplexity']:.2f} per token, {v[c]['bits_per_byte']:.3f} bits/byte"
                for c in ("after_bos", "bare")))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
