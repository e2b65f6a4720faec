"""`spi simulate` and `spi show` end to end, in-process, with their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import spi

SMALL = """
shots: 9
beam: {photon_energy: 1.6 keV, pulse_energy: 0.4 mJ}
detector: {preset: square, n_pixels: 20, pixel_size: 400 um, distance: 0.12 m}
particles: [{shape: sphere, radius: 25 nm}]
hits: balanced
output: {shard_size: 4}
"""


def _run(*args):
    return CliRunner().invoke(spi, [str(a) for a in args], catch_exceptions=False)


def test_simulate_a_manifest_with_overrides(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(SMALL)
    out = tmp_path / "d.h5"
    res = _run("simulate", manifest, "-o", out, "--shots", 6, "--seed", 5, "--compression", "lz4", "-q")
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 6 shots from {manifest}" in res.output
    with h5py.File(out) as f:
        assert f["/entry_1/data_1/data"].shape == (6, 1, 20, 20)
        assert f.attrs["spi_seed"] == 5 and f.attrs["spi_manifest"] == SMALL
        assert json.loads(f.attrs["spi_overrides"]) == {"shots": 6, "seed": 5, "output": {"compression": "lz4"}}


@pytest.mark.slow
def test_default_runs_end_to_end_and_show_draws_it(tmp_path):
    out = tmp_path / "default.h5"
    res = _run("simulate", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        ht = f["/entry_1/labels/hit_type"][()]
        assert len(ht) == 100 and set(ht) == {0, 1, 2, 3}
        structures = json.loads(f["/entry_1/labels"].attrs["structures"])
        used = {structures[i] for i in f["/entry_1/labels/structure"][()].ravel() if i >= 0}
        assert {"sphere-35nm", "icosahedron-9nm", "spheroid-protein"} <= used
    png = tmp_path / "default.png"
    res = _run("show", out, "-o", png, "--per-class", 3)
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_show_a_file_without_geometry_or_labels(tmp_path):
    data = np.random.default_rng(0).poisson(2.0, (5, 30, 40)).astype(np.float32)
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f["/entry_1/data_1/data"] = data
    res = _run("show", tmp_path / "real.h5", "-o", tmp_path / "real.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "real.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SMALL.replace("photon_energy: 1.6 keV", "photon_enrgy: 1.6 keV"),
         "beam.photon_enrgy: unknown key (did you mean photon_energy?)"),
        (SMALL.replace("1.6 keV", "1.6 kg"), "beam.photon_energy: unit 'kg' is not a photon energy"),
        (SMALL.replace("radius: 25 nm", "radius: -25 nm"), "particles[0].radius must be > 0 nm"),
        (SMALL.replace("photon_energy: 1.6 keV", "photon_energy:"), "beam.photon_energy: missing value"),
        (SMALL.replace("pulse_energy: 0.4 mJ", "pulse_energy:"), "beam: give exactly one of pulse_energy"),
    ],
)
def test_manifest_errors_are_one_line(tmp_path, text, message):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    res = _run("simulate", manifest, "-o", tmp_path / "d.h5")
    assert res.exit_code == 1
    assert message in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "d.h5").exists()


def test_other_user_errors(tmp_path, monkeypatch):
    res = _run("simulate", tmp_path / "nope.yaml", "-o", tmp_path / "d.h5")
    assert res.exit_code == 1 and "no such manifest file" in res.output
    import spisim.backend

    monkeypatch.setattr(spisim.backend, "cupy_available", lambda: False)
    res = _run("simulate", "-o", tmp_path / "d.h5", "--device", "cuda")
    assert res.exit_code == 1 and res.output.strip() == (
        "Error: --device cuda: no CUDA GPU found (or CuPy is not installed: pip install cupy-cuda12x); "
        "use --device cpu")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(SMALL)
    assert _run("simulate", manifest, "-o", tmp_path / "d.h5", "-q").exit_code == 0
    res = _run("simulate", manifest, "-o", tmp_path / "d.h5")
    assert res.exit_code == 1 and "exists: use --overwrite to replace it" in res.output
    res = _run("show", tmp_path / "missing.h5", "-o", tmp_path / "x.png")
    assert res.exit_code == 1 and "no such file" in res.output


def test_help_lists_examples_and_options():
    res = _run("simulate", "--help")
    assert res.exit_code == 0
    for word in ("--workers", "--resume", "--device", "--scheduler", "--backend", "Example usage"):
        assert word in res.output
    assert "--per-class" in _run("show", "--help").output


# ---- a beamline scientist's bad inputs: one line, non-zero exit, nothing half-written ------------------


def _write(path, text):
    path.write_text(text)
    return path


def _broken_inputs(tmp_path, shared_data):
    """(name, argv, expected fragment of the one-line error) for inputs a user can get wrong."""
    structures, geometries = shared_data / "structures", shared_data / "geometries"
    atoms = [ln for ln in (structures / "1crn.pdb").read_text().splitlines() if ln.startswith("ATOM")]
    _write(tmp_path / "truncated.pdb", "\n".join(atoms[:40]) + "\n" + atoms[40][:30] + "\n")
    (tmp_path / "garbage.pdb").write_bytes(bytes(range(256)) * 8)
    _write(tmp_path / "unknown.pdb", "\n".join(ln[:76] + "Qz" for ln in atoms[:20]) + "\n")
    simple = (geometries / "crystfel_simple.geom").read_text()
    _write(tmp_path / "res0.geom", simple.replace("res = 13333.3", "res = 0"))
    _write(tmp_path / "behind.geom", simple.replace("clen = 50.0e-3", "clen = -50.0e-3"))
    _write(tmp_path / "noclen.geom", simple.replace("clen = 50.0e-3", ""))
    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(3000))
    (tmp_path / "outdir").mkdir()

    def manifest(name, particle="{shape: sphere, radius: 25 nm}", detector="{preset: square, n_pixels: 20}",
                 extra="", shots=3):
        text = (f"shots: {shots}\nhits: {{single: 1}}\nbeam: {{photon_energy: 1.6 keV, pulse_energy: 0.4 mJ}}\n"
                f"detector: {detector}\nparticles: [{particle}]\n{extra}")
        return _write(tmp_path / f"{name}.yaml", text)

    out = tmp_path / "out.h5"
    sim = ["simulate", "-q", "-o", out]
    return [
        ("truncated pdb", ["simulate", manifest("t", "{structure: truncated.pdb}"), *sim[1:]],
         "truncated.pdb: Problem in line 41"),
        ("binary pdb", ["simulate", manifest("g", "{structure: garbage.pdb}"), *sim[1:]],
         "garbage.pdb is binary, not a PDB or mmCIF text file"),
        ("unknown element", ["simulate", manifest("u", "{structure: unknown.pdb}"), *sim[1:]],
         "unknown element for atom 'N' of residue THR 1"),
        ("zero pixel size", ["simulate", manifest("r", detector="{geometry: res0.geom}"), *sim[1:]],
         "res0.geom: panel '0' has an impossible pixel size"),
        ("pixels behind the sample", ["simulate", manifest("b", detector="{geometry: behind.geom}"), *sim[1:]],
         "panels must lie downstream of the sample"),
        ("no camera length", ["simulate", manifest("n", detector="{geometry: noclen.geom}"), *sim[1:]],
         "noclen.geom has no clen line"),
        ("missing structure", ["simulate", manifest("m", "{structure: nowhere.pdb}"), *sim[1:]],
         "particles[0].structure: no such file 'nowhere.pdb'"),
        ("key typo", ["simulate", manifest("k", extra="mutli: {n_max: 3}\n"), *sim[1:]],
         "mutli: unknown key (did you mean multi?)"),
        ("wrong unit", ["simulate", _write(tmp_path / "w.yaml", manifest("w0").read_text().replace(
            "0.4 mJ", "1.6 kg")), *sim[1:]], "beam.pulse_energy: unit 'kg' is not a pulse energy"),
        ("negative shots", ["simulate", manifest("s", shots=-3), *sim[1:]], "shots must be >= 1, got -3"),
        ("key given twice", ["simulate", manifest("d", extra="shots: 4\n"), *sim[1:]],
         "key 'shots' is given twice (lines 1 and 6)"),
        ("n_min above n_max", ["simulate", manifest("x", extra="multi: {n_min: 4, n_max: 2}\n"), *sim[1:]],
         "multi.n_max must be >= n_min (4), got 2"),
        ("absurd radius", ["simulate", manifest("a", "{shape: sphere, radius: 2 m}"), *sim[1:]],
         "particles[0].radius must be <= 10000 nm"),
        ("empty output name", ["simulate", "-q", "-o", ""], "is not a file name"),
        ("output folder missing", ["simulate", "-q", "-o", tmp_path / "nofolder" / "x.h5"],
         "output folder"),
        ("show corrupt hdf5", ["show", tmp_path / "corrupt.h5", "-o", tmp_path / "x.png"],
         "corrupt.h5 is not a readable HDF5 file"),
        ("show bad picture suffix", ["show", tmp_path / "corrupt.h5", "-o", tmp_path / "x.txt"],
         "has suffix '.txt': use .png, .pdf or .svg"),
        ("show picture folder missing", ["show", tmp_path / "corrupt.h5", "-o", tmp_path / "no" / "x.png"],
         "output folder"),
        ("label corrupt hdf5", ["label", tmp_path / "corrupt.h5", "--no-browser"],
         "corrupt.h5 is not a readable HDF5 file"),
        ("label missing file", ["label", tmp_path / "none.h5", "--no-browser"], "no such file"),
    ]


def test_bad_inputs_give_one_clear_line(tmp_path, shared_data):
    for name, argv, fragment in _broken_inputs(tmp_path, shared_data):
        res = CliRunner().invoke(spi, [str(a) for a in argv], catch_exceptions=False)
        assert res.exit_code != 0, name
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, res.output)
        assert fragment in lines[0], (name, lines[0])
        leftovers = {p.name for p in tmp_path.iterdir()} & {"out.h5", "out.h5.parts", "x.png", "x.txt"}
        assert not leftovers, (name, leftovers)  # nothing half-written, no parts folder asking for --resume


def test_impossible_options_are_usage_errors(tmp_path):
    for argv, fragment in ((["simulate", "-o", tmp_path / "d.h5", "--shots", "-3"], "is not in the range x>=1"),
                           (["label", tmp_path / "d.h5", "--game", "--seed", "-1"], "is not in the range x>=0"),
                           (["simulate", "-o", tmp_path], "is a directory")):
        res = _run(*argv)
        assert res.exit_code == 2 and fragment in res.output and "Traceback" not in res.output


def test_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    import os

    import spisim.generate

    real_access = os.access
    monkeypatch.setattr(spisim.generate.os, "access",
                        lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    for argv in (["simulate", "-o", tmp_path / "ro" / "d.h5"], ["show", tmp_path / "any.h5", "-o",
                                                                  tmp_path / "ro" / "x.png"]):
        res = _run(*argv)
        assert res.exit_code == 1
        assert res.output.strip().startswith(f"Error: cannot write in output folder {tmp_path / 'ro'}: ")


def test_a_full_disk_while_writing_is_one_line(tmp_path, monkeypatch):
    import errno

    import spisim.generate

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(spisim.generate, "write_shard", full)
    manifest = _write(tmp_path / "m.yaml", SMALL)
    res = _run("simulate", manifest, "-o", tmp_path / "d.h5", "-q")
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: writing {tmp_path / 'd.h5'} failed: ") and res.output.count("\n") == 1
    assert "No space left on device" in res.output
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.parts").exists()


def test_show_writes_the_picture_whole_or_not_at_all(tmp_path, monkeypatch):
    import matplotlib.figure

    data = np.zeros((3, 1, 16, 16), np.float32)  # all zero: no positive value for a log axis
    with h5py.File(tmp_path / "zero.h5", "w") as f:
        f["/entry_1/data_1/data"] = data
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's 'Data has no positive values' must not appear
        res = _run("show", tmp_path / "zero.h5", "-o", tmp_path / "zero.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "zero.png").read_bytes()[:4] == b"\x89PNG"

    def broken_savefig(self, fname, **kw):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device", str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    res = _run("show", tmp_path / "zero.h5", "-o", tmp_path / "z2.png")
    assert res.exit_code == 1 and "No space left on device" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero.h5", "zero.png"]  # no temporary left


def test_help_documents_every_option_with_its_default():
    from cli.label import command as label
    from cli.show import command as show
    from cli.simulate import command as simulate

    for cmd in (simulate, show, label):
        for opt in cmd.params:
            if not isinstance(opt, click.Option) or opt.name == "help":
                continue
            assert opt.help and len(opt.help) > 10, (cmd.name, opt.name)
            given = opt.default is not None and "UNSET" not in repr(opt.default)  # click >= 8.3 has a sentinel
            has_default = given and not opt.is_flag and not opt.required
            if has_default:
                assert opt.show_default or "[default:" in opt.help, (cmd.name, opt.name)
    for name in ("shots", "seed", "compression"):  # no fixed default: the help says where it comes from
        opt = next(p for p in simulate.params if p.name == name)
        assert "[default: the manifest's" in opt.help


def test_warnings_are_printed_as_one_line():
    import warnings

    from spisim.errors import one_line_warnings

    saved = warnings.formatwarning
    try:
        one_line_warnings()
        text = warnings.formatwarning("geometry.geom: clen is read from a data file", UserWarning, "/x/y.py", 12,
                                      "return cls.from_crystfel(path)")
    finally:
        warnings.formatwarning = saved
    assert text == "warning: geometry.geom: clen is read from a data file\n"


def _wait_for(predicate, seconds):
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_ctrl_c_keeps_finished_shards_and_says_how_to_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    spi_exe = Path(sys.executable).with_name("spi")
    # 1200 shots on 128² pixels take several seconds even on a quiet machine, so SIGINT lands mid-run.
    manifest = _write(tmp_path / "m.yaml", SMALL.replace("shots: 9", "shots: 1200").replace(
        "shard_size: 4", "shard_size: 20").replace("n_pixels: 20", "n_pixels: 128"))
    out = tmp_path / "d.h5"
    proc = subprocess.Popen([str(spi_exe), "simulate", str(manifest), "-o", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert _wait_for(lambda: list((tmp_path / "d.h5.parts").glob("shard-*.h5")), 60), "no shard made"
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "interrupted: " in err and "finished shard" in err and "--resume" in err
    assert not out.exists()
    kept = len(list((tmp_path / "d.h5.parts").glob("shard-*.h5")))
    res = _run("simulate", manifest, "-o", out, "-q", "--resume")
    assert res.exit_code == 0, res.output
    assert f"{kept} shards reused" in res.output
    with h5py.File(out) as f:
        assert f["/entry_1/data_1/data"].shape[0] == 1200
