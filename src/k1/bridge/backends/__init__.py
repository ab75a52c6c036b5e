"""Where the hub keeps messages: `SqliteBackend` (one SQLite file, the embedded default) or `JetStreamBackend`
(a NATS JetStream stream, for several hub processes on several machines).

The hub (`k1.bridge.hub`) owns the WebSocket protocol, tokens, roles, rate limits and addressing; a backend
owns what happens to a message once it is accepted. Each has the same small surface:

    await b.start() / await b.stop() -> counts     open and close the store
    b.declared                                      name -> roles each agent declared at its last registration
    await b.remember_agent(name, roles)             record a registration's roles (for routing by role)
    await b.store(env, recipients, payload) -> bool append (False: a resend of a stored id); raises
                                                    ProtocolError(recipient_full | sender_full) over a budget
    b.wake(recipients)                              a message was stored for these recipients
    b.open(name) -> Delivery                        one connection's delivery: `await d.run(send)` sends the
                                                    recipient's unacked messages in order until cancelled,
                                                    `await d.ack(ids, sender)` records acks, `await d.close()`
    await b.pending(name) -> int                    unacked messages waiting for `name`
    await b.counts() -> dict                        {"messages", "pending_deliveries"}
"""

from k1.bridge.backends.sqlite import SqliteBackend

__all__ = ["SqliteBackend"]
