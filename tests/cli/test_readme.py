"""Every command the README shows is a command the CLI accepts, and each headline figure's command line runs
with the settings the figure was measured with (the README's flags + the code's defaults): a default that
moves, or a README command that drifts from the measured one, fails here.

Once, `k1 loop run`'s defaults (12 training and 12 held-out questions, 8 samples) were not what the README's
loop figure was measured with (30, 30, 4), so the README's command did not reproduce its own headline.
"""

import re
import shlex
from pathlib import Path

import pytest

from k1 import cli_reference as ref

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "docs" / "results.md").read_text()
RESULTS_LOOP = (ROOT / "docs" / "results-loop.md").read_text()


def _tree():
    tree = ref.command_tree()
    missing = {"pool", "bridge", "loop"} - set(tree.commands)
    if missing:
        pytest.skip(f"the optional extras for k1 {', '.join(sorted(missing))} are not installed (setup installs them)")
    return tree


def shown_commands(text: str, spans: bool = True) -> list[str]:
    """`k1 …` lines of the fenced bash blocks and (with `spans`) the `k1 …` code spans of a markdown text."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        found += [line for line in block.splitlines() if re.search(r"(^|\s)k1 ", line)]
    if spans:
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        found += re.findall(r"`(k1 [^`]+)`", prose.replace("\n", " "))
    return found


def argv(line: str) -> list[str] | None:
    """A shell line → the arguments after `k1`; None for a line that shows a shape, not a command."""
    words = shlex.split(line, comments=True)
    while words and re.match(r"^[A-Z_0-9]+=", words[0]):  # VAR=value k1 ...
        words.pop(0)
    if not words or words[0] != "k1":
        return None
    words = words[1:]
    for stop in ("&", ">", "|", "&&", ";"):
        if stop in words:
            words = words[:words.index(stop)]
    if any(w in ("...", "…", "COMMAND", "--help") or w.endswith("…") for w in words):
        return None
    return words


def parse(tree, words: list[str], complete: bool = True):
    """→ (command path, click context) exactly as `k1 WORDS` would parse them, without running anything.
    `complete=False` (a command named in prose, e.g. `k1 explain`) lets required options be absent."""
    cmd, path = tree, ["k1"]
    while words and ref._is_group(cmd) and words[0] in cmd.commands:
        cmd = cmd.commands[words[0]]
        path.append(words.pop(0))
    return " ".join(path), cmd.make_context(" ".join(path), list(words), resilient_parsing=not complete)


def test_every_k1_command_in_the_readme_parses():
    tree = _tree()
    blocks = [line for line in shown_commands(README, spans=False) if argv(line) is not None]
    named = [line for line in shown_commands(README) if argv(line) is not None and line not in blocks]
    assert len(blocks) > 20 and len(named) > 10  # the quick start, the tour and the results
    for lines, complete in ((blocks, True), (named, False)):
        for line in lines:
            path, ctx = parse(tree, argv(line), complete)
            assert not ctx.args, f"`{line.strip()}`: {path} has no command {ctx.args}"
            if complete:
                try:
                    parse(tree, argv(line))
                except Exception as e:  # typer's own click: a usage error names what is wrong
                    pytest.fail(f"README command `{line.strip()}` does not parse: {e}")


def _params(line: str) -> dict:
    assert line in README.replace("\n", " ") or line in README, f"the README no longer shows `{line}`"
    return parse(_tree(), argv(line))[1].params


def test_the_loop_figure_command_runs_with_the_measured_settings():
    """README: `k1 loop run --target smollm2 --tasks arithmetic:d4 …` → 18.9 % → 28.9 % (docs/results-loop.md,
    measured with --n-train 30 --n-heldout 30 --samples 4 --seeds 0,1,2)."""
    from k1.selflearn.cli import loop_config

    shown = next(c for c in shown_commands(README) if c.startswith("k1 loop run "))
    measured = next(line for line in shown_commands(RESULTS_LOOP)
                    if "--tasks arithmetic:d4" in line and line.startswith("k1 loop run --target smollm2"))
    keep = ("config", "target", "tasks", "method", "seeds", "n_train", "n_heldout", "samples")

    def cfg(line):
        p = parse(_tree(), argv(line))[1].params
        return loop_config(**{k: p[k] for k in keep}).model_dump()

    assert cfg(shown) == cfg(measured)
    assert "18.9 % ± 5.1 % to 28.9 % ± 5.1 %" in README.replace("\n", " ")


def test_the_compare_figures_commands_run_with_the_settings_the_readme_states():
    from k1.engine.config import load_config

    assert _params("k1 compare")["quick"] is False
    cfg = load_config(None, preset="default")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.model.context, cfg.train.seed) == (250, 16, 64, 1337)
    assert list(cfg.model.branching) == [4, 3, 2] and 1 + 4 + 12 + 24 == 41
    assert "250 steps of batch 16 × context 64" in README.replace("\n", " ") and "41 agents" in README
    assert _params("k1 compare --quick")["quick"] is True
    small = load_config(None, preset="small")
    assert (small.model.width, small.train.steps, small.train.batch_size) == (48, 120, 8)
    assert "width 48, 120 steps, batch 8" in RESULTS


def test_the_continual_figures_commands_run_with_the_settings_the_readme_states():
    from k1.experiments.continual_command import SETTINGS
    from k1.experiments.strategies import QUICK_STRATEGIES

    p = _params("k1 continual --quick --seeds 8 --no-specialize --strategies k1-attribution,random-path")
    assert p["quick"] and p["seeds"] == 8 and p["strategies"] == "k1-attribution,random-path"
    assert len(QUICK_STRATEGIES) == 7 and SETTINGS["quick"][1] == 40 and SETTINGS["default"][1] == 130
    assert "7 strategies, 40 steps per domain, 1 seed" in README.replace("\n", " ")


def test_the_pool_figures_commands_state_what_the_code_prints():
    from k1.pool.route.taskclass import HELD_OUT

    assert len(HELD_OUT) == 30
    assert "task classifier: 100.0% of 30 held-out prompts in the right class" in README
    assert _params("k1 bridge collab --tasks arithmetic:d2 --n 30")["n"] == 30


def test_every_bench_script_is_listed_and_every_bench_command_uses_its_real_flags():
    scripts = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    layout = README[README.index("bench/     one script per measured claim"):]
    assert [s for s in scripts if s not in layout] == []
    for text in (README, RESULTS):
        for script, args in re.findall(r"python bench/(\w+\.py)((?: --?[\w-]+(?: [\w.]+)?)*)", text):
            source = (ROOT / "bench" / script).read_text()
            for flag in re.findall(r"--[\w-]+", args):
                assert f'"{flag}"' in source, f"bench/{script} has no {flag} (shown as `python bench/{script}{args}`)"


def test_the_terms_table_defines_terms_the_readme_uses_and_only_those():
    body, terms = README.split("## Terms", 1)
    names = [n.strip() for row in re.findall(r"^\| ([^|]+) \|", terms, re.M)[1:] for n in row.split(",")]
    assert len(names) > 10
    unused = [n for n in names if not re.search(rf"\b{re.escape(n)}", body, re.I)]
    assert unused == [], f"the Terms table defines terms the README does not use: {unused}"
    for used in ("ATP", "calibration", "task class", "preset", "student", "DREAM", "bpb", "unigram entropy"):
        assert used in names, f"the README uses {used!r} without defining it in Terms"
