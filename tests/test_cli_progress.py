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


def test_heartbeat_writes_lines_while_nothing_advances():
    """A long step (training a model) still gets a plain line every ``every_s``: 0.05 s here, 0.6 s of silence."""
    import time

    out = io.StringIO()
    with Progress("training", 5, unit="steps", stream=out, every_s=0.05, heartbeat=True):
        time.sleep(0.6)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) >= 6  # start, at least 4 heartbeats (0.6 s / (0.05 s + up to 0.0125 s)), end
    assert all(line.startswith("training: 0/5 steps") for line in lines)
    without = io.StringIO()
    with Progress("training", 5, unit="steps", stream=without, every_s=0.05):
        time.sleep(0.3)
    assert len(without.getvalue().strip().splitlines()) == 2  # no heartbeat: the start and the end only


def test_evaluate_progress_follows_the_runner_without_a_line_per_step():
    """spi evaluate's callback: descriptions change without a line each, steps advance the count, and the heartbeat
    writes the current description while a step runs."""
    import time

    from cli.evaluate import study_step

    out = io.StringIO()
    with Progress("starting", 3, unit="steps", stream=out, every_s=0.05, heartbeat=True) as bar:
        step = study_step(bar)
        step("simulating train", 0)
        step("simulated train", 1)
        step("training siamese on sim (seed 0)", 0)
        time.sleep(0.3)
        step("trained", 2)
    lines = out.getvalue().strip().splitlines()
    assert any(line.startswith("training siamese on sim (seed 0): 1/3 steps") for line in lines)
    assert not any(line.startswith("simulating train") for line in lines)  # a step of no time writes no line
    assert lines[-1].startswith("trained: 3/3 steps (100.0 %)") and "done after" in lines[-1]
