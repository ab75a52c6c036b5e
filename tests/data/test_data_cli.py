"""`k1 data build` / `k1 data info`, run through typer's test runner on the session's built cache."""

from __future__ import annotations

from typer.testing import CliRunner

from k1.data.cli import data_app
from k1.errors import DataError

runner = CliRunner()


def test_build_and_info_print_the_table(builtin_manifest):
    result = runner.invoke(data_app, ["build"])  # the cache is built: this only checks it
    assert result.exit_code == 0, result.output
    for word in ("prose", "code", "science", "CC BY-SA 4.0", "PSF"):
        assert word in result.output
    result = runner.invoke(data_app, ["info"])
    assert result.exit_code == 0 and "science" in result.output and "Wikipedia contributors" in result.output


def test_info_without_a_cache_raises_data_error(tmp_path):
    result = runner.invoke(data_app, ["info", "--cache-dir", str(tmp_path)])
    assert isinstance(result.exception, DataError) and "k1 data build" in str(result.exception)


def test_build_unknown_extra(tmp_path):
    result = runner.invoke(data_app, ["build", "--cache-dir", str(tmp_path), "--extra", "nope"])
    assert isinstance(result.exception, DataError)
