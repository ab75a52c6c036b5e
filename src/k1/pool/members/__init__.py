"""Pool members: one interface (`Member`), three kinds (`K1Member`, `HFMember`, `OpenAIMember`), and
`load_member(spec)` to build one from a pool-file entry."""

from __future__ import annotations

from k1.pool.members.base import ZERO_COST, CallFailed, Cost, Generation, Member, Prompt, Score, prompt_text


def load_member(spec) -> Member:
    """Build a member from a pool-file entry (a dict or a validated spec): {"name", "kind", ...}."""
    from k1.common.config_files import validate_as
    from k1.pool.config import PoolConfig

    if isinstance(spec, dict):
        spec = validate_as(PoolConfig, {"members": [spec]}, "member").members[0]
    if spec.kind == "k1":
        from k1.pool.members.k1 import K1Member
        return K1Member.from_run(spec.run, name=spec.name, roles=spec.roles)
    if spec.kind == "hf":
        import torch

        from k1.pool.members.hf import HFMember
        return HFMember.from_pretrained(spec.path, spec.name, spec.roles, gguf_file=spec.gguf_file,
                                        dtype=getattr(torch, spec.dtype), device=spec.device)
    from k1.pool.members.openai import OpenAIMember
    kw = spec.model_dump(exclude={"name", "kind", "roles", "base_url", "api_key_env"})
    return OpenAIMember.from_spec(spec.name, spec.base_url, api_key_env=spec.api_key_env, roles=spec.roles, **kw)


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
           "ZERO_COST", "load_member", "prompt_text"]
