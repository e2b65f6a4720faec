"""spi match end to end on runs made here with known physics: fitted settings, the manifest, the report."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import spi
from spisim.constants import EV, wavelength_angstrom
from spisim.detector import Detector
from spisim.manifest import load_manifest
from spisim.particles import UniformSphere
from spisim.photons import expected_photons
from spisim.realrun.match import MatchOptions, companion_path, match_run, write_match

ENERGY = 1600.0
RADIUS_NM = 35.0


def _write_run(path, *, n_single=12, n_blob=4, n_empty=6, background=0.05, seed=0, labels=False):
    """A run in photons on a 96 x 96 detector of 600 um pixels at 0.58 m: sphere hits of radius 35 nm +- 3 %,
    fluences from a Gaussian focus sampled over a disk, featureless blobs (not single) and empty frames."""
    rng = np.random.default_rng(seed)
    det = Detector.square(96, 600e-6, 0.58)
    mask = np.zeros(det.shape, bool)
    mask[0, 47:49, :] = True
    det = det.with_mask(mask)
    q = det.q_vectors(wavelength_angstrom(ENERGY))
    qa = np.linalg.norm(q, axis=-1)
    omega, pol = det.solid_angles(), det.polarization_factor("horizontal")
    frames, names, truth_r, truth_j = [], [], [], []
    j0, w, h = 3e23, 1.5e-6, 1.0e-6
    sigma = w / (2 * math.sqrt(2 * math.log(2)))
    for _ in range(n_single):
        r = RADIUS_NM * (1 + 0.03 * rng.standard_normal())
        j = j0 * math.exp(-(h * math.sqrt(rng.random())) ** 2 / (2 * sigma**2))
        f = UniformSphere(r * 10, 0.43).form_factor(q.reshape(-1, 3)).reshape(det.shape)
        frames.append(rng.poisson(expected_photons(f, j, omega, pol) + background))
        names.append("single")
        truth_r.append(r)
        truth_j.append(j)
    for _ in range(n_blob):
        lam = 3e3 * omega / omega.max() / (1 + (qa / 0.003) ** 2) ** 2 + background
        frames.append(rng.poisson(lam))
        names.append("not_single")
    for _ in range(n_empty):
        frames.append(rng.poisson(np.full(det.shape, background)))
        names.append("not_single")
    frames = np.array(frames, dtype=np.float32)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("/entry_1/data_1/data", data=frames)
        d.attrs["units"] = "photons"
        f["/entry_1/instrument_1/detector_1/pixel_position"] = det.pixel_positions
        f["/entry_1/instrument_1/detector_1/mask"] = det.mask.astype(np.uint8)
        f["/entry_1/instrument_1/source_1/energy"] = ENERGY * EV
        if labels:
            from spisim.cxi import LABEL_CLASSES

            codes = np.array([LABEL_CLASSES.index(n) for n in names], dtype=np.int8)
            ds = f.create_dataset("/entry_1/labels/hit_type", data=codes)
            import json

            ds.attrs["names"] = json.dumps(list(LABEL_CLASSES))
    return np.array(truth_r), np.array(truth_j), names


def test_match_recovers_size_and_photons_and_finds_the_single_hits(tmp_path):
    run = tmp_path / "run.cxi"
    radii, fluences, names = _write_run(run)
    result = match_run(run, MatchOptions(aspect_sd=0.0))
    single = result.analysis.indices[result.single]
    assert set(single) == {i for i, n in enumerate(names) if n == "single"}
    assert result.single_source == "fit"
    assert result.radius * 1e9 == pytest.approx(radii.mean(), rel=0.01)
    assert result.size_sd == pytest.approx(radii.std(ddof=1) / radii.mean(), abs=0.01)
    # the empty frames hold a tenth of a hit's photons at most: the background comes from them
    assert "weakest frames" in result.background_method
    assert result.background_photons == pytest.approx(0.05 * result.analysis.valid.sum(), rel=0.1)
    assert result.peak_fluence == pytest.approx(fluences.max(), rel=0.25)


def test_matched_manifest_simulates_shots_like_the_run(tmp_path):
    run = tmp_path / "run.cxi"
    _write_run(run, n_single=16, seed=1)
    result = match_run(run, MatchOptions(aspect_sd=0.0))
    manifest, companion = write_match(result, tmp_path / "matched.yaml")
    assert companion == companion_path(manifest) and companion.is_file()
    m = load_manifest(manifest)
    assert m.spec.particles[0].radius == pytest.approx(result.radius, rel=1e-3)
    metrics = __import__("spisim.realrun.match", fromlist=["write_report"]).write_report(
        result, manifest, tmp_path / "report", shots=40)
    assert metrics["radius_ratio"] == pytest.approx(1.0, abs=0.02)  # ring positions within 2 %
    assert metrics["photons_ratio"] == pytest.approx(1.0, abs=0.25)
    for name in ("report.md", "metrics.json", "montage.png", "profiles.png", "distributions.png"):
        assert (tmp_path / "report" / name).is_file()


def test_labels_choose_the_single_hits(tmp_path):
    run = tmp_path / "run.cxi"
    _write_run(run, n_single=6, labels=True, seed=2)
    result = match_run(run, MatchOptions(aspect_sd=0.0))
    assert result.single_source == "labels" and len(result.single) == 6


def test_aspect_calibration_makes_rings_shallower_when_the_run_is(tmp_path):
    from spisim.realrun.match import calibrate_aspect

    run = tmp_path / "run.cxi"
    _write_run(run, n_single=8, seed=3)
    result = match_run(run, MatchOptions(aspect_sd=0.0, calibration_shots=24))
    sd, real_depth, sim_depth = calibrate_aspect(result)
    # spheres made the run: no stretch is needed to match its ring depth
    assert sd <= 0.1
    assert real_depth < 0.3


def test_cli_match_writes_manifest_and_refuses_to_overwrite(tmp_path):
    run = tmp_path / "run.cxi"
    _write_run(run, seed=4)
    out = tmp_path / "m.yaml"
    args = ["match", str(run), "-o", str(out), "--aspect-sd", "0", "-q"]
    res = CliRunner().invoke(spi, args)
    assert res.exit_code == 0, res.output
    assert "particle radius: 3" in res.output and out.is_file() and companion_path(out).is_file()
    res = CliRunner().invoke(spi, args)
    assert res.exit_code != 0 and "--overwrite" in res.output


@pytest.mark.parametrize("problem", ["adu", "no_energy", "no_geometry", "missing"])
def test_cli_match_bad_runs_are_one_line_errors(tmp_path, problem):
    run = tmp_path / "run.cxi"
    _write_run(run, n_single=3, n_blob=0, n_empty=0, seed=5)
    with h5py.File(run, "a") as f:
        if problem == "adu":
            f["/entry_1/data_1/data"].attrs["units"] = "adu"
        elif problem == "no_energy":
            del f["/entry_1/instrument_1/source_1/energy"]
        elif problem == "no_geometry":
            del f["/entry_1/instrument_1/detector_1/pixel_position"]
    target = tmp_path / "nothing.cxi" if problem == "missing" else run
    res = CliRunner().invoke(spi, ["match", str(target), "-o", str(tmp_path / "m.yaml"), "-q"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.yaml").exists()


# ------------------------------------------------------------------------------------ the shared real frames


@pytest.mark.slow
def test_real_frames_import_and_match_reproduce_rings_and_photons(tmp_path, shared_data):
    """The 10 real pnCCD frames (ADU, two masks, one inf pixel): import, match, and a fresh simulation of the
    matched manifest puts its rings within 2 % and its median photons within 20 % of the real single-like hits."""
    from spisim.cxi import CXIReader
    from spisim.realrun.match import simulate_single
    from spisim.realrun.profiles import photon_totals

    real = shared_data / "real" / "spipy_pnccd_adu"
    run = tmp_path / "real.cxi"
    res = CliRunner().invoke(spi, ["import", str(real / "test_adu.npy"), "-o", str(run), "--gain", "auto",
                                   "--mask", str(real / "mask.npy"), "--mask", str(real / "artifacts.npy"),
                                   "--pixel-size", "300um", "--distance", "0.7m", "--energy", "1.6keV",
                                   "--centre", "auto", "-q"])
    assert res.exit_code == 0, res.output
    with CXIReader(run) as r:
        assert r.units == "photons" and 6.0 < r.gain["adu_per_photon"] < 9.0
        assert r.mask[0, 121, 123]  # the pixel that is inf in frames 3 and 4
        assert np.all(np.isfinite(r.frames(np.arange(10))))
    result = match_run(run, MatchOptions(calibration_shots=96))
    a = result.analysis
    assert 4 <= len(result.single) <= 7 and result.single_source == "fit"
    frames = simulate_single(result, 200, seed=12345)  # shots none of the calibrations saw
    fits = __import__("spisim.realrun.fit", fromlist=["fit_spheres"]).fit_spheres(
        a.bins.profiles(frames), a.bins, radius_range=(0.7 * result.radius * 1e10, 1.4 * result.radius * 1e10),
        pixel_noise=a.read_noise)
    ring = np.median([f.radius for f in fits]) / np.median(a.radii[result.single])
    photons = np.median(photon_totals(frames, a.valid)) / np.median(a.totals[result.single])
    assert ring == pytest.approx(1.0, abs=0.02)
    assert photons == pytest.approx(1.0, abs=0.2)


@pytest.mark.slow
def test_round_trip_recovers_size_photons_background_and_centre(tmp_path):
    """Simulate with a known size distribution, fluence, background and beam centre; strip the geometry; import
    with --centre auto and match: size within 3 %, photons within 15 %, centre within 0.5 pixel."""
    from spisim.cxi import CXIReader
    from spisim.realrun.match import simulate_single
    from spisim.realrun.profiles import photon_totals

    pixel, distance, n = 600e-6, 0.58, 128
    dx, dy = 3.3 * pixel, -2.6 * pixel  # the detector moves: the beam lands off its centre
    det = Detector.square(n, pixel, distance).shifted(dx, dy, 0.0)
    geometry = tmp_path / "geometry.h5"
    with h5py.File(geometry, "w") as f:
        f["/entry_1/instrument_1/detector_1/pixel_position"] = det.pixel_positions
    manifest = tmp_path / "truth.yaml"
    manifest.write_text(f"""seed: 5
