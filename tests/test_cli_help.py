"""Every help text of `spi` reads as plain text: no reStructuredText markup such as ``x`` or :func:`x`."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from cli.main import SUBCOMMANDS, spi


@pytest.mark.parametrize("argv", [[], *([name] for name in SUBCOMMANDS)])
def test_help_has_no_restructuredtext_markup(argv):
    res = CliRunner().invoke(spi, [*argv, "--help"])
    assert res.exit_code == 0, res.output
    assert "``" not in res.output, [ln for ln in res.output.splitlines() if "``" in ln]
    assert not re.search(r":(func|class|meth|data|mod):`", res.output)
