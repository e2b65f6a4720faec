"""`spi simulate` and `spi show` end to end, in-process, with their one-line errors."""

from __future__ import annotations

import json

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
    import spisim.generate

    monkeypatch.setattr(spisim.generate, "cuda_available", lambda: False)
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
