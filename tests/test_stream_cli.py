"""``spi stream`` and ``spi serve`` as commands, in separate processes on loopback with random ports: stream against
the simulated beamline, a kill and a restart that resumes the log, Ctrl-C that flushes and summarises."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_stream import free_port, make_model

from cli.main import spi
from spinet.checkpoint import ModelBundle
from spinet.inference import build_support, classify_file
from spinet.synthetic import write_toy_dataset
from spisim.cxi import CXIReader
from spisim.labels import read_label_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream_cli")
    model = make_model(d / "model.pt")
    support = write_toy_dataset(d / "support.h5", 40, seed=31)
    data = write_toy_dataset(d / "data.h5", 120, seed=32)
    bundle = ModelBundle.load(model)
    sup = build_support(bundle, support, k=5, seed=0)
    classify_file(bundle, data, sup, rule="nearest", output=d / "ref.csv")
    ref = {int(r["index"]): r for r in csv.DictReader(open(d / "ref.csv"))}
    return {"dir": d, "model": model, "support": support, "data": data, "ref": ref}


def spi_process(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def stream_args(files, source: str, log: Path, *extra: str) -> list[str]:
    return ["stream", str(files["model"]), "--source", source, "--support", f"{files['support']},k=5",
            "--rule", "nearest", "--geometry", str(files["data"]), "-o", str(log), "--threads", "1", *extra]


def wait_rows(path: Path, n: int, timeout: float = 60.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            rows = path.read_text().count("\n") - 1
            if rows >= n:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} rows in {timeout} s")


def check_rows(files, rows: list[dict]) -> None:
    """Labels and true labels as batch classification gave them (ties of untrained embeddings aside)."""
    for r in rows:
        want = files["ref"][int(r["index"])]
        assert r["truth"] == want["truth"]
        d = sorted(float(want[k]) for k in want if k.startswith("distance_"))
        if d[1] - d[0] > 1e-4:
            assert r["label"] == want["label"], r


def test_commands_are_registered_and_bad_sources_are_one_line_errors(files):
    out = CliRunner().invoke(spi, ["--help"]).output
    assert "stream " in out and "serve " in out
    res = CliRunner().invoke(spi, stream_args(files, "http://nowhere:1", files["dir"] / "x.csv"))
    assert res.exit_code == 1 and "expected karabo://tcp://HOST:PORT" in res.output and "Traceback" not in res.output


def test_support_is_repeatable_as_in_classify(files, tmp_path):
    """Two --support files with their own labels and k (one parser, spinet.inference.SupportSpec.parse): the classes
    are the union; --support-labels goes with exactly one --support."""
    labels = tmp_path / "binary.csv"
    with CXIReader(files["data"]) as r:
        codes = r.hit_type[:40]
    labels.write_text("index,label\n" + "".join(f"{i},{'single' if c == 1 else 'not_single'}\n"
                                                for i, c in enumerate(codes)))
    log = tmp_path / "log.csv"
    args = ["stream", str(files["model"]), "--source", f"replay:{files['data']}", "--support",
            f"{files['support']},k=3", "--support", f"{files['data']},labels={labels},k=2,seed=4", "--max-shots", "8",
            "-o", str(log), "--threads", "1"]
    res = CliRunner().invoke(spi, args)
    assert res.exit_code == 0, res.output
    assert res.stderr.count("support from ") == 2, res.stderr
    assert "not_single 2" in res.stderr and "multi 3" in res.stderr
    header = log.read_text().splitlines()[0]
    assert "not_single" in header and "multi" in header, header
    res = CliRunner().invoke(spi, [*args, "--support-labels", str(labels)])
    assert res.exit_code == 2 and "--support-labels goes with exactly one --support" in res.output


@pytest.mark.slow
def test_stream_against_spi_serve_reports_live_accuracy(files):
    log = files["dir"] / "live.csv"
    veto = files["dir"] / "veto.csv"
    port = free_port()
    stream = spi_process(*stream_args(files, f"karabo://tcp://127.0.0.1:{port}", log, "--max-shots", "60",
                                      "--veto-out", str(veto), "--status-every", "0.5", "--duration", "60"))
    serve = spi_process("serve", "--from", str(files["data"]), "--port", str(port), "--rate", "60", "--pulses", "2",
                        "--dtype", "int32", "--repeat", "0")
    try:
        out, err = stream.communicate(timeout=90)
    finally:
        serve.send_signal(signal.SIGINT)
        s_out, s_err = serve.communicate(timeout=30)
    assert stream.returncode == 0, err
    assert serve.returncode == 0, s_err
    assert re.search(r"serving 120 shots of .* on tcp://0.0.0.0:\d+ \(REP\), 60 shots/s", s_err)
    assert re.search(r"served \d+ shots in \d+ trains", s_out)
    m = re.search(r"stream ended \(shot limit\).*classified (\d+), dropped 0, malformed 0.*accuracy ([\d.]+)", out)
    assert m, out
    rows = list(csv.DictReader(open(log)))
    assert len(rows) == int(m.group(1)) >= 60
    check_rows(files, rows)
    assert all(int(r["pulse_id"]) in (0, 1) and int(r["train_id"]) >= 1_000_000 for r in rows)
    acc = sum(r["label"] == r["truth"] for r in rows) / len(rows)
    assert float(m.group(2)) == pytest.approx(acc, abs=1e-3)
    assert "receiving, received" in err  # plain status lines (not a terminal)
    singles = [(r["index"], r["train_id"], r["pulse_id"]) for r in rows if r["label"] == "single"]
    assert [tuple(v.values()) for v in csv.DictReader(open(veto))] == singles


@pytest.mark.slow
def test_stream_killed_and_restarted_resumes_its_log_and_ctrl_c_flushes(files):
    log = files["dir"] / "replay.csv"
    first = spi_process(*stream_args(files, f"replay:{files['data']}?rate=40", log))
    try:
        before = wait_rows(log, 12)
    finally:
        first.kill()  # SIGKILL: no chance to flush anything
        first.communicate(timeout=30)
    second = spi_process(*stream_args(files, f"replay:{files['data']}", log))
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    m = re.search(r"stream ended \(source ended\).*received 120, classified (\d+), dropped 0, malformed 0, "
                  r"skipped (\d+)", out)
    assert m, out
    classified, skipped = int(m.group(1)), int(m.group(2))
    assert skipped >= before and classified + skipped == 120
    assert f"resuming {log}: {skipped} shots already logged" in err
    rows = list(csv.DictReader(open(log)))
    assert sorted(int(r["index"]) for r in rows) == list(range(120))  # every shot exactly once
    check_rows(files, rows)
    labels = read_label_file(log, n_shots=120)  # the log is a label file ...
    assert labels == {int(r["index"]): r["label"] for r in rows}
    res = CliRunner().invoke(spi, ["classify", str(files["model"]), str(files["data"]), "--support", str(files["data"]),
                                   "--support-labels", str(log), "-k", "3"])  # ... that spi classify reads
    assert res.exit_code == 0, res.output

    # Ctrl-C: the batch in hand is finished, the log flushed, a summary printed, exit status 0
    log2 = files["dir"] / "sigint.csv"
    third = spi_process(*stream_args(files, f"replay:{files['data']}?rate=30", log2, "--max-batch", "4"))
    wait_rows(log2, 8)
    third.send_signal(signal.SIGINT)
    out, err = third.communicate(timeout=30)
    assert third.returncode == 0, err
    m = re.search(r"stream ended \(stop\).*classified (\d+)", out)
    assert m, out
    assert len(list(csv.DictReader(open(log2)))) == int(m.group(1)) < 120
