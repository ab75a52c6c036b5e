"""A LoRA student per class on a Hugging Face member (SmolLM2 in the default pool), via peft.

Same cost per call as its base (the adapter is merged), more success where it learns: "better with use" where
"cheaper" is out of reach. The loss is on the accepted answer's tokens only (k1.pool.learn.train_hf). The merged
model and tokenizer are saved as a Hugging Face folder, so the pool serves it as an `hf:PATH` member.
"""

from __future__ import annotations

from pathlib import Path

from k1.pool.learn.students.data import Example


def train_lora_student(member, examples: list[Example], out_dir: str | Path, *, epochs: int = 2, lr: float = 2e-4,
                       r: int = 8, alpha: int = 16, seed: int = 0) -> tuple[Path, dict]:
    """LoRA-tune a copy of `member` (an `HFMember`) on `examples`; → (the merged model's folder, training record)."""
    from k1.pool.learn.train_hf import finetune_lora

    out_dir = Path(out_dir)
    tuned, rec = finetune_lora(member, [(p, a) for p, a in examples], out_dir, epochs=epochs, lr=lr, r=r,
                               alpha=alpha, seed=seed)
    merged = out_dir / "merged"
    tuned.model.save_pretrained(merged)
    member.tokenizer.save_pretrained(merged)
    tuned.close()
    return merged, rec


def hf_member_spec(path: str | Path, name: str) -> dict:
    return {"name": name, "kind": "hf", "path": str(Path(path).resolve()), "roles": ["student"]}
