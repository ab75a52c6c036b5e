"""`attempts`: the one retry/fallback loop every call runs, streamed or not (a non-streamed call drains it).

For each member the call may try (`Choice.order`, or the pinned one): its gate is taken, the prompt is checked
against its context (`PromptTooLong`, never charged), the call's estimated cost is reserved in the ledger, the
member streams; text deltas are yielded as they come. A member that fails is charged and counted against it,
and the call moves on to the next candidate — unless the member was pinned or text already reached the client.
Closing the iterator stops the member between tokens: what it computed is charged as 'cancelled'. The member's
KV prefix cache is salted with the tenant's name for the call (no tenant resumes from another's prompt).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from k1.errors import BackendError
from k1.pool.errors import BudgetExhausted, Busy, PromptRejected, PromptTooLong
from k1.pool.members.base import CallFailed, Member
from k1.pool.route.call import Call

REFUSED = (PromptRejected, BudgetExhausted, Busy)  # refused before the member ran: nothing to charge


def attempts(rt, call: Call) -> Iterator[str]:
    """Text deltas of the first member that answers; afterwards `call.routed` holds the result."""
    errors: list[Exception] = []
    try:
        for name in [call.pinned] if call.pinned else rt.choice.order(call.decision, rt.limits.retries):
            member, sent = None, False
            try:
                with turn(rt, call, name) as member:
                    member.last_generation = None
                    it = member.stream(call.prompt, **call.kw)
                    try:
                        for delta in it:
                            sent = True
                            yield delta
                    except GeneratorExit:
                        it.close()
                        rt.ledger.charge(call.reservation, name, "cancelled", None, member.last_generation,
                                         **_where(call))
                        raise
                    finally:
                        it.close()
                    gen = member.last_generation
            except (*REFUSED, CallFailed, BackendError) as e:
                failed = not isinstance(e, REFUSED)
                if failed:
                    rt.aftercare.failed(rt, call, member or rt.pool.members[name], e)
                if call.pinned or (failed and sent and not call.drained):
                    raise
                errors.append(e)
                continue
            call.routed = rt.aftercare.finish(rt, call, gen)
            return
        failed = [e for e in errors if isinstance(e, CallFailed)]  # a member's failure is the better message
        raise (failed or errors)[0]
    finally:
        rt.ledger.release(call.reservation)


def _where(call: Call) -> dict:
    return {"request": call.request, "session": call.session, "task_class": call.task_class, "stream": call.stream}


@contextmanager
def turn(rt, call: Call, name: str) -> Iterator[Member]:
    """The member's gate, held while it runs; the prompt checked against its context; the cost reserved."""
    gate = rt.gates[name]
    gate.acquire(name)
    try:
        member = rt.pool[name]
        call.tried.append(name)
        call.member = name
        n = member.prompt_tokens(call.prompt)
        if n == 0:
            raise PromptRejected(f"member {name!r}: the prompt is empty; give at least one character")
        room = min(rt.limits.prompt_tokens, member.max_positions - 1 if member.max_positions else 1 << 62)
        if n > room:
            raise PromptTooLong(f"the prompt is {n} tokens; member {name!r} takes at most {room}"
                                + (f" (its context is {member.max_positions} positions)" if member.max_positions
                                   else "") + "; shorten it")
        call.reservation = rt.ledger.reserve(member.estimate_cost(n, call.kw["max_tokens"]), tenant=call.tenant,
                                             kind=call.kind, what=f"member {name!r}", clamp=not member.is_local,
                                             request=call.request, member=name)
        member.cache_salt = call.tenant.cache_salt
        try:
            yield member
        finally:
            member.cache_salt = ""
    finally:
        gate.release()
