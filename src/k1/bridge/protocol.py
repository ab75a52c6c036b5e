"""Bridge protocol v1 on the wire: the envelope, the hub's own message types, error codes, tensor frames.

The full specification is `docs/bridge-protocol.md`; this file is its executable half. Nothing here
touches a socket, so every rule can be tested without a server.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL_VERSION = 1
DEFAULT_PORT = 8765
BROADCAST = "*"

# Types the hub speaks itself; every other `type` is an application message that the hub routes and logs.
REGISTER, WELCOME, ACK, RECEIPT, ERROR = "register", "welcome", "ack", "receipt", "error"
HUB_TYPES = frozenset({REGISTER, WELCOME, ACK, RECEIPT, ERROR})
HUB_NAME = "hub"

# Error codes carried in `data.code` of an `error` message (the numbers are WebSocket close codes where the
# hub also closes the connection).
ERROR_CODES = {
    "bad_json": "the frame is not valid JSON (or the binary header is not)",
    "bad_envelope": "the JSON is not a valid envelope (missing or wrong fields)",
    "bad_version": "the client speaks another protocol version",
    "auth_failed": "unknown agent name or wrong token",
    "not_registered": "the first message must be `register`",
    "bad_payload": "a binary frame whose payload is not a safetensors file torch can load; the message was not stored",
    "unknown_recipient": "`to` names no known agent or role",
    "rate_limited": "too many messages or bytes per second from this agent; the message was dropped, resend later",
    "recipient_full": "a recipient already holds its limit of pending messages or bytes from this sender; the message "
                      "was not stored",
    "sender_full": "the sender already has its byte budget stored in the log within the retention window; the message "
                   "was not stored",
    "reserved_type": "a client sent a type only the hub may send",
    "unavailable": "the hub's store (NATS JetStream) did not confirm the message: not receipted; resend the same id "
                   "later (it may have been stored; the repeat is then dropped)",
}
MAX_DEPTH = 64  # deepest nesting of JSON arrays/objects a frame may hold (deeper: bad_json, never a crash)
CLOSE_POLICY = 1008   # auth failure / protocol violation (RFC 6455)
CLOSE_TOO_BIG = 1009  # the frame exceeds the hub's max_size (websockets closes with it itself)
CLOSE_TRY_LATER = 1013  # too many connections waiting to register
CLOSE_REPLACED = 4000  # the same agent registered again on a new connection


class Envelope(BaseModel):
    """Every message, in both directions. `to` is an agent name, a role, or "*" (everyone but the sender)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(default_factory=lambda: new_id(), min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=64)
    # `from` is a Python keyword: the field is `sender` in code and `from` on the wire.
    sender: str = Field("", alias="from", max_length=128)
    to: str = Field("", max_length=128)
    data: Any = None
    ts: float = Field(default_factory=time.time)
    reply_to: Optional[str] = None

    def wire(self) -> dict:
        return self.model_dump(by_alias=True)


def new_id() -> str:
    """Time-ordered unique ids (ms timestamp + random), so ids sort roughly by creation like ULIDs."""
    return f"{int(time.time() * 1000):013x}{uuid.uuid4().hex[:16]}"


class ProtocolError(Exception):
    """A frame the hub (or a client) cannot accept; `code` is a key of ERROR_CODES."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_text(frame: str | bytes) -> Envelope:
    """A text frame → Envelope, or ProtocolError(bad_json | bad_envelope)."""
    try:
        obj = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError("bad_json", f"not JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("bad_json", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if _depth(obj) > MAX_DEPTH:
        raise ProtocolError("bad_json", f"JSON nested deeper than {MAX_DEPTH} levels")
    return _envelope(obj)


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (deep data must not crash whoever stores or re-encodes it)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (list, dict)):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _envelope(obj: Any) -> Envelope:
    if not isinstance(obj, dict):
        raise ProtocolError("bad_envelope", "an envelope is a JSON object")
    try:
        return Envelope.model_validate(obj)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ProtocolError("bad_envelope", problems) from None


def encode_text(env: Envelope) -> str:
    return json.dumps(env.wire(), separators=(",", ":"))


# Binary frames carry tensors: [4-byte big-endian header length][JSON envelope][safetensors payload].
# The envelope's `data` holds small metadata only; the numbers travel as safetensors, never as JSON lists.
_LEN = struct.Struct(">I")


def encode_binary(env: Envelope, payload: bytes) -> bytes:
    return frame_binary(encode_text(env).encode(), payload)


def parse_binary(frame: bytes) -> tuple[Envelope, bytes]:
    if len(frame) < _LEN.size:
        raise ProtocolError("bad_json", "binary frame shorter than its 4-byte header length")
    (n,) = _LEN.unpack_from(frame)
    if n > len(frame) - _LEN.size:
        raise ProtocolError("bad_json", f"binary header length {n} exceeds the frame")
    return parse_text(frame[_LEN.size:_LEN.size + n]), frame[_LEN.size + n:]


def tensors_to_bytes(tensors: dict) -> bytes:
    """dict of name → torch.Tensor → safetensors bytes (contiguous copies; safetensors requires them)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})


def tensors_from_bytes(payload: bytes) -> dict:
    """safetensors bytes → dict of tensors; ProtocolError(bad_payload) when they are not a safetensors file."""
    from safetensors.torch import load

    check_payload(payload)
    return load(payload)


# The safetensors dtypes that `safetensors.torch.load` turns into tensors (tests/bridge check this list against
# the installed safetensors). A file may parse and still name another one (F8_E8M0, F4): refuse it at the hub.
TORCH_DTYPES = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "BF16", "F32", "F64",
                          "C64", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"})


def check_payload(payload: bytes) -> None:
    """Raise ProtocolError(bad_payload) unless `payload` parses as a safetensors file whose every dtype torch
    loads (no torch needed: the hub checks every binary frame with this before storing it)."""
    from safetensors import SafetensorError, deserialize

    try:
        tensors = deserialize(payload)
    except (SafetensorError, ValueError, TypeError, OverflowError) as e:
        raise ProtocolError("bad_payload", f"payload is not a safetensors file: {e}") from None
    for name, t in tensors:
        if t.get("dtype") not in TORCH_DTYPES:
            raise ProtocolError("bad_payload", f"tensor {name[:64]!r} has dtype {str(t.get('dtype'))[:32]!r}, which "
                                               "torch cannot load")


def error(code: str, message: str, reply_to: str | None = None) -> Envelope:
    return Envelope(type=ERROR, sender=HUB_NAME, data={"code": code, "message": message}, reply_to=reply_to)


def frame_binary(header: bytes, payload: bytes) -> bytes:
    """A binary frame from an already-encoded JSON header (the hub replays stored headers as they are)."""
    return _LEN.pack(len(header)) + header + payload
