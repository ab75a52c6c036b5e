"""Context classes — stable, moving, unstable, novel — from measured signals on a session's history.

For each prompt: novelty (1 − the best 3-gram similarity to the session's earlier prompts), topic shift
(1 − similarity to the previous prompt) and, with a reference member, surprise (bits per byte of the
prompt under it). The rule, in order (thresholds in `ContextSettings`):
- novel:    novelty ≥ novel_at — nothing like it in this session (a session's first prompt is novel);
- unstable: the topic shifted (shift ≥ shift_at) on at least `unstable_shifts` of the last
            `unstable_window` prompts, or surprise ≥ surprise_at — the conversation will not settle;
- moving:   the topic shifted now, but towards something seen before;
- stable:   otherwise.

A prompt joins a session's history only once its call succeeded (`read` classifies, `add` records), and
restoring histories at startup only compares n-grams: no stored prompt is ever run through a model there,
so stored data cannot stop the pool from starting. Surprise scores at most the reference member's context:
the prompt's head (half its positions, counted as characters) after the previous prompt's tail (a quarter);
a prompt it still cannot score has no surprise (None), never an error.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from k1.errors import BackendError
from k1.pool.members.base import Member
from k1.pool.route.textsignals import ngrams, similarity, surprise_bpb

CONTEXT_CLASSES = ("stable", "moving", "unstable", "novel")
SURPRISE_CHARS = 1024  # a member without a position limit (a sliding K-1 tree) still scores a bounded prompt


class ContextSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    novel_at: float = Field(default=0.8, ge=0, le=1)
    shift_at: float = Field(default=0.6, ge=0, le=1)
    surprise_at: float = Field(default=6.0, ge=0)  # bits per byte under the reference member
    unstable_window: int = Field(default=4, ge=1)
    unstable_shifts: int = Field(default=3, ge=1)
    history: int = Field(default=50, ge=1)  # prompts kept per session


@dataclass
class ContextReading:
    label: str
    novelty: float
    shift: float
    surprise: float | None

    def as_dict(self) -> dict:
        return {"label": self.label, "novelty": self.novelty, "shift": self.shift, "surprise": self.surprise}


@dataclass
class _Session:
    prompts: deque = field(default_factory=deque)
    shifts: deque = field(default_factory=deque)


class ContextClassifier:
    """Keeps each session's recent prompts and classifies the next one."""

    def __init__(self, settings: ContextSettings = ContextSettings(), reference: Member | None = None):
        self.settings, self.reference = settings, reference
        self.sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()  # held only to copy or change a history, never while a model runs

    def seed(self, session: str, prompts: list[str]) -> None:
        """Load a session's history (e.g. from the experience store after a restart); no model runs."""
        for p in prompts[-self.settings.history:]:
            self.add(session, p)

    def observe(self, session: str, prompt: str) -> ContextReading:
        """Classify `prompt` against the session's history, then add it to the history."""
        reading = self.read(session, prompt)
        self.add(session, prompt)
        return reading

    def read(self, session: str, prompt: str, score: bool = True, reference: Member | None = ...) -> ContextReading:
        """Classify `prompt` against the session's history (which it does not change); `score=False` leaves
        surprise out (the router does when the reference member is busy). `reference`: the member that
        scores surprise now (default: the one given at construction)."""
        cfg = self.settings
        with self._lock:
            s = self.sessions.get(session) or _Session()
            prompts, shifts = list(s.prompts), list(s.shifts)
        reference = self.reference if reference is ... else reference
        g = ngrams(prompt)
        grams = [ngrams(p) for p in prompts]
        novelty = 1.0 - max((similarity(g, h) for h in grams), default=0.0)
        shift = 1.0 - similarity(g, grams[-1]) if grams else 1.0
        previous = prompts[-1] if prompts else ""
        surprise = self._surprise(reference, previous, prompt) if score and reference is not None else None
        shifted = shift >= cfg.shift_at
        recent = shifts[-(cfg.unstable_window - 1):] + [shifted] if cfg.unstable_window > 1 else [shifted]
        if novelty >= cfg.novel_at:
            label = "novel"
        elif sum(recent) >= cfg.unstable_shifts or (surprise is not None and surprise >= cfg.surprise_at):
            label = "unstable"
        elif shifted:
            label = "moving"
        else:
            label = "stable"
        return ContextReading(label, novelty, shift, surprise)

    def add(self, session: str, prompt: str) -> None:
        """Append `prompt` to the session's history (after its call succeeded)."""
        cfg = self.settings
        with self._lock:
            s = self.sessions.setdefault(session, _Session())
            last = s.prompts[-1] if s.prompts else None
        shift = 1.0 - similarity(ngrams(prompt), ngrams(last)) if last is not None else 1.0
        with self._lock:
            s.prompts.append(prompt)
            s.shifts.append(shift >= cfg.shift_at)
            while len(s.prompts) > cfg.history:
                s.prompts.popleft()
                s.shifts.popleft()

    @staticmethod
    def _surprise(reference: Member, previous: str, prompt: str) -> float | None:
        n = getattr(reference, "max_positions", None) or SURPRISE_CHARS * 2
        previous, prompt = previous[-(n // 4):], prompt[:n // 2]
        try:
            return surprise_bpb(reference, previous, prompt)
        except BackendError:
            return None
