"""A small synthetic three-domain corpus with learnable structure, and a CPU-sized run config.

The text is generated, not mocked: each domain has its own vocabulary and patterns, so a model that
learns shows a loss well below the unigram entropy within a few dozen steps.
"""

from __future__ import annotations

import random
from pathlib import Path

from k1.data.config import DataConfig
from k1.data.corpus import Corpus, load_corpus
from k1.engine.config import RunConfig, load_config

_WORDS = {
    "prose": "the a river town old king walked slowly across bridge to market and sold bread in winter".split(),
    "code": ["def", "return", "x", "y", "self", "(", ")", ":", "+", "=", "if", "for", "in", "range", "\n    "],
    "science": "energy mass cell protein 2 3 7 = + equals the velocity of light squared atom electron".split(),
}


def _text(domain: str, n_bytes: int, rng: random.Random) -> str:
    words, out, size = _WORDS[domain], [], 0
    while size < n_bytes:
        k = rng.randint(4, 12)
        start = rng.randrange(len(words))
        sent = " ".join(words[(start + i * rng.choice((1, 1, 2))) % len(words)] for i in range(k)) + ".\n\n"
        out.append(sent)
        size += len(sent)
    return "".join(out)


def write_tiny_corpus(root: Path, n_bytes: int = 30_000, seed: int = 0) -> dict[str, str]:
    """Write one text file per domain under `root`; returns domain → path (for `data.paths`)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for d in _WORDS:
        p = root / f"{d}.txt"
        p.write_text(_text(d, n_bytes, rng))
        paths[d] = str(p)
    return paths


def tiny_data_config(root: Path, n_bytes: int = 30_000) -> DataConfig:
    return DataConfig(source="files", domains=list(_WORDS), paths=write_tiny_corpus(root, n_bytes))


def tiny_corpus(root: Path, n_bytes: int = 30_000) -> Corpus:
    return load_corpus(tiny_data_config(root, n_bytes))


def tiny_config(root: Path, overrides: list[str] | None = None, **extra) -> RunConfig:
    """The `tiny` preset on the synthetic corpus, on CPU, without a progress bar."""
    data = tiny_data_config(root).model_dump()
    base = {"data": data, "train": {"device": "cpu", "recorders": ["metrics", "attribution"]}}
    from k1.engine.config import merge
    return load_config(preset="tiny", overrides=overrides, extra=merge(base, extra))


def tiny_run(root: Path, steps: int = 30) -> Path:
    """Train the tiny preset for `steps` steps into `root/run` (a real run directory) and return it."""
    from k1.engine.run.train import Trainer

    Trainer(tiny_config(root / "data", [f"train.steps={steps}"]), root / "run", quiet=True).fit()
    return root / "run"


def write_tiny_config_file(root: Path, **sections) -> Path:
    """A TOML config file for the CLI: the `tiny` preset on the synthetic corpus under `root/data`, CPU, plus
    `sections`. The preset is written into the file because the CLI's `--config` applies no preset of its own:
    without it a test would train the full-size default model."""
    import tomli_w

    from k1.engine.config import PRESETS, merge

    data = tiny_data_config(root / "data").model_dump(exclude_none=True)
    base = merge(PRESETS["tiny"], {"data": data, "train": {"device": "cpu"}})
    path = root / "tiny.toml"
    path.write_text(tomli_w.dumps(merge(base, sections)))
    return path
