"""`spi import` and spisim.realrun: real frames into the CXI layout (gain, centre, masks, labels, binning)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import spi
from spisim.cxi import LABEL_CLASSES, CXIReader
from spisim.detector import Detector
from spisim.detector.binning import bin_mask, bin_sum
from spisim.particles import sphere_form_factor_shape
from spisim.realrun import ImportOptions, estimate_gain, fit_centre, flat_panel, run_import
from spisim.realrun.importer import _first_pass_indices

REAL = "real/spipy_pnccd_adu"


def _run(*args):
    return CliRunner().invoke(spi, ["import", *(str(a) for a in args)])


def _ok(*args):
    res = _run(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------------ the shared real frames


def test_real_frames_gain_auto_masks_centre_and_geometry(shared_data, tmp_path):
    real = shared_data / REAL
    out = tmp_path / "real.cxi"
    res = _ok(real / "test_adu.npy", "-o", out, "--gain", "auto", "--mask", real / "mask.npy", "--mask",
              real / "artifacts.npy", "--pixel-size", "75 um", "--distance", "0.58", "--energy", "1.6 keV",
              "--centre", "auto")
    assert "gain " in res.stdout and "ADU/photon" in res.stdout and "read noise" in res.stdout
    assert "beam centre X =" in res.stdout and "wrote " in res.stdout
    adu = np.load(real / "test_adu.npy")
    user = (np.load(real / "mask.npy") != 0) | (np.load(real / "artifacts.npy") != 0)
    inf = ~np.isfinite(adu)
    assert inf.sum() == 2 and np.all(inf.any(axis=0) == inf[3])  # the same pixel in frames 3 and 4
    with CXIReader(out) as r:
        assert len(r) == 10 and r.frame_shape == (1, 260, 257) and r.units == "photons"
        assert r.data.dtype == np.float32 and r.data.chunks == (1, 1, 260, 257)
        g = r.gain["adu_per_photon"]
        assert 6.0 < g < 9.0 and 0 < r.gain["adu_per_photon_sd"] < 0.5 and r.gain["gain_source"] == "auto"
        prov = r.import_provenance
        # photons = ADU / gain where finite; the inf pixel is written as 0 and masked with both masks
        frames = r.frames(np.arange(10))[:, 0]
        np.testing.assert_allclose(frames[~inf], adu[~inf] / np.float32(g), rtol=1e-6)
        assert np.all(frames[inf] == 0)
        np.testing.assert_array_equal(r.mask[0], user | inf.any(axis=0))
        assert prov["mask"]["nonfinite_values"] == 2 and prov["mask"]["nonfinite_pixels"] == 1
        assert prov["mask"]["user_masked_pixels"] == int(user.sum())
        assert prov["frames"]["nan_frames"] == [] and prov["frames"]["n_written"] == 10
        assert prov["source"]["size_bytes"] == (real / "test_adu.npy").stat().st_size
        assert prov["options"]["raw"]["pixel_size"] == "75 um" and prov["spi_version"] == r.attrs["spi_version"]
        # read noise in photons = σ(ADU) / gain, stored for a later fit
        assert r.read_noise_photons == pytest.approx(prov["gain"]["read_noise_adu"] / g)
        # geometry: flat panel at 0.58 m, 75 µm, the fitted beam centre at x = y = 0
        x, y = prov["centre"]["x_px"], prov["centre"]["y_px"]
        assert abs(x - 128.5) < 3 and abs(y - 129.5) < 3
        pos = r.pixel_position[0]
        assert np.allclose(pos[..., 2], 0.58)
        ss, fs = 100, 200
        assert pos[ss, fs, 0] == pytest.approx((fs - x) * 75e-6) and pos[ss, fs, 1] == pytest.approx(-(ss - y) * 75e-6)
        assert r.photon_energy_ev == pytest.approx(1600.0) and r.attrs["spi_complete"]
        assert np.isnan(r.file["/entry_1/instrument_1/source_1/pulse_energy"][()])
        omega = r.solid_angle[0]
        assert omega.max() == pytest.approx((75e-6 / 0.58) ** 2, rel=1e-3)
    det = Detector.load(out)  # an imported file is a geometry for a manifest
    assert det.shape == (1, 260, 257) and det.distance == pytest.approx(0.58)


def test_gain_of_the_real_frames(shared_data):
    real = shared_data / REAL
    mask = (np.load(real / "mask.npy") != 0) | (np.load(real / "artifacts.npy") != 0)
    fit = estimate_gain(np.load(real / "test_adu.npy"), mask)
    assert 6.0 < fit.gain < 9.0 and 0 < fit.gain_sd < 0.3
    assert abs(fit.offset) < 0.5 and 1.0 < fit.read_noise < 2.0  # zero peak at 0 ADU, sd ~1.3
    assert fit.sd_method.startswith("bootstrap") and fit.n_frames == 10


# ------------------------------------------------------------------------------------ gain and centre


@pytest.mark.parametrize("gain, sigma, integer", [(7.3, 1.2, False), (31.0, 3.5, True)])
def test_gain_auto_on_poisson_gaussian_adu(gain, sigma, integer):
    rng = np.random.default_rng(7)
    mean = 0.04 * rng.gamma(0.5, 2.0, size=(48, 48))  # photons per pixel, sparse and uneven as in SPI
    counts = rng.poisson(mean, size=(150, 48, 48))
    adu = counts * gain + rng.normal(0.4, sigma, counts.shape)
    adu = np.rint(adu).astype(np.int16) if integer else adu.astype(np.float32)
    fit = estimate_gain(adu)
    assert fit.gain == pytest.approx(gain, rel=0.02)
    assert fit.read_noise == pytest.approx(sigma, rel=0.05) and fit.offset == pytest.approx(0.4, abs=0.1 * sigma)
    assert 0 < fit.gain_sd < 0.02 * gain
    assert fit.read_noise_photons == pytest.approx(fit.read_noise / fit.gain)


def test_gain_auto_refuses_frames_already_in_photons():
    from spisim.errors import ConfigError

    photons = np.random.default_rng(1).poisson(0.05, size=(20, 32, 32)).astype(np.float32)
    with pytest.raises(ConfigError, match="no width"):
        estimate_gain(photons)


def _sphere_pattern(shape, centre, qr_per_px, rng, scale):
    y, x = np.indices(shape)
    r = np.hypot(y - centre[0], x - centre[1])
    expected = scale * sphere_form_factor_shape(r * qr_per_px) ** 2 + 0.02 * scale / 50
    return rng.poisson(expected).astype(np.float64), expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_centre_on_a_noisy_sphere_pattern_with_a_gap(seed):
    rng = np.random.default_rng(seed)
    shape = (180, 171)
    true = (shape[0] / 2 + rng.uniform(-12, 12), shape[1] / 2 + rng.uniform(-12, 12))  # fractional
    image, _ = _sphere_pattern(shape, true, rng.uniform(0.1, 0.25), rng, scale=50.0)
    mask = np.zeros(shape, bool)
    gap = int(true[0]) + 2
    mask[gap - 1 : gap + 2, :] = True  # a gap of rows near the centre
    mask[np.hypot(*(np.indices(shape) - np.array(true)[:, None, None])) < 5] = True  # beamstop
    fit = fit_centre(image, mask)
    assert abs(fit.row - true[0]) < 0.3 and abs(fit.col - true[1]) < 0.3
    assert 0 < fit.row_sd < 0.3 and 0 < fit.col_sd < 0.3 and fit.n_pairs > 1000
    guided = fit_centre(image, mask, guess=(true[0] + 4, true[1] - 3))
    assert abs(guided.row - fit.row) < 1e-9 and abs(guided.col - fit.col) < 1e-9


def test_fit_centre_is_not_fooled_by_flat_background():
    # noise-free: far from the centre the pattern is nearly flat, which a plain difference finds "symmetric"
    shape = (300, 280)
    true = (151.3, 137.8)
    r = np.hypot(*(np.indices(shape) - np.array(true)[:, None, None]))
    image = 50 * sphere_form_factor_shape(0.05 * r) ** 2 + 0.05
    fit = fit_centre(image, np.zeros(shape, bool))
    assert abs(fit.row - true[0]) < 0.05 and abs(fit.col - true[1]) < 0.05


def test_centre_auto_through_the_importer_finds_the_pattern_centre(tmp_path):
    rng = np.random.default_rng(4)
    shape = (64, 70)
    true = (30.3, 37.6)  # (row, col)
    frames = np.stack([_sphere_pattern(shape, true, 0.3, rng, scale=20.0)[0] for _ in range(6)]).astype(np.float32)
    np.save(tmp_path / "run.npy", frames)
    out = tmp_path / "o.cxi"
    res = _ok(tmp_path / "run.npy", "-o", out, "--pixel-size", 100, "--distance", 0.2, "--centre", "auto")
    with CXIReader(out) as r:
        c = r.import_provenance["centre"]
        assert abs(c["x_px"] - true[1]) < 0.3 and abs(c["y_px"] - true[0]) < 0.3
        assert c["sd_method"] == "jackknife over 6 frame groups" and 0 < c["x_sd_px"] < 0.3 and 0 < c["y_sd_px"] < 0.3
        pos = r.pixel_position[0]
        assert abs(pos[30, 38, 0] - (38 - c["x_px"]) * 1e-4) < 1e-12
        np.testing.assert_array_equal(r.frames(np.arange(6))[:, 0], frames)  # no gain: frames are photons
    assert "beam centre" in res.stdout


# ------------------------------------------------------------------------------------ layouts


def _plain_run(path: Path, n=12, shape=(16, 20), seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.poisson(0.5, size=(n, *shape)).astype(np.int16)
    mask = np.zeros(shape, np.uint8)
    mask[3, 4] = mask[10, 2] = 1
    labels = rng.integers(0, 2, size=n).astype(np.int64)
    with h5py.File(path, "w") as f:
        f["frames"] = frames
        f["mask"] = mask
        f["labels"] = labels
    return frames, mask != 0, labels


def test_plain_hdf5_with_root_frames_mask_and_numeric_labels(tmp_path):
    src = tmp_path / "run.h5"
    frames, mask, labels = _plain_run(src)
    out = tmp_path / "run.cxi"
    _ok(src, "-o", out, "--mask", "mask", "--labels", "/labels", "--label-map", "1=single,0=not_single",
        "--frames", "2:10")
    with CXIReader(out) as r:
        assert len(r) == 8 and r.frame_shape == (1, 16, 20) and r.units == "photons" and r.gain is None
        np.testing.assert_array_equal(r.frames(np.arange(8))[:, 0], frames[2:10])
        np.testing.assert_array_equal(r.mask[0], mask)
        expected = np.where(labels[2:10] == 1, LABEL_CLASSES.index("single"), LABEL_CLASSES.index("not_single"))
        np.testing.assert_array_equal(r.hit_type, expected)
        assert r.class_names == list(LABEL_CLASSES)
        assert r.pixel_position is None and r.photon_energy_ev is None  # no geometry given
        prov = r.import_provenance
        assert prov["source"]["data_path"] == "/frames" and prov["frames"]["source_indices"] == [2, 10, 1]
        n_single = int(labels[2:10].sum())
        assert prov["labels"]["counts"] == {"single": n_single, "not_single": 8 - n_single}


def test_frames_with_a_step_and_negative_start(tmp_path):
    src = tmp_path / "run.h5"
    frames, _, _ = _plain_run(src)
    for spec, expected in (("1:12:4", frames[1:12:4]), ("-3:", frames[-3:]), (":2", frames[:2])):
        out = tmp_path / "o.cxi"
        _ok(src, "-o", out, "--frames", spec, "--overwrite")
        with CXIReader(out) as r:
            np.testing.assert_array_equal(r.frames(np.arange(len(r)))[:, 0], expected)


def test_label_file_indices_are_source_indices(tmp_path):
    src = tmp_path / "run.h5"
    _plain_run(src)
    csv = tmp_path / "labels.csv"
    csv.write_text("index,label\n3,single\n5,multi\n11,no_hit\n")
    out = tmp_path / "o.cxi"
    _ok(src, "-o", out, "--data", "/frames", "--frames", "3:", "--labels", csv)
    with CXIReader(out) as r:
        codes = r.hit_type
        assert len(codes) == 9
        assert codes[0] == LABEL_CLASSES.index("single") and codes[2] == LABEL_CLASSES.index("multi")
        assert codes[8] == LABEL_CLASSES.index("no_hit") and np.all(codes[[1, 3, 4, 5, 6, 7]] == -1)


def test_npy_stack_with_a_given_gain_and_hdf5_masks(tmp_path):
    rng = np.random.default_rng(3)
    adu = rng.normal(0, 1, size=(5, 1, 12, 14)).astype(np.float32) + 8.0 * rng.poisson(1, size=(5, 1, 12, 14))
    np.save(tmp_path / "run.npy", adu)
    good = np.ones((12, 14), np.int8)
    good[0, :] = 0  # --mask-value good: 0 = bad
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["some/where/good"] = good
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = good
        f["b"] = good
    out = tmp_path / "o.cxi"
    _ok(tmp_path / "run.npy", "-o", out, "--gain", "8", "--mask", tmp_path / "m.h5", "--mask",
        f"{tmp_path / 'two.h5'}:/b", "--mask-value", "good", "--compression", "lz4")
    with CXIReader(out) as r:
        np.testing.assert_allclose(r.frames(np.arange(5)), adu / np.float32(8.0), rtol=1e-7)
        assert r.gain == {"adu_per_photon": 8.0, "adu_per_photon_sd": 0.0, "adu_offset": pytest.approx(np.nan,
                          nan_ok=True), "gain_source": "given"}
        assert r.mask[0, 0].all() and r.mask.sum() == 14 and r.read_noise_photons is None


def test_bin_2_conserves_photons_and_masks_any_bad_bin(tmp_path):
    rng = np.random.default_rng(5)
    frames = rng.gamma(2.0, 1.5, size=(4, 21, 18)).astype(np.float32)
    frames[1, 7, 9] = np.nan  # joins the mask
    mask = np.zeros((21, 18), bool)
    mask[2, 3] = mask[19, 16] = True
    np.save(tmp_path / "run.npy", frames)
    np.save(tmp_path / "mask.npy", mask.astype(np.uint8))
    out = tmp_path / "o.cxi"
    res = _ok(tmp_path / "run.npy", "-o", out, "--mask", tmp_path / "mask.npy", "--bin", 2, "--pixel-size", "50um",
              "--distance", "100 mm", "--centre", "8.5,10")
    assert "cropped the last 1 rows and 0 columns" in res.stdout
    clean = np.nan_to_num(frames, nan=0.0)[:, :20, :18]
    with CXIReader(out) as r:
        assert r.frame_shape == (1, 10, 9)
        got = r.frames(np.arange(4))[:, 0]
        np.testing.assert_allclose(got.sum(axis=(1, 2)), clean.sum(axis=(1, 2)), rtol=1e-5)  # photons add
        np.testing.assert_allclose(got, bin_sum(clean, 2), rtol=1e-6)
        bad = mask.copy()
        bad[7, 9] = True
        expected = bin_mask(bad[:20, :18], 2)
        np.testing.assert_array_equal(r.mask[0], expected)
        assert expected.sum() == 3
        # a binned pixel sits at the mean of the four it joins; solid angles add
        fine = flat_panel(20, 18, 50e-6, 0.1, (8.5, 10.0))
        pos = fine.pixel_positions[0].reshape(10, 2, 9, 2, 3).mean(axis=(1, 3))
        np.testing.assert_allclose(r.pixel_position[0], pos, atol=1e-12)
        np.testing.assert_allclose(r.solid_angle[0], bin_sum(fine.solid_angles()[0], 2), rtol=1e-6)
        assert r.import_provenance["geometry"]["cropped"] == {"rows": 1, "cols": 0}


def test_crystfel_geometry_with_binning(shared_data, tmp_path):
    geom = shared_data / "geometries" / "crystfel_simple.geom"
    rng = np.random.default_rng(6)
    frames = rng.poisson(0.2, size=(2, 1024, 1024)).astype(np.float32)
    with h5py.File(tmp_path / "run.h5", "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=frames, chunks=(1, 1024, 1024))
        f["other"] = np.zeros((3, 4, 5))  # a second rank-3 dataset: the CXI path wins
    out = tmp_path / "o.cxi"
    _ok(tmp_path / "run.h5", "-o", out, "--geometry", geom, "--energy", "6 keV", "--bin", 2)
    det = Detector.load(geom).binned(2)
    with CXIReader(out) as r:
        assert r.frame_shape == (1, 512, 512)
        np.testing.assert_allclose(r.pixel_position, det.pixel_positions, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(r.mask, det.mask)
        np.testing.assert_allclose(r.frames([0, 1]), bin_sum(frames[:, None], 2))
        assert r.photon_energy_ev == pytest.approx(6000.0)
        assert r.import_provenance["geometry"]["kind"] == "file"


def test_streaming_blocks_first_pass_sampling_and_nan_frames(tmp_path):
    rng = np.random.default_rng(8)
    frames = (rng.normal(0, 1, size=(9, 6, 7)) + 10 * rng.poisson(0.3, size=(9, 6, 7))).astype(np.float32)
    frames[4] = np.nan  # a frame without any finite pixel stays NaN and is reported
    np.save(tmp_path / "run.npy", frames)
    out = tmp_path / "o.cxi"
    opts = ImportOptions(str(tmp_path / "run.npy"), str(out), block_mb=1e-4)  # one frame per block
    res = run_import(opts)
    with CXIReader(out) as r:
        got = r.frames(np.arange(9))
        assert np.all(np.isnan(got[4])) and not r.mask.any()
        keep = [i for i in range(9) if i != 4]
        np.testing.assert_array_equal(got[keep, 0], frames[keep])
        assert r.import_provenance["frames"]["nan_frames"] == [4]
    assert any("kept as NaN" in note for note in res.notes)
    idx = _first_pass_indices(range(10, 10_010, 1), 2000)
    assert len(idx) == 2000 and idx[0] == 10 and idx[-1] == 10_009 and np.all(np.diff(idx) > 0)
    assert np.ptp(np.diff(idx)) <= 1  # evenly spaced


# ------------------------------------------------------------------------------------ output safety


def test_existing_output_needs_overwrite_and_interrupt_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "run.h5"
    _plain_run(src)
    out = tmp_path / "o.cxi"
    out.write_bytes(b"keep me")
    res = _run(src, "-o", out)
    assert res.exit_code == 1 and "--overwrite" in res.stderr and out.read_bytes() == b"keep me"
    _ok(src, "-o", out, "--overwrite")
    assert h5py.is_hdf5(out)

    from spisim.realrun import source

    calls = {"n": 0}
    real_read = source.FrameSource.read

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real_read(self, *a, **k)

    monkeypatch.setattr(source.FrameSource, "read", interrupted)
    before = _files(tmp_path)
    opts = ImportOptions(str(src), str(tmp_path / "new.cxi"), block_mb=1e-4)
    with pytest.raises(KeyboardInterrupt):
        run_import(opts)
    assert _files(tmp_path) == before  # no partial output, no temporary file
    calls["n"] = 1  # the next read is interrupted
    res = _run(src, "-o", tmp_path / "new.cxi")
    assert res.exit_code == 130 and "not written" in res.stderr and _files(tmp_path) == before


def test_help_states_units():
    res = CliRunner().invoke(spi, ["import", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for phrase in ("bare number: um", "bare number: m", "bare number: eV", "X along fast scan", "ADU_PER_PHOTON"):
        assert phrase in text


# ------------------------------------------------------------------------------------ bad inputs


@pytest.fixture()
def bad_setup(tmp_path, shared_data):
    src = tmp_path / "run.h5"
    _plain_run(src)
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((3, 4, 5))
        f["b"] = np.zeros((3, 4, 5))
    np.save(tmp_path / "wrong_mask.npy", np.zeros((5, 5)))
    with h5py.File(tmp_path / "short_labels.h5", "w") as f:
        f["frames"] = np.zeros((12, 16, 20), np.float32)
        f["labels"] = np.zeros(11)
        f["names"] = np.array([b"single"] * 6 + [b"huge"] * 6)
        f["codes"] = np.array([0, 1, 2] * 4)
    return tmp_path, src, shared_data / "geometries" / "crystfel_simple.geom"


BAD = {
    "missing source": (["{t}/nope.h5"], "no such file"),
    "not hdf5 nor npy": (["{t}/text.txt"], "neither an HDF5 file nor a .npy"),
    "wrong data path": (["{src}", "--data", "/nothing"], "has no dataset /nothing"),
    "wrong rank": (["{src}", "--data", "/mask"], "frames must be (N, SS, FS)"),
    "ambiguous frames": (["{t}/two.h5"], "2 datasets of rank 3 or 4"),
    "mask shape": (["{src}", "--mask", "{t}/wrong_mask.npy"], "has shape (5, 5)"),
    "mask missing": (["{src}", "--mask", "{t}/no_mask.npy"], "no such file"),
    "label count": (["{t}/short_labels.h5", "--data", "/frames", "--labels", "/labels", "--label-map", "0=single"],
                    "expected (12,)"),
    "unknown class in map": (["{src}", "--labels", "/labels", "--label-map", "1=single,0=junk"],
                             "unknown class 'junk'"),
    "unknown class in labels": (["{t}/short_labels.h5", "--data", "/frames", "--labels", "/names"],
                                "unknown class 'huge'"),
    "numeric labels without map": (["{src}", "--labels", "/labels"], "give --label-map"),
    "value not in map": (["{t}/short_labels.h5", "--data", "/frames", "--labels", "/codes", "--label-map",
                          "0=single,1=multi"], "not in --label-map"),
    "label map syntax": (["{src}", "--labels", "/labels", "--label-map", "1single"], "is not RAW=CLASS"),
    "frames syntax": (["{src}", "--frames", "a:b"], "is not a whole number"),
    "frames empty": (["{src}", "--frames", "5:5"], "selects no frame"),
    "centre syntax": (["{src}", "--pixel-size", "75", "--distance", "1", "--centre", "1;2"], "expected X,Y"),
    "pixel size not a length": (["{src}", "--pixel-size", "75 keV", "--distance", "1"], "is not a length"),
    "energy not an energy": (["{src}", "--energy", "2 kg"], "is not a photon energy"),
    "pixel size without distance": (["{src}", "--pixel-size", "75"], "add --distance"),
    "bad gain": (["{src}", "--gain", "-3"], "must be a finite number > 0"),
    "geometry shape": (["{src}", "--geometry", "{geom}"], "has data shape (1, 1024, 1024)"),
    "centre with geometry": (["{src}", "--geometry", "{geom}", "--centre", "3,4"], "places it itself"),
    "missing output folder": (["{src}", "-o", "{t}/no/such/o.cxi"], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_line_and_write_nothing(bad_setup, case):
    t, src, geom = bad_setup
    (t / "text.txt").write_text("hello")
    args, message = BAD[case]
    args = [a.format(t=t, src=src, geom=geom) for a in args]
    if "-o" not in args:
        args += ["-o", str(t / "o.cxi")]
    before = _files(t)
    res = _run(*args)
    assert res.exit_code != 0, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert message in lines[0] and "Traceback" not in res.output
    assert _files(t) == before and not (t / "o.cxi").exists()


def test_a_geometry_whose_panels_do_not_divide_is_refused(shared_data, tmp_path):
    frames = np.zeros((1, 1024, 1024), np.float32)
    np.save(tmp_path / "run.npy", frames)
    res = _run(tmp_path / "run.npy", "-o", tmp_path / "o.cxi", "--geometry",
               shared_data / "geometries" / "crystfel_simple.geom", "--bin", 3)
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1 and "by 3" in res.stderr
    assert not (tmp_path / "o.cxi").exists()


def test_provenance_lists_every_option(tmp_path):
    src = tmp_path / "run.h5"
    _plain_run(src)
    out = tmp_path / "o.cxi"
    _ok(src, "-o", out, "--frames", "1:", "--bin", 2, "--pixel-size", "0.1 mm", "--distance", "20 cm")
    with h5py.File(out) as f:
        prov = json.loads(f.attrs["spi_import"])
    options = ImportOptions.from_strings("a", "b").as_dict()
    assert set(options) <= set(prov["options"]) and prov["options"]["pixel_size_m"] == pytest.approx(1e-4)
    assert prov["options"]["distance_m"] == pytest.approx(0.2) and prov["geometry"]["bin"] == 2
    for key in ("source", "frames", "gain", "centre", "mask", "geometry", "labels", "time", "spi_version"):
        assert key in prov


def test_threaded_gzip_writer_stores_the_bytes_hdf5_would(tmp_path):
    from spisim.cxi import FrameBlockWriter, create_frames

    rng = np.random.default_rng(9)
    frames = (rng.normal(0, 1, size=(5, 2, 9, 11)) + rng.poisson(0.3, size=(5, 2, 9, 11))).astype(np.float32)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        plain = create_frames(f, 5, (2, 9, 11), compression="gzip")
        plain[...] = frames
        threaded = f.create_dataset("threaded", shape=plain.shape, dtype=plain.dtype, chunks=plain.chunks,
                                    compression="gzip", compression_opts=4, shuffle=True)
        with FrameBlockWriter(threaded, "gzip", threads=2) as w:
            assert w.direct
            w.write(0, frames[:3])
            w.write(3, frames[3:])
        for i in range(5):
            assert plain.id.read_direct_chunk((i, 0, 0, 0)) == threaded.id.read_direct_chunk((i, 0, 0, 0))
        np.testing.assert_array_equal(threaded[...], frames)
