"""Ctrl-C in `spi`: "stopping" at once, a last line that fits the command, exit status 130, and no stray
``Exception ignored in ... WeakValueDictionary`` trace (an interrupt that lands in a weakref callback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import STOPPED, Interrupts, in_unraisable_context, spi

REPO = Path(__file__).resolve().parents[1]


def test_frames_of_weakref_callbacks_and_del_are_recognised():
    seen = {}

    class Tracked:
        def __del__(self):
            seen["del"] = sys._getframe()

    def callback():
        seen["finalize"] = sys._getframe()

    obj = Tracked()
    del obj
    other = type("Plain", (), {})()
    weakref.finalize(other, callback)
    del other
    assert in_unraisable_context(seen["del"]) and in_unraisable_context(seen["finalize"])
    assert not in_unraisable_context(sys._getframe())
    seen.clear()  # frames hold references


_SCRIPT = textwrap.dedent("""
    import signal, sys, time, weakref
    from cli.main import Interrupts

    class Obj:
        pass

    def callback():  # a weakref callback run by the garbage collector; Ctrl-C lands here
        signal.raise_signal(signal.SIGINT)
        sum(range(1000))

    with Interrupts() if sys.argv[1] == "spi" else open(__file__):
        o = Obj()
        weakref.finalize(o, callback)
        try:
            del o
            time.sleep(1.5)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted")
""")


@pytest.mark.parametrize("handler", ["spi", "python"])
def test_a_ctrl_c_inside_a_weakref_callback_is_not_lost(tmp_path, handler):
    """Python's own handler raises inside the callback: 'Exception ignored in ...', and the program goes on.
    The handler of `spi` delivers the interrupt again once the callback has returned."""
    script = tmp_path / "s.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(script), handler], capture_output=True, text=True, env=env, timeout=60)
    if handler == "python":  # the failure this guards against
        assert res.stdout.strip() == "not interrupted" and "Exception ignored in" in res.stderr
    else:
        assert res.stdout.strip() == "interrupted", res.stderr
        assert "Exception ignored" not in res.stderr and "Traceback" not in res.stderr
        assert res.stderr.strip() == "stopping (Ctrl-C): finishing cleanly, keeping what is done"


def test_the_handler_is_put_back_after_a_command():
    before = signal.getsignal(signal.SIGINT)
    with Interrupts() as handler:
        assert signal.getsignal(signal.SIGINT) == handler.handle
    assert signal.getsignal(signal.SIGINT) == before


@pytest.mark.parametrize(("name", "argv"), [("train", ["train", "--data", "x.h5", "--out", "run"]),
                                            ("bench", ["bench", "--default"])])
def test_the_last_line_fits_the_command(tmp_path, monkeypatch, name, argv):
    import spinet.speed
    import spinet.train

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(spinet.train, "run_training", interrupted)  # what spi train runs
    monkeypatch.setattr(spinet.speed, "default_bundle", interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.h5").write_bytes(b"")
    res = CliRunner().invoke(spi, argv)
    assert res.exit_code == 130, res.output
    assert res.stderr.strip().splitlines()[-1] == STOPPED.get(name, "stopped")
    assert "--resume" not in res.stderr or "--resume" in " ".join(p.opts[0] for p in _params(name))


def _params(name):
    import importlib

    from cli.main import SUBCOMMANDS

    return importlib.import_module(SUBCOMMANDS[name][0]).command.params


def test_every_resume_hint_names_an_option_the_command_has():
    for name, line in STOPPED.items():
        if "--resume" in line:
            assert any("--resume" in p.opts for p in _params(name)), name


@pytest.mark.slow
def test_ctrl_c_during_a_run_with_workers(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the process group, the worker processes included) during `spi simulate
    --workers 2`: "stopping" within a second, then the shards kept for --resume, status 130, no trace."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text("shots: 2000\nbeam: {photon_energy: 1.6 keV, pulse_energy: 0.4 mJ}\n"
                        "detector: {preset: square, n_pixels: 128, pixel_size: 400 um, distance: 0.12 m}\n"
                        "particles: [{shape: sphere, radius: 25 nm}]\nhits: balanced\noutput: {shard_size: 4}\n")
    out = tmp_path / "d.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "cli", "simulate", str(manifest), "-o", str(out), "-q",
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "d.h5.parts").glob("shard-*.h5")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        first = proc.stderr.readline()
        waited = time.monotonic() - t0
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert first.strip() == "stopping (Ctrl-C): finishing cleanly, keeping what is done" and waited < 2.0
    lines = rest.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1, rest
    assert lines[0].startswith(f"interrupted: {out} not written; ") and "--resume" in lines[0]
    assert not out.exists()
