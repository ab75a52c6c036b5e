"""The agent bridge: a WebSocket hub with auth, routing, acks, a persistent exchange log and tensor frames.

Protocol: docs/bridge-protocol.md. `Hub`/`HubConfig` serve it, `BridgeClient` (async) and `SyncBridgeClient`
speak it, `ExchangeLog` is its SQLite file, `AgentBook` says who may join.
"""

from k1.bridge.auth import AgentBook, read_token, write_agents_file
from k1.bridge.client import BridgeClient, HubRefused, Message, SyncBridgeClient
from k1.bridge.hub import BackgroundHub, Hub, HubConfig
from k1.bridge.inbox import Inbox
from k1.bridge.protocol import PROTOCOL_VERSION, Envelope
from k1.bridge.store import ExchangeLog

__all__ = ["AgentBook", "BackgroundHub", "BridgeClient", "Envelope", "ExchangeLog", "Hub", "HubConfig", "HubRefused",
           "Inbox", "Message", "PROTOCOL_VERSION", "SyncBridgeClient", "read_token", "write_agents_file"]