shots: 240
beam: {{photon_energy: 1.6 keV, pulse_energy: 0.4 mJ, focus_diameter: 1.5 um, hit_radius: 0.9 um}}
detector: {{geometry: {geometry.name}}}
particles: [{{name: s, shape: sphere, radius: 30 nm, size_sd: 0.04}}]
hits: {{no_hit: 0.4, single: 0.45, multi: 0.1, unintended: 0.05}}
multi: {{placement: aggregate}}
noise: {{background: {{kind: flat, photons: 2000}}, poisson: true}}
""")
    sim_out = tmp_path / "truth.h5"
    res = CliRunner().invoke(spi, ["simulate", str(manifest), "-o", str(sim_out), "-q"])
    assert res.exit_code == 0, res.output
    with CXIReader(sim_out) as r:
        frames = r.frames(np.arange(len(r)))
        truth = r.hit_type
        true_single_photons = np.median(photon_totals(frames[truth == 1], ~r.mask))
    np.save(tmp_path / "frames.npy", frames[:, 0])
    run = tmp_path / "run.cxi"
    res = CliRunner().invoke(spi, ["import", str(tmp_path / "frames.npy"), "-o", str(run), "--pixel-size", "600um",
                                   "--distance", "0.58m", "--energy", "1.6keV", "--centre", "auto", "-q"])
    assert res.exit_code == 0, res.output
    with CXIReader(run) as r:
        fitted = r.import_provenance["centre"]
    true_x, true_y = (n - 1) / 2 - dx / pixel, (n - 1) / 2 + dy / pixel
    assert abs(fitted["x_px"] - true_x) < 0.5 and abs(fitted["y_px"] - true_y) < 0.5
    result = match_run(run, MatchOptions(calibration_shots=96))
    assert result.radius * 1e9 == pytest.approx(30.0, rel=0.03)
    assert result.size_sd == pytest.approx(0.04, abs=0.02)
    assert result.background_photons == pytest.approx(2000, rel=0.15)
    sim = simulate_single(result, 200, seed=99)
    assert np.median(photon_totals(sim, result.analysis.valid)) == pytest.approx(true_single_photons, rel=0.15)


def test_match_moves_a_detector_whose_beam_centre_is_off(tmp_path):
    run = tmp_path / "run.cxi"
    _write_run(run, n_single=10, n_blob=0, n_empty=4, seed=6)
    with h5py.File(run, "a") as f:  # the file's geometry puts the beam 3 px left and 2 px up of where it was
        pos = f["/entry_1/instrument_1/detector_1/pixel_position"]
        pos[...] = pos[()] + np.array([3 * 600e-6, -2 * 600e-6, 0.0])
    result = match_run(run, MatchOptions(aspect_sd=0.0))
    assert any("is moved there" in n for n in result.notes)
    a = result.analysis
    row, col = a.beam_pixel
    assert abs(row - 47.5) < 0.3 and abs(col - 47.5) < 0.3  # the true centre of the 96 x 96 frames
    assert result.radius * 1e9 == pytest.approx(RADIUS_NM, rel=0.02)


def test_profiles_reduced_on_the_fly_equal_those_of_the_held_frames(tmp_path):
    from spisim.realrun.match import simulate_profiles, simulate_single
    from spisim.realrun.profiles import photon_totals

    run = tmp_path / "run.cxi"
    _write_run(run, n_single=6, n_blob=0, n_empty=3, seed=7)
    result = match_run(run, MatchOptions(aspect_sd=0.1, calibrate=False))
    frames = simulate_single(result, 7, seed=3)
    reduced = simulate_profiles(result, 7, seed=3, keep=2)
    bins = result.analysis.bins
    assert np.array_equal(reduced.profiles, bins.profiles(frames))
    assert np.array_equal(reduced.totals, photon_totals(frames, result.analysis.valid))
    assert reduced.examples.shape == (2, *frames.shape[1:]) and np.array_equal(reduced.examples[0], frames[0])


@pytest.mark.slow
def test_a_named_structure_is_scaled_so_that_its_rings_fall_where_the_run_has_them(tmp_path, shared_data):
    from spisim.realrun.fit import fit_spheres
    from spisim.realrun.match import simulate_profiles

    run = tmp_path / "run.cxi"
    _write_run(run, n_single=8, n_blob=0, n_empty=4, seed=8)
    result = match_run(run, MatchOptions(shape="2buk", aspect_sd=0.0, calibration_shots=32))
    assert "structure: 2buk" in result.manifest_text and "scale:" in result.manifest_text
    assert 3.0 < result.radius * 1e10 / result.structure_radius < 4.5  # a 35 nm sphere from the ~10 nm STNV capsid
    a = result.analysis
    sim = simulate_profiles(result, 24, seed=77)
    fits = fit_spheres(sim.profiles, a.bins, radius_range=(200.0, 600.0), pixel_noise=a.read_noise)
    ring = np.median([f.radius for f in fits]) / np.median(a.radii[result.single])
    assert ring == pytest.approx(1.0, abs=0.05)
