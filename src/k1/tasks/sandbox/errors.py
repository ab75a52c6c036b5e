"""`SandboxUnavailable`: its own module so that every part of the sandbox can raise it without a circle."""

from k1.errors import K1Error


class SandboxUnavailable(K1Error):
    """No working sandbox here; the Python verifier refuses to run."""
