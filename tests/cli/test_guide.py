"""docs/guide.md's command reference is generated from the CLI (`python -m k1.cli_reference --write`): these
tests fail when the guide and the command line disagree, and when the help formatter eats a bracketed word
(`k1 pool add --help` once printed `pip install -e '.'`, the `[gemma]` taken for markup)."""

import re

import pytest
from typer.testing import CliRunner

from k1 import cli_reference as ref
from k1.cli import app


def _tree():
    tree = ref.command_tree()
    missing = {"pool", "bridge", "loop"} - set(tree.commands)
    if missing:
        pytest.skip(f"the optional extras for k1 {', '.join(sorted(missing))} are not installed (setup installs them)")
    return tree


def test_the_guide_holds_the_command_reference_the_cli_generates():
    _tree()
    guide = ref.GUIDE.read_text()
    block = guide[guide.index(ref.BEGIN):guide.index(ref.END) + len(ref.END)]
    assert block == ref.reference(), "docs/guide.md is stale: run `python -m k1.cli_reference --write`"


def test_every_command_is_in_the_reference():
    text = ref.reference()
    for path, _ in ref.walk(_tree()):
        assert f"`{' '.join(path)}`" in text


def test_help_shows_every_bracketed_word_it_was_given():
    runner = CliRunner()
    for path, cmd in ref.walk(_tree()):
        written = " ".join([ref.plain(cmd.help)] + [ref.plain(getattr(p, "help", None)) for p in cmd.params])
        shown = runner.invoke(app, [*path[1:], "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"}).output
        for word in re.findall(r"\[[^\]\s]+\]", written):
            assert word in shown, f"`{' '.join(path)} --help` lost {word} (escape it as \\{word} for rich help)"
