"""The `spi` command group: help text lists every subcommand; user errors are one line."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cli.main import SUBCOMMANDS, spi


def test_help_lists_all_subcommands():
    result = CliRunner().invoke(spi, ["--help"])
    assert result.exit_code == 0
    for name in ["simulate", "show", "train", "classify", "evaluate", "label", "bench"]:
        assert name in SUBCOMMANDS
        assert f"  {name} " in result.output


def test_every_subcommand_has_full_help():
    for name in SUBCOMMANDS:
        result = CliRunner().invoke(spi, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: spi" in result.output and len(result.output.splitlines()) > 5, name


def test_unknown_subcommand_fails():
    result = CliRunner().invoke(spi, ["frobnicate"])
    assert result.exit_code != 0


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "spi" in out.stdout
