"""Bad input never hangs and never dumps a traceback: property-based fuzzing of the config and checkpoint
loaders in-process (always the project's one-line error type, `K1Error`), and a few CLI checks that it
becomes one line on stderr with exit code 2."""

import json
import shutil

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from k1.engine.config import load_config
from k1.engine.run.state import TrainState
from k1.errors import ConfigError, K1Error
from k1.testing import tiny_config, tiny_corpus
from k1.testing.cli import run_k1
from k1.testing.tiny import write_tiny_config_file

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ABSURD = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                   st.booleans(), st.lists(st.integers(-3, 10**6), max_size=5), st.just({"x": 1}))
KEYS = ["model.context", "model.width", "model.n_heads", "model.branching", "model.mlp_width", "model.kinds",
        "train.batch_size", "train.steps", "train.eval_every", "optim.lr", "optim.betas", "policy.name",
        "policy.top_k", "trust.decay", "autonomy.trial_steps", "safety.ring", "data.domains", "nonsense.key",
        "train.keep_checkpoints", "arch"]


def _nest(key: str, value) -> dict:
    out: dict = {}
    cur = out
    *parents, last = key.split(".")
    for p in parents:
        cur = cur.setdefault(p, {})
    cur[last] = value
    return out


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), ABSURD, min_size=1, max_size=4))
def test_fuzzed_config_files_load_or_fail_in_one_line(tmp_path, values):
    from k1.engine.config import merge

    data: dict = {}
    for k, v in values.items():
        data = merge(data, _nest(k, v))
    path = tmp_path / "fuzz.toml"
    try:
        path.write_text(tomli_w.dumps(data))
    except (TypeError, ValueError):  # not representable in TOML (NaN keys etc.): nothing to test
        return
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_config_file_fail_in_one_line(tmp_path, blob):
    path = tmp_path / "junk.toml"
    path.write_bytes(blob)
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("override", ["model.context=100000", "model.width=1000000", "train.batch_size=10000000",
                                      "model.branching=[64, 64, 64]"])
def test_sizes_that_cannot_fit_fail_before_anything_is_built(override, tmp_path):
    cfg = tiny_config(tmp_path / "data", [override])
    with pytest.raises(ConfigError, match="GiB") as e:
        TrainState(cfg, tiny_corpus(tmp_path / "data"))
    assert "\n" not in str(e.value)


# ---- checkpoints ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_config(root / "data", ["train.steps=4", "autonomy.enabled=true"])
    from k1.engine.run.train import Trainer

    tr = Trainer(cfg, root / "run", quiet=True, recorders=[])
    tr.fit()
    return cfg, root / "data", root / "run" / "checkpoints" / "step-4"


def _load(cfg, data, ckpt):
    TrainState(cfg, tiny_corpus(data)).load(ckpt)


def _mutate_json(obj, path: list, op: str, value):
    cur = obj
    for k in path[:-1]:
        cur = cur[k]
    if op == "drop":
        del cur[path[-1]]
    else:
        cur[path[-1]] = value


def _json_paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield prefix + (i,)
            yield from _json_paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_fail_in_one_line(saved, tmp_path, data):
    cfg, corpus_dir, ckpt = saved
    work = tmp_path / "c"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ckpt, work)
    kind = data.draw(st.sampled_from(["truncate", "json", "tensor", "drop-file"]))
    if kind == "truncate":
        f = work / data.draw(st.sampled_from(["model.safetensors", "state.safetensors", "state.json"]))
        blob = f.read_bytes()
        f.write_bytes(blob[: data.draw(st.integers(0, max(0, len(blob) - 1)))])
    elif kind == "drop-file":
        (work / data.draw(st.sampled_from(["model.safetensors", "state.safetensors", "state.json"]))).unlink()
    elif kind == "json":
        skel = json.loads((work / "state.json").read_text())
        paths = sorted(_json_paths(skel), key=str)
        path = list(data.draw(st.sampled_from(paths)))
        _mutate_json(skel, path, data.draw(st.sampled_from(["drop", "set"])), data.draw(ABSURD))
        (work / "state.json").write_text(json.dumps(skel))
    else:  # a tensor of the wrong shape or dtype, in the weights or the state
        name = data.draw(st.sampled_from(["model.safetensors", "state.safetensors"]))
        tensors = load_file(work / name)
        key = data.draw(st.sampled_from(sorted(tensors)))
        t = tensors[key]
        tensors[key] = data.draw(st.sampled_from([
            torch.zeros(t.numel() + 1), t.to(torch.int64) if t.is_floating_point() else t.float(),
            torch.full_like(t.float(), float("nan")).reshape(-1)]))
        save_file(tensors, work / name)
    try:
        _load(cfg, corpus_dir, work)
    except K1Error as e:
        assert "\n" not in str(e) and str(e)


def test_cli_turns_bad_input_into_one_line_and_exit_code_2(tmp_path):
    cfg = write_tiny_config_file(tmp_path, train={"steps": 2})
    cases = [
        ("train", "--config", cfg, "--set", "model.context=100000", "--out", tmp_path / "a"),
        ("train", "--config", cfg, "--set", "model.width=banana", "--out", tmp_path / "b"),
        ("train", "--resume", tmp_path / "nowhere"),
    ]
    run_k1("train", "--config", cfg, "--out", tmp_path / "ok", "--quiet")
    ckpt = tmp_path / "ok" / "checkpoints" / "step-2" / "state.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    cases.append(("train", "--resume", tmp_path / "ok", "--steps", "3"))
    for flag in (("--seed", "3"), ("--phase2",), ("--device", "cpu")):
        cases.append(("train", "--resume", tmp_path / "ok", *flag))
    for args in cases:
        r = run_k1(*args, check=False)
        assert r.returncode == 2, (args, r.stderr)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("k1: error:"), (args, r.stderr)
    r = run_k1("train", "--resume", tmp_path / "ok", "--seed", "3", check=False)
    assert "--seed" in r.stderr
