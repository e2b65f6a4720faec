"""The shared progress display: plain lines off a terminal, at least every so often, and a log file."""

from __future__ import annotations

import io

import pytest

from cli.progress import Progress


def test_plain_lines_when_not_a_terminal(tmp_path):
    out = io.StringIO()
    log = tmp_path / "run.log"
    with Progress("importing", 10, unit="frames", stream=out, log_file=log, every_s=0.0) as p:
        for _ in range(10):
            p.advance(1)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("importing: 0/10 frames (0.0 %)")
    assert "10/10 frames (100.0 %)" in lines[-1] and "done after" in lines[-1]
    assert len(lines) == 12  # start, one per advance (every_s = 0), end
    logged = log.read_text().strip().splitlines()
    assert len(logged) == 12 and logged[-1].split(" ", 1)[1] == lines[-1]


def test_plain_lines_are_rate_limited():
    out = io.StringIO()
    with Progress("simulating", 1000, stream=out, every_s=3600.0) as p:
        for _ in range(1000):
            p.advance(1)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 2  # the start and the end only


def test_interruption_is_reported_as_stopped():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), Progress("training", None, unit="epochs", stream=out) as p:
        p.advance(2)
        raise KeyboardInterrupt
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("training: 2 epochs") and "stopped after" in last


def test_quiet_writes_only_the_log(tmp_path):
    out = io.StringIO()
    log = tmp_path / "q.log"
    with Progress("x", 2, stream=out, quiet=True, log_file=log, every_s=0.0) as p:
        p.advance(2)
        p.say("a message")
    assert out.getvalue() == ""
    assert "a message" in log.read_text()
