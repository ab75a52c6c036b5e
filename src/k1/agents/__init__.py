"""Agents that live on the bridge: model-backed ones (`ModelAgent`, answering `generate` requests) and the
propose–critique–revise coordinator (`collab`). They use the bridge as any client does; the bridge itself
(`k1.bridge`) is the transport and knows nothing of models."""

from k1.agents.model import GENERATE, GenerateRequest, ModelAgent, ask_agent, generation_reply

__all__ = ["GENERATE", "GenerateRequest", "ModelAgent", "ask_agent", "generation_reply"]
