"""Pool members: one interface (`Member`) and three kinds (`K1Member`, `HFMember`, `OpenAIMember`);
`k1.pool.pool.load_member(spec)` builds one from a pool-file entry."""

from __future__ import annotations

from k1.pool.members.base import ZERO_COST, CallFailed, Cost, Generation, Member, Prompt, Score, prompt_text


def __getattr__(name):  # the member classes import torch/transformers/httpx lazily
    if name == "K1Member":
        from k1.pool.members.k1 import K1Member
        return K1Member
    if name == "HFMember":
        from k1.pool.members.hf import HFMember
        return HFMember
    if name == "OpenAIMember":
        from k1.pool.members.openai import OpenAIMember
        return OpenAIMember
    raise AttributeError(name)


__all__ = ["Cost", "CallFailed", "Generation", "HFMember", "K1Member", "Member", "OpenAIMember", "Prompt", "Score",
           "ZERO_COST", "prompt_text"]
