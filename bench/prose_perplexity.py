"""Perplexity of the pool's two families on the first sentence of *Pride and Prejudice* (public domain).

Each model reads the sentence after its own beginning-of-text token; reported per token of its own tokenizer
(what "perplexity" usually means, not comparable across tokenizers) and as bits per UTF-8 byte (comparable).

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
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    x = torch.tensor([[bos] + ids])
    logp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
    nll = -logp.gather(1, x[0, 1:, None]).sum().item()
    return {"tokens": len(ids), "perplexity": math.exp(nll / len(ids)),
            "bits_per_byte": nll / math.log(2) / len(SENTENCE.encode())}


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
            print(f"{k}: perplexity {v['perplexity']:.2f} per token ({v['tokens']} tokens), {v['bits_per_byte']:.3f} bits/byte")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
