"""How a task is put to a member and how a (prompt, response) pair becomes training text, per member kind.

A base model (K-1) gets a plain "Q: ...\\nA:" completion prompt and stops at the line end; an instruct model
(Hugging Face with a chat template, OpenAI-compatible) gets chat messages.
"""

from __future__ import annotations

from k1.tasks.task import Task

MAX_TOKENS = {"arithmetic": 12, "python": 120}
_SUFFIX = {"arithmetic": " Answer with just the number.", "python": ""}


def is_chat(member) -> bool:
    if member.kind == "openai":
        return True
    tok = getattr(member, "tokenizer", None)
    return member.kind == "hf" and bool(getattr(tok, "chat_template", None))


def prompt_for(member, task: Task, history: list[tuple[str, str]] = ()):
    """The prompt for `task`; `history` holds earlier (response, feedback) turns for self-refine / critique."""
    if is_chat(member):
        msgs = [{"role": "user", "content": task.prompt + _SUFFIX[task.kind]}]
        for response, feedback in history:
            msgs += [{"role": "assistant", "content": response}, {"role": "user", "content": feedback}]
        return msgs
    text = f"Q: {task.prompt}\nA:"
    for response, feedback in history:
        text += f" {response}\nQ: {feedback}\nA:"
    return text


def stop_for(member, task: Task) -> list[str] | None:
    return None if is_chat(member) or task.kind == "python" else ["\n"]


def training_text(task: Task, response: str) -> str:
    """A plain-text training example for a base model, in the same format `prompt_for` asks in."""
    return f"Q: {task.prompt}\nA: {response.strip()}\n\n"
