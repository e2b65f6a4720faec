"""Tests of spisim.detector: solid angles, q, polarisation, assembly, transforms, presets, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from spisim.detector import Detector, Panel, rotation_x, rotation_y, rotation_z
from spisim.detector.crystfel import parse_direction
from spisim.errors import ConfigError
from spisim.units import parse_quantity

# ---- independent reference formulas ----------------------------------------------------------------


def rectangle_solid_angle(x1: float, x2: float, y1: float, y2: float, d: float) -> float:
    """Solid angle of the rectangle [x1, x2] x [y1, y2] in the plane z = d seen from the origin.

    Ω(x, y) = atan(x y / (d sqrt(x² + y² + d²))) is the solid angle of the rectangle [0, x] x [0, y];
    the general rectangle follows by inclusion–exclusion.
    """

    def f(x: float, y: float) -> float:
        return np.arctan(x * y / (d * np.sqrt(x * x + y * y + d * d)))

    return f(x2, y2) - f(x1, y2) - f(x2, y1) + f(x1, y1)


def random_rotation(rng: np.random.Generator, max_deg: float = 25.0) -> np.ndarray:
    a, b, c = rng.uniform(-max_deg, max_deg, 3)
    return rotation_z(a) @ rotation_y(b) @ rotation_x(c)


def tilted_detector(rng: np.random.Generator) -> Detector:
    """A 48 x 40 detector, 200 µm pixels, tilted and off-centre: a non-degenerate test geometry."""
    p = 200e-6
    panel = Panel(np.array([-0.003, 0.004, 0.0]), [p, 0, 0], [0, -p, 0], n_fs=48, n_ss=40)
    rot = random_rotation(rng)
    return Detector([panel.rotate(rot).offset([0.002, -0.001, 0.08])], name="tilted")


# ---- solid angles ----------------------------------------------------------------------------------


def test_solid_angle_sum_of_wide_flat_detector_matches_rectangle_formula():
    det = Detector.square(120, 1e-3, 0.05).shifted(0.013, -0.021, 0.0)  # 0.12 m wide at 5 cm
    half = 0.06
    expected = rectangle_solid_angle(-half + 0.013, half + 0.013, -half - 0.021, half - 0.021, 0.05)
    assert det.solid_angles().sum() == pytest.approx(expected, rel=1e-12)
    # every single pixel also matches the rectangle formula
    om = det.solid_angles()[0]
    for i, j in [(0, 0), (5, 97), (119, 119), (60, 61)]:
        x1 = -half + 0.013 + j * 1e-3
        y2 = half - 0.021 - i * 1e-3
        assert om[i, j] == pytest.approx(rectangle_solid_angle(x1, x1 + 1e-3, y2 - 1e-3, y2, 0.05), rel=1e-10)


def test_small_pixels_follow_area_cos3_over_r2():
    det = Detector.square(41, 20e-6, 0.5)  # odd: one pixel is centred on the beam
    om = det.solid_angles()[0]
    area = 20e-6**2
    assert om[20, 20] == pytest.approx(area / 0.5**2, rel=1e-8)
    far = Detector.square(9, 20e-6, 0.5).shifted(0.3, -0.2, 0.0)  # ~35 degrees off axis
    pos = far.pixel_positions[0]
    r = np.linalg.norm(pos, axis=-1)
    cos_alpha = pos[..., 2] / r
    np.testing.assert_allclose(far.solid_angles()[0], area * cos_alpha**3 / 0.5**2, rtol=1e-7)


def test_small_tilted_pixels_follow_area_cos_alpha_over_r2():
    rng = np.random.default_rng(11)
    p = 10e-6
    panel = Panel([0, 0, 0], [p, 0, 0], [0, p, 0], n_fs=6, n_ss=5)
    panel = panel.rotate(random_rotation(rng, 50)).offset([0.1, 0.05, 0.3])
    det = Detector([panel])
    pos = det.pixel_positions[0]
    r = np.linalg.norm(pos, axis=-1)
    cos_alpha = np.abs(pos @ panel.normal) / r
    np.testing.assert_allclose(det.solid_angles()[0], p * p * cos_alpha / r**2, rtol=1e-7)


def test_exact_solid_angle_of_a_big_pixel_differs_from_the_approximation():
    big = Detector.square(1, 0.1, 0.05)  # one 10 cm pixel at 5 cm
    exact = rectangle_solid_angle(-0.05, 0.05, -0.05, 0.05, 0.05)
    assert big.solid_angles()[0, 0, 0] == pytest.approx(exact, rel=1e-12)
    assert 0.1**2 / 0.05**2 / exact > 1.5  # A/R² would be badly wrong here


def test_solid_angle_is_additive_over_subdivided_pixels():
    rng = np.random.default_rng(5)
    rot = random_rotation(rng, 40)
    coarse = Panel([-0.004, 0.003, 0.0], [0.002, 0, 0], [0, -0.002, 0], n_fs=4, n_ss=3)
    fine = Panel([-0.004, 0.003, 0.0], [0.0005, 0, 0], [0, -0.0005, 0], n_fs=16, n_ss=12)
    a = Detector([coarse.rotate(rot).offset([0.01, 0, 0.03])]).solid_angles()[0]
    b = Detector([fine.rotate(rot).offset([0.01, 0, 0.03])]).solid_angles()[0]
    np.testing.assert_allclose(a, b.reshape(3, 4, 4, 4).sum(axis=(1, 3)), rtol=1e-12)


# ---- q vectors and polarisation --------------------------------------------------------------------


def test_q_magnitude_is_4pi_sin_theta_over_lambda():
    det = tilted_detector(np.random.default_rng(1))
    lam = 2.7
    q = det.q_vectors(lam)
    pos = det.pixel_positions
    two_theta = np.arctan2(np.hypot(pos[..., 0], pos[..., 1]), pos[..., 2])
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 4 * np.pi * np.sin(two_theta / 2) / lam, rtol=1e-10)
    np.testing.assert_allclose(det.two_theta(), np.arccos(pos[..., 2] / np.linalg.norm(pos, axis=-1)), rtol=1e-9)
    # q + k_in points at the pixel, and |q + k_in| = |k_in| (elastic)
    k = 2 * np.pi / lam
    k_out = q + np.array([0, 0, k])
    np.testing.assert_allclose(np.linalg.norm(k_out, axis=-1), k, rtol=1e-12)
    np.testing.assert_allclose(np.cross(k_out, pos), 0.0, atol=1e-12)


def test_polarization_factors_against_formulas():
    det = tilted_detector(np.random.default_rng(2))
    pos = det.pixel_positions
    two_theta = np.arccos(pos[..., 2] / np.linalg.norm(pos, axis=-1))
    phi = np.arctan2(pos[..., 1], pos[..., 0])
    s2 = np.sin(two_theta) ** 2
    np.testing.assert_allclose(det.polarization_factor("horizontal"), 1 - s2 * np.cos(phi) ** 2, atol=1e-14)
    np.testing.assert_allclose(det.polarization_factor("vertical"), 1 - s2 * np.sin(phi) ** 2, atol=1e-14)
    np.testing.assert_allclose(det.polarization_factor("none"), (1 + np.cos(two_theta) ** 2) / 2, atol=1e-14)
    assert det.polarization_factor("horizontal").min() < det.polarization_factor("none").min() < 1


def test_polarization_kinds_agree_after_azimuthal_averaging():
    det = Detector.square(200, 1e-3, 0.06)  # reaches 2θ ≈ 60°, symmetric under 90° turns
    tt = det.two_theta()
    edges = np.linspace(0, tt.max(), 25)
    ring = np.digitize(tt, edges)
    kinds = {k: det.polarization_factor(k) for k in ("horizontal", "vertical", "none")}
    for r in np.unique(ring)[1:-2]:
        sel = ring == r
        h, v, n = (kinds[k][sel].mean() for k in ("horizontal", "vertical", "none"))
        assert h == pytest.approx(n, rel=1e-12) and v == pytest.approx(n, rel=1e-12)
    assert kinds["horizontal"][0, 100, 0] < 0.8  # strong anisotropy in the plane of polarisation


# ---- uncovered pixels, masks -----------------------------------------------------------------------


def test_uncovered_data_pixels_are_masked_and_inert():
    panel = Panel([-0.01, 0.01, 0.1], [1e-3, 0, 0], [0, -1e-3, 0], n_fs=20, n_ss=20, ss_offset=2, fs_offset=1)
    det = Detector([panel], shape=(2, 24, 22))
    cov = det.covered
    assert cov.sum() == 400 == det.n_pixels
    assert det.mask[~cov].all() and not det.mask[cov].any()
    assert np.isnan(det.pixel_positions[~cov]).all() and np.isfinite(det.pixel_positions[cov]).all()
    assert (det.solid_angles()[~cov] == 0).all() and (det.solid_angles()[cov] > 0).all()
    assert (det.q_vectors(1.0)[~cov] == 0).all() and (det.polarization_factor()[~cov] == 0).all()


def test_with_mask_and_with_beamstop():
    det = Detector.example()
    extra = np.zeros(det.shape, dtype=bool)
    extra[0, 3, 4] = True
    masked = det.with_mask(extra)
    assert masked.mask[0, 3, 4] and not det.mask[0, 3, 4]
    stopped = masked.with_beamstop(2.1e-3)
    pos = det.pixel_positions
    inside = np.hypot(pos[..., 0], pos[..., 1]) < 2.1e-3
    assert inside.sum() > 0
    np.testing.assert_array_equal(stopped.mask, inside | extra)
    assert not det.mask.any()  # the original is untouched


# ---- transforms ------------------------------------------------------------------------------------


def test_transforms_return_new_objects_and_do_not_mutate():
    det = Detector.example()
    before = det.pixel_positions.copy()
    moved = det.with_distance(0.35)
    assert moved is not det and moved.distance == pytest.approx(0.35, rel=1e-12)
    assert det.distance == pytest.approx(0.2, rel=1e-12)
    shifted = det.shifted(1e-3, -2e-3, 0.01)
    np.testing.assert_allclose(shifted.pixel_positions - before, np.broadcast_to([1e-3, -2e-3, 0.01], before.shape))
    rot = rotation_z(30.0)
    turned = det.rotated(rot)
    np.testing.assert_allclose(turned.pixel_positions, before @ rot.T, atol=1e-15)
    np.testing.assert_allclose(turned.solid_angles().sum(), det.solid_angles().sum(), rtol=1e-12)
    np.testing.assert_array_equal(det.pixel_positions, before)
    with pytest.raises(ValueError):
        det.pixel_positions[0, 0, 0, 0] = 1.0  # cached arrays are read-only
    with pytest.raises(ValueError):
        det.mask[0, 0, 0] = True
    with pytest.raises(AttributeError):
        det.panels[0].n_fs = 3  # panels are frozen


def test_distance_and_solid_angle_scale_with_distance():
    det = Detector.square(32, 100e-6, 0.1)
    far = det.with_distance(0.4)
    h = 16 * 100e-6
    for d, dist in ((det, 0.1), (far, 0.4)):
        assert d.solid_angles().sum() == pytest.approx(rectangle_solid_angle(-h, h, -h, h, dist), rel=1e-12)
    # nearly 1/R² for a small detector
    assert far.solid_angles().sum() == pytest.approx(det.solid_angles().sum() / 16, rel=1e-3)


# ---- assembly --------------------------------------------------------------------------------------


def test_square_assembly_reproduces_the_data_orientation():
    det = Detector.example()
    data = np.random.default_rng(0).random(det.shape)
    image, extent = det.assemble(data)
    assert image.shape == (64, 64)
    np.testing.assert_array_equal(image, data[0])  # row 0 top (+y), column 0 left (-x)
    assert extent == pytest.approx((-64 * 150e-6, 64 * 150e-6, -64 * 150e-6, 64 * 150e-6), abs=1e-15)
    assert det.assembly_indices().beam_centre == pytest.approx((32.0, 32.0))


@pytest.mark.parametrize("name", ["pnccd", "jungfrau4m", "agipd1m"])
def test_assembly_conserves_signal_and_pixel_count(name):
    det = Detector.preset(name)
    data = np.random.default_rng(3).random((2, *det.shape)).astype(np.float32)
    images, _ = det.assemble(data)
    assert images.dtype == np.float32 and images.shape[0] == 2
    totals = np.nansum(images.astype(np.float64), axis=(1, 2))
    np.testing.assert_allclose(totals, data.astype(np.float64).sum(axis=(1, 2, 3)), rtol=1e-9)
    amap = det.assembly_indices()
    assert amap.counts.sum() == det.n_pixels
    assert np.isnan(images[0]).sum() == (amap.counts == 0).sum() > 0  # gaps are NaN
    assert det.assembly_indices() is amap  # cached


def test_assembly_of_rotated_tiles_and_coarse_pixels_conserves_signal():
    det = tilted_detector(np.random.default_rng(9)).rotated(rotation_z(20.0))
    data = np.random.default_rng(4).random(det.shape)
    for size in (None, 3 * det.pixel_size):
        image, _ = det.assemble(data, pixel_size=size)
        assert np.nansum(image) == pytest.approx(data.sum(), rel=1e-12)
        assert det.assembly_indices(size).counts.sum() == det.n_pixels


def test_assembled_mask_marks_gaps_and_beamstop():
    det = Detector.square(64, 300e-6, 0.2, gap_m=3e-3).with_beamstop(2.5e-3)
    amask = det.assembled_mask()
    image, _ = det.assemble(np.ones(det.shape))
    assert np.all(amask[np.isnan(image)])
    h, w = amask.shape
    assert amask[h // 2, w // 2]  # the gap and the beamstop at the centre
    assert not amask[2, 2]
    assert amask.sum() > np.isnan(image).sum()  # the beamstop masks existing pixels too


def test_assembling_many_shots_is_cheap():
    det = Detector.example()
    amap = det.assembly_indices()
    shots = np.random.default_rng(1).random((1000, *det.shape)).astype(np.float32)
    t0 = time.perf_counter()
    images = amap.assemble(shots)
    elapsed = time.perf_counter() - t0
    assert images.shape == (1000, 64, 64)
    np.testing.assert_array_equal(images[517], shots[517, 0])
    assert elapsed < 2.0


# ---- presets ---------------------------------------------------------------------------------------


def test_preset_pnccd_two_panels_with_gap():
    det = Detector.preset("pnccd", gap_m=6e-3)
    assert det.shape == (2, 512, 1024) and len(det.panels) == 2
    assert all((p.n_ss, p.n_fs) == (512, 1024) and p.pixel_size == pytest.approx(75e-6) for p in det.panels)
    assert det.distance == pytest.approx(0.130)
    y = det.pixel_positions[..., 1]
    gap = y[1].max() - y[0].min()  # module 0 is above the beam
    assert -gap - 75e-6 == pytest.approx(6e-3, abs=1e-12)
    assert Detector.preset("pnccd", distance_m=0.5).distance == pytest.approx(0.5)


def test_preset_shapes_pixel_sizes_and_no_spatial_overlap():
    expected = {
        "jungfrau4m": ((8, 512, 1024), 75e-6, 64),
        "epix10k2m": ((16, 352, 384), 100e-6, 64),
        "agipd1m": ((16, 512, 128), 200e-6, 128),
        "square": ((1, 128, 128), 300e-6, 1),
    }
    for name, (shape, pixel, n_tiles) in expected.items():
        det = Detector.preset(name)
        assert det.shape == shape and len(det.panels) == n_tiles, name
        assert det.pixel_size == pytest.approx(pixel), name
        assert det.n_pixels == int(np.prod(shape)), name
        counts = det.assembly_indices().counts
        assert counts.max() == 1, f"{name}: tiles overlap in space"
        r = np.hypot(*det.pixel_positions[..., :2].reshape(-1, 2).T)
        assert r.min() < 0.01, f"{name}: beam not near the detector centre"


def test_pickle_round_trip_drops_caches():
    import pickle

    det = Detector.preset("pnccd").with_beamstop(2e-3)
    det.solid_angles()
    blob = pickle.dumps(det)
    assert len(blob) < 5_000_000  # the 1 Mpixel caches are not shipped
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.mask, det.mask)
    np.testing.assert_array_equal(back.solid_angles(), det.solid_angles())


def test_from_extra_geom_matches_extra_geom_positions():
    import extra_geom

    geom = extra_geom.JUNGFRAUGeometry.example(n_modules=2)
    det = Detector.from_extra_geom(geom, 0.3)
    assert det.shape == (2, 512, 1024)
    np.testing.assert_allclose(det.pixel_positions, geom.get_pixel_positions() + [0, 0, 0.3], atol=1e-15)


def test_from_spec_for_manifests(tmp_path):
    assert Detector.from_spec("pnccd").shape == (2, 512, 1024)
    det = Detector.from_spec({"preset": "square", "n_pixels": 32, "pixel_size_m": 1e-4, "distance_m": 0.3,
                              "shift_m": [1e-3, 0, 0], "beamstop_radius_m": 5e-4})
    assert det.shape == (1, 32, 32) and det.distance == pytest.approx(0.3)
    assert det.pixel_positions[..., 0].mean() == pytest.approx(1e-3)
    assert 0 < det.mask.sum() < 32 * 32
    Detector.example().write_crystfel(tmp_path / "e.geom")
    from_file = Detector.from_spec({"file": str(tmp_path / "e.geom"), "distance_m": 0.5})
    assert from_file.distance == pytest.approx(0.5)
    assert Detector.from_spec(tmp_path / "e.geom").distance == pytest.approx(0.2)
    for bad in ({"preset": "pnccd", "file": "x.geom"}, {}, {"preset": "pnccd", "colour": 1},
                {"file": str(tmp_path / "e.geom"), "gap_m": 1e-3}, {"preset": "square", "shift_m": [1, 2]}, 42):
        with pytest.raises(ConfigError):
            Detector.from_spec(bad)


def test_example_detector():
    det = Detector.example()
    assert det.shape == (1, 64, 64) and det.distance == pytest.approx(0.2) and det.pixel_size == pytest.approx(3e-4)


# ---- CrystFEL export -------------------------------------------------------------------------------


def test_write_crystfel_round_trip(tmp_path):
    det = Detector.preset("epix10k2m").rotated(rotation_y(3.0)).with_beamstop(4e-3)
    det.write_crystfel(tmp_path / "d.geom", photon_energy_ev=1600.0, mask_file=tmp_path / "mask.h5")
    back = Detector.load(tmp_path / "d.geom")
    assert back.shape == det.shape
    np.testing.assert_allclose(back.pixel_positions, det.pixel_positions, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.mask, det.mask)
    assert back.metadata["photon_energy_ev"] == pytest.approx(1600.0)


def test_written_crystfel_file_reads_in_cfel_fmt(tmp_path):
    from cfel_fmt.geometry import load_crystfel_geometry

    det = tilted_detector(np.random.default_rng(4))
    det.write_crystfel(tmp_path / "t.geom")
    panel_dict = load_crystfel_geometry(str(tmp_path / "t.geom")).detector["panels"]["p0"]
    res = panel_dict["res"]
    p = det.panels[0]
    corner = np.array([panel_dict["cnx"] / res, panel_dict["cny"] / res, panel_dict["coffset"] + panel_dict["clen"]])
    np.testing.assert_allclose(corner, p.corner, atol=1e-12)
    fs = np.array([panel_dict["fsx"], panel_dict["fsy"], panel_dict["fsz"]]) / res
    np.testing.assert_allclose(fs, p.fs_vec, atol=1e-15)


# ---- parsing helpers -------------------------------------------------------------------------------


def test_direction_and_unit_parsing():
    np.testing.assert_allclose(parse_direction("+0.004806x +0.999989y"), [0.004806, 0.999989, 0])
    np.testing.assert_allclose(parse_direction("-x"), [-1, 0, 0])
    np.testing.assert_allclose(parse_direction("+1.x +0.y"), [1, 0, 0])
    np.testing.assert_allclose(parse_direction("0.0003420x -0.9999310y -2e-5z"), [0.000342, -0.999931, -2e-5])
    assert parse_quantity("95.3 mm", "length", "m", "f", what="clen") == pytest.approx(0.0953)
    assert parse_quantity("4.57keV", "photon_energy", "eV", "f", what="e") == pytest.approx(4570)
    with pytest.raises(ConfigError, match="unknown unit 'furlong'"):
        parse_quantity("3 furlong", "length", "m", "f", what="clen")
    with pytest.raises(ConfigError):
        parse_direction("+0.5q")


# ---- errors ----------------------------------------------------------------------------------------


def test_impossible_geometries_raise_config_errors():
    p = 1e-4
    with pytest.raises(ConfigError, match="downstream"):
        Detector([Panel([0, 0, -0.1], [p, 0, 0], [0, p, 0], 10, 10)])
    with pytest.raises(ConfigError, match="downstream"):  # crosses the sample plane
        Detector([Panel([0, 0, 0.001], [p, 0, 0], [0, 0, -p], 10, 100)])
    with pytest.raises(ConfigError, match="edge-on"):
        Detector([Panel([0, 0, 0.1], [p, 0, 0], [0, 0, p], 10, 10)])
    with pytest.raises(ConfigError, match="zero pixel size"):
        Panel([0, 0, 0.1], [0, 0, 0], [0, p, 0], 10, 10)
    with pytest.raises(ConfigError, match="parallel"):
        Panel([0, 0, 0.1], [p, 0, 0], [2 * p, 0, 0], 10, 10)
    with pytest.raises(ConfigError, match="not finite"):
        Panel([np.nan, 0, 0.1], [p, 0, 0], [0, p, 0], 10, 10)
    a = Panel([0, 0, 0.1], [p, 0, 0], [0, p, 0], 10, 10, name="a")
    b = Panel([0.01, 0, 0.1], [p, 0, 0], [0, p, 0], 10, 10, fs_offset=5, name="b")
    with pytest.raises(ConfigError, match="overlap"):
        Detector([a, b])
    with pytest.raises(ConfigError, match="outside"):
        Detector([a], shape=(1, 5, 5))


def test_bad_arguments_raise_config_errors():
    det = Detector.example()
    with pytest.raises(ConfigError):
        det.with_distance(-0.1)
    with pytest.raises(ConfigError):
        det.q_vectors(0.0)
    with pytest.raises(ConfigError, match="polarization"):
        det.polarization_factor("circular")
    with pytest.raises(ConfigError, match="Wrong shape"):
        det.assemble(np.zeros((2, 64, 64)))
    with pytest.raises(ConfigError):
        det.with_mask(np.zeros((64, 64), bool))
    with pytest.raises(ConfigError, match="unknown detector preset"):
        Detector.preset("mystery")
    with pytest.raises(ConfigError, match="unknown option"):
        Detector.preset("jungfrau4m", gap_m=1e-3)
    with pytest.raises(ConfigError):
        Detector.square(63, 1e-4, 0.1, gap_m=1e-3)
    with pytest.raises(ConfigError):
        Detector.square(64, 0.0, 0.1)
    with pytest.raises(ConfigError):
        Detector.preset("pnccd", distance_m=0.0)
