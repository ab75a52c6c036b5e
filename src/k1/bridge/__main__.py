"""`python -m k1.bridge ...`: the transport CLI (serve, send, listen, log) without loading the rest of k1; the model
agents' `agent` and `collab` are `k1 bridge agent | collab`."""

import sys

from k1.bridge.cli import app
from k1.errors import K1Error

try:
    app()
except K1Error as e:
    print(f"k1: error: {e}", file=sys.stderr)
    sys.exit(2)
