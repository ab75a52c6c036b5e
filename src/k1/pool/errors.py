"""The pool's errors, in one module: the router raises them, the server maps them to HTTP statuses, and
neither has to import the other to know them."""

from __future__ import annotations

from k1.errors import BackendError, ConfigError, K1Error


class BudgetExhausted(K1Error):
    """The pool (or a tenant's share of it) has spent its ATP budget, or what is left cannot pay this call."""


class UnknownRequest(BackendError):
    """Feedback for a request id the pool never answered (or answered for another tenant)."""


class FeedbackExists(BackendError):
    """A second outcome for a request id: the first one stands."""


class PromptRejected(BackendError):
    """A prompt no member may run (empty); nothing is charged."""


class PromptTooLong(PromptRejected):
    """A prompt longer than the member's context (or `Limits.prompt_tokens`); nothing is charged."""


class Busy(K1Error):
    """A member's queue is full, or the request waited `Limits.wait_s` for it."""


class TenantBusy(K1Error):
    """A tenant already has as many requests in flight as its `concurrency` allows."""


class Cancelled(K1Error):
    """The caller went away; what the member computed is charged as 'cancelled'."""


class UnknownTaskClass(ConfigError):
    """A caller named a task class the pool does not know (classes come from a fixed set)."""


class UnknownModel(ConfigError):
    def __init__(self, name: str, names: list[str]):
        super().__init__(f"the model {name!r} does not exist; use 'auto' or one of: {', '.join(names)}")
