"""Fine-tune a Hugging Face target on verified answers with LoRA (peft): loss on the response tokens only. Used
by the self-learning loop and by the pool's LoRA students.

The base model is copied per call, so each seed starts from the same weights; the adapter is saved under
`out_dir/adapter` and merged into the copy that is returned as a new member for the after-evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from k1.errors import ConfigError


def finetune_lora(member, examples: list[tuple[list[dict] | str, str]], out_dir: Path, *, epochs: int = 3,
                  lr: float = 2e-4, r: int = 8, alpha: int = 16, seed: int = 0):
    """examples: (prompt as the member renders it, response) pairs → a new HFMember with the adapter merged."""
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise ConfigError("LoRA training needs peft: pip install 'k1[loop]'") from None
    from k1.pool.members.hf import HFMember

    torch.manual_seed(seed)
    tok = member.tokenizer
    model = copy.deepcopy(member.model).train()
    targets = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if any(n in m for m, _ in model.named_modules())]
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets or None,
                                                  task_type="CAUSAL_LM"))
    rows = []
    for prompt, response in examples:
        p_ids = member._prompt_ids(prompt)
        r_ids = member.encode(response.strip()) + [tok.eos_token_id]
        rows.append((torch.tensor(p_ids + r_ids), len(p_ids)))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        for i in torch.randperm(len(rows), generator=g).tolist():
            ids, n_prompt = rows[i]
            labels = ids.clone()
            labels[:n_prompt] = -100  # learn the answer, not the question
            out = peft_model(input_ids=ids[None].to(member.device), labels=labels[None].to(member.device))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir / "adapter")
    merged = peft_model.merge_and_unload().eval()
    tuned = HFMember(merged, tok, name=f"{member.name}+lora", roles=member.roles, device=member.device)
    return tuned, {"examples": len(rows), "epochs": epochs, "steps": len(losses),
                   "loss_first": round(sum(losses[:len(rows)]) / max(len(rows), 1), 4),
                   "loss_last": round(sum(losses[-len(rows):]) / max(len(rows), 1), 4)}
