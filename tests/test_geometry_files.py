"""Every geometry file in ../shared/data/geometries loads with the right panels, pixels and distances;
CrystFEL and psana readers are checked against EXtra-geom, cfel_fmt and psana's own formulas."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from spisim.detector import Detector
from spisim.errors import ConfigError, InputFileError

# name: (panels, (n_ss, n_fs) of every panel, pixel size m, data shape, distance m, distance tolerance m)
EXPECTED = {
    "agipd1m_extrageom_quadpos.geom": (128, (64, 128), 200e-6, (16, 512, 128), 0.2, 1e-12),
    "crystfel_cspad-cxiformat.geom": (64, (185, 194), 110e-6, (1, 1480, 1552), 0.573224, 1e-9),
    "crystfel_cspad-single.geom": (64, (185, 194), 110e-6, (1, 1480, 1552), 0.573224, 1e-9),
    "crystfel_jf-swissfel-16M.geom": (32, (514, 1030), 75e-6, (1, 16448, 1030), 0.0953 - 0.000085, 1e-9),
    "crystfel_lcls-dec.geom": (2, (512, 1024), 75e-6, (1, 1024, 1024), 0.0678 + 0.0015, 1e-9),
    "crystfel_lcls-june-r0013-r0128.geom": (2, (512, 1024), 75e-6, (1, 1024, 1024), 0.06478 + 0.001475, 1e-9),
    "crystfel_simple.geom": (2, (512, 1024), 75e-6, (1, 1024, 1024), 0.05, 1e-12),
    "cspad_from_psana_def.geom": (64, (185, 194), 109.92e-6, (1, 5920, 388), 0.99985, 1e-4),
    "fxihub-xfel7927_agipd_p008316_r0024_v04.geom": (128, (64, 128), 200e-6, (16, 512, 128), 0.12322, 1e-4),
    "jungfrau4m_extrageom_synthetic.geom": (64, (256, 256), 75e-6, (8, 512, 1024), 0.1, 1e-12),
    "pnccd_extrageom_gap4mm.geom": (2, (512, 1024), 75e-6, (2, 512, 1024), 0.15, 1e-12),
    "pnccd_from_psana_def.geom": (4, (512, 512), 75e-6, (1, 2048, 512), 0.1, 1e-9),
    "psana_geometry-def-cspad.data": (64, (185, 194), 109.92e-6, (32, 185, 388), 0.99985, 1e-4),
    "psana_geometry-def-epix100a.data": (4, (352, 384), 50e-6, (1, 704, 768), 1.0, 1e-9),
    "psana_geometry-def-epix10kaquad.data": (16, (176, 192), 100e-6, (4, 352, 384), 0.1, 1e-4),
    "psana_geometry-def-jungfrau1M.data": (16, (256, 256), 75e-6, (2, 512, 1024), 0.1, 1e-9),
    "psana_geometry-def-jungfrau4M.data": (64, (256, 256), 75e-6, (8, 512, 1024), 0.1, 1e-9),
    "psana_geometry-def-pnccd.data": (4, (512, 512), 75e-6, (4, 512, 512), 0.1, 1e-9),
}
PNCCD_GEOMS = ["crystfel_lcls-dec.geom", "crystfel_lcls-june-r0013-r0128.geom", "crystfel_simple.geom",
               "pnccd_extrageom_gap4mm.geom"]


def load_quietly(path: Path, **kw) -> Detector:
    """Load, ignoring the expected warnings (clen from HDF5 paths, absent mask files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Detector.load(path, **kw)


@pytest.fixture(scope="module")
def geometries(shared_data: Path) -> Path:
    return shared_data / "geometries"


def test_the_table_covers_every_file(geometries):
    assert sorted(p.name for p in geometries.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_geometry_file_loads(geometries, name):
    n_panels, panel_shape, pixel, shape, distance, tol = EXPECTED[name]
    det = load_quietly(geometries / name)
    assert len(det.panels) == n_panels
    assert det.shape == shape
    for p in det.panels:
        assert (p.n_ss, p.n_fs) == panel_shape, p.name
        assert p.pixel_size == pytest.approx(pixel, rel=2e-3), p.name
    assert det.n_pixels == n_panels * panel_shape[0] * panel_shape[1]
    assert det.distance == pytest.approx(distance, abs=tol)
    # every tile lies well in front of the sample and within a metre of the beam axis
    corners = np.concatenate([p.corners() for p in det.panels])
    assert corners[:, 2].min() > 0.02 and np.abs(corners[:, :2]).max() < 1.0


@pytest.mark.parametrize("name", PNCCD_GEOMS)
def test_pnccd_geometries_have_two_1024x512_panels_with_a_gap(geometries, name):
    det = load_quietly(geometries / name)
    assert len(det.panels) == 2
    for p in det.panels:
        assert (p.n_fs, p.n_ss) == (1024, 512)
        assert p.pixel_size == pytest.approx(75e-6, rel=1e-5)
        assert abs(p.fs_vec[0]) == pytest.approx(75e-6, rel=1e-5)  # fs horizontal
    y_ranges = sorted((c[:, 1].min(), c[:, 1].max()) for c in (p.corners() for p in det.panels))
    gap = y_ranges[1][0] - y_ranges[0][1]
    assert gap > 1e-3
    if name == "pnccd_extrageom_gap4mm.geom":
        assert gap == pytest.approx(4e-3, abs=1e-12)
    if name == "crystfel_simple.geom":
        assert gap == pytest.approx(20 * 75.0001875e-6, rel=1e-6)  # corner_y 10 and -522 + 512 pixels


def test_jungfrau16m_unit_suffixes(geometries, tmp_path):
    text = (geometries / "crystfel_jf-swissfel-16M.geom").read_text()
    assert "95.3 mm" in text and "4570 eV" in text
    with pytest.warns(UserWarning, match="mask file 'run47.JF06T32V01.mask.h5' not found"):
        det = Detector.load(geometries / "crystfel_jf-swissfel-16M.geom")
    assert det.metadata["photon_energy_ev"] == pytest.approx(4570.0)
    assert det.panels[0].corner[2] == pytest.approx(0.0953 - 0.000085, abs=1e-12)
    # the same file with plain SI numbers (readable by cfel_fmt too) gives the same panels
    plain = text.replace("95.3 mm", "0.0953").replace("4570 eV", "4570")
    plain = re.sub(r"(_(?:fs|ss) = \d+)\.0\b", r"\1", plain)  # cfel_fmt wants integer pixel ranges
    (tmp_path / "plain.geom").write_text(plain)
    ref = load_quietly(tmp_path / "plain.geom")
    for a, b in zip(det.panels, ref.panels, strict=True):
        np.testing.assert_allclose([a.corner, a.fs_vec, a.ss_vec], [b.corner, b.fs_vec, b.ss_vec], rtol=0, atol=1e-15)
    from cfel_fmt.geometry import load_crystfel_geometry

    cfel = load_crystfel_geometry(str(tmp_path / "plain.geom")).detector["panels"]
    for p in det.panels:
        d = cfel[p.name]
        np.testing.assert_allclose(p.corner, [d["cnx"] / d["res"], d["cny"] / d["res"], d["clen"] + d["coffset"]],
                                   atol=1e-12)
    # other unit spellings, and unknown units
    (tmp_path / "kev.geom").write_text(text.replace("4570 eV", "4.57 keV").replace("95.3 mm", "0.0953 m"))
    other = load_quietly(tmp_path / "kev.geom")
    assert other.metadata["photon_energy_ev"] == pytest.approx(4570.0) and other.distance == pytest.approx(det.distance)
    (tmp_path / "bad.geom").write_text(text.replace("95.3 mm", "95.3 furlongs"))
    with pytest.raises(ConfigError, match="unknown unit 'furlongs'"):
        load_quietly(tmp_path / "bad.geom")


def test_jungfrau16m_bad_regions(geometries):
    det = load_quietly(geometries / "crystfel_jf-swissfel-16M.geom")
    expected = np.zeros(det.shape, dtype=bool)
    for ss0, ss1, fs0, fs1 in [(7710, 7770, 890, 1029), (6050, 6167, 957, 1029), (6631, 6681, 0, 135),
                               (8224, 8351, 0, 60)]:
        expected[0, ss0 : ss1 + 1, fs0 : fs1 + 1] = True
    np.testing.assert_array_equal(det.mask, expected)


def test_xy_bad_regions_of_old_lcls_syntax(geometries):
    det = load_quietly(geometries / "crystfel_lcls-dec.geom")
    px = det.pixel_positions / 75.00018750046876e-6  # pixel units of res = 13333.3
    x, y = px[..., 0], px[..., 1]
    jet = ((np.abs(x) <= 15) & (y >= 71.3) & (y <= 159.3)) | ((np.abs(x) <= 25) & (y >= 159.3) & (y <= 600))
    assert jet.sum() > 1000
    np.testing.assert_array_equal(det.mask, jet)


def test_crystfel_010_mask_syntax(geometries):
    with pytest.warns(UserWarning, match="mask file") as record:
        det = Detector.load(geometries / "fxihub-xfel7927_agipd_p008316_r0024_v04.geom")
    missing = [str(w.message) for w in record if "mask file" in str(w.message)]
    assert len(missing) == 2 and any("mask_hvoff" in m for m in missing)
    assert not det.mask.any()
    assert any("/entry_1/data_1/mask" in m and "not applied" in m for m in det.metadata["ignored_masks"])


@pytest.mark.parametrize("new_syntax", [False, True])
def test_mask_file_is_applied_with_good_and_bad_bits(geometries, tmp_path, new_syntax):
    values = np.random.default_rng(0).integers(0, 8, size=(1024, 1024))
    with h5py.File(tmp_path / "bits.h5", "w") as f:
        f["/pixels/mask"] = values
    if new_syntax:
        header = "mask2_file = bits.h5\nmask2_data = /pixels/mask\nmask2_goodbits = 0x01\nmask2_badbits = 0x04\n"
    else:
        header = "mask_file = bits.h5\nmask = /pixels/mask\nmask_good = 0x01\nmask_bad = 0x04\n"
    (tmp_path / "m.geom").write_text(header + (geometries / "crystfel_simple.geom").read_text())
    det = Detector.load(tmp_path / "m.geom")
    expected = ((values & 1) != 1) | ((values & 4) != 0)
    np.testing.assert_array_equal(det.mask[0], expected)


def test_psana_pnccd_tilt_is_in_the_pixel_positions(geometries, tmp_path):
    text = (geometries / "psana_geometry-def-pnccd.data").read_text()
    tilted = Detector.load(geometries / "psana_geometry-def-pnccd.data")
    flat_text = re.sub(r"20\.00000", "0.00000", text)
    assert flat_text != text
    (tmp_path / "flat.data").write_text(flat_text)
    flat = Detector.load(tmp_path / "flat.data")
    for a, b in zip(tilted.panels, flat.panels, strict=True):
        assert sorted(np.abs(b.fs_vec[:2])) == pytest.approx([0, 75e-6], abs=1e-15)  # untilted: axis-aligned
        cos = np.dot(a.fs_vec, b.fs_vec) / (np.linalg.norm(a.fs_vec) * np.linalg.norm(b.fs_vec))
        assert np.degrees(np.arccos(cos)) == pytest.approx(20.0, abs=1e-9)
    # the tilt rotates each half (SEG2Q) rigidly: distances between its pixels are unchanged
    for seg in (0, 2):
        pa = tilted.pixel_positions[seg:seg + 2, ::97, ::89].reshape(-1, 3)
        pb = flat.pixel_positions[seg:seg + 2, ::97, ::89].reshape(-1, 3)
        da = np.linalg.norm(pa[:, None] - pa[None], axis=-1)
        db = np.linalg.norm(pb[:, None] - pb[None], axis=-1)
        np.testing.assert_allclose(da, db, atol=1e-12)


@pytest.mark.parametrize(
    "psana_name, crystfel_name",
    [("psana_geometry-def-pnccd.data", "pnccd_from_psana_def.geom"),
     ("psana_geometry-def-cspad.data", "cspad_from_psana_def.geom")],
)
def test_psana_and_its_crystfel_conversion_agree(geometries, psana_name, crystfel_name):
    """psana data (segments, rows, cols) and the converted CrystFEL slab (segments * rows, cols) store the
    pixels in the same order, so centres compare index by index after flattening. psana's converter
    writes the *centre* of each ASIC's first pixel as CrystFEL's corner_x/y (CrystFEL means the outer
    corner), so the CrystFEL centres lie half a pixel diagonal further; corrected for that, they agree
    within 1 µm (the file's 6-decimal rounding; measured: 20 nm in x, y and 0.5 µm in z)."""
    a = Detector.load(geometries / psana_name)
    with pytest.warns(UserWarning, match="clen is read from a data file"):
        b = Detector.load(geometries / crystfel_name)
    assert a.n_pixels == b.n_pixels
    half_diagonal = np.zeros((*b.shape, 3))
    for p in b.panels:
        half_diagonal[p.data_slice] = 0.5 * (p.fs_vec + p.ss_vec)
    pa = a.pixel_positions.reshape(-1, 3)
    pb = b.pixel_positions.reshape(-1, 3)
    np.testing.assert_allclose(pb - half_diagonal.reshape(-1, 3), pa, rtol=0, atol=1e-6)
    assert np.abs(pb - pa).max() < 0.75 * b.pixel_size  # uncorrected: within one pixel
    # layout-free check: every psana pixel centre has a CrystFEL centre within 1 µm
    from scipy.spatial import cKDTree

    tree = cKDTree(pb - half_diagonal.reshape(-1, 3), balanced_tree=False, compact_nodes=False)
    dist, _ = tree.query(pa[::37])
    assert dist.max() < 1e-6


@pytest.mark.parametrize(
    "name, cls_name, clen",
    [("agipd1m_extrageom_quadpos.geom", "AGIPD_1MGeometry", 0.2),
     ("fxihub-xfel7927_agipd_p008316_r0024_v04.geom", "AGIPD_1MGeometry", 0.12322),
     ("jungfrau4m_extrageom_synthetic.geom", "JUNGFRAUGeometry", 0.1),
     ("pnccd_extrageom_gap4mm.geom", "PNCCDGeometry", 0.15)],
)
def test_extra_geom_reads_the_same_pixel_positions(geometries, name, cls_name, clen):
    import extra_geom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = getattr(extra_geom, cls_name).from_crystfel_geom(str(geometries / name)).get_pixel_positions()
    det = load_quietly(geometries / name)
    # EXtra-geom leaves out clen (its z is coffset only)
    np.testing.assert_allclose(det.pixel_positions, reference + [0.0, 0.0, clen], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["crystfel_cspad-cxiformat.geom", "crystfel_cspad-single.geom",
                                  "crystfel_lcls-dec.geom", "crystfel_lcls-june-r0013-r0128.geom",
                                  "crystfel_simple.geom", "cspad_from_psana_def.geom"])
def test_cfel_fmt_reads_the_same_panels(geometries, name):
    from cfel_fmt.geometry import load_crystfel_geometry

    panels = load_crystfel_geometry(str(geometries / name)).detector["panels"]
    det = load_quietly(geometries / name)
    assert [p.name for p in det.panels] == list(panels)
    for p in det.panels:
        d = panels[p.name]
        res = d["res"]
        clen = d["clen"] if not d["clen_from"] else 0.0
        np.testing.assert_allclose(p.corner, [d["cnx"] / res, d["cny"] / res, clen + d["coffset"]], atol=1e-12)
        np.testing.assert_allclose(p.fs_vec, np.array([d["fsx"], d["fsy"], d["fsz"]]) / res, atol=1e-15)
        np.testing.assert_allclose(p.ss_vec, np.array([d["ssx"], d["ssy"], d["ssz"]]) / res, atol=1e-15)
        assert (p.ss_offset, p.fs_offset) == (d["orig_min_ss"], d["orig_min_fs"])


def test_clen_from_data_file_can_be_given(geometries):
    with pytest.warns(UserWarning, match="clen is read from a data file"):
        default = Detector.load(geometries / "crystfel_cspad-cxiformat.geom")
    given = Detector.load(geometries / "crystfel_cspad-cxiformat.geom", clen_m=-0.2)
    assert given.distance == pytest.approx(default.distance - 0.2, abs=1e-12)


def test_psana_preset_matches_psana_default_file(geometries):
    preset = Detector.preset("jungfrau4m")
    from_file = Detector.load(geometries / "psana_geometry-def-jungfrau4M.data")
    np.testing.assert_allclose(preset.pixel_positions, from_file.pixel_positions, rtol=0, atol=1e-12)


# ---- psana segment layouts and transforms against psana's own formulas ----------------------------


def _psana_segment_xy(seg: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (x, y) µm in the segment frame, transcribed from psana's SegGeometry*.make_pixel_coord_arrs."""
    if seg == "SENS2X1:V1":
        x_rhs = np.arange(194) * 109.92 + 274.80 - 109.92 / 2
        x = np.hstack([-x_rhs[::-1], x_rhs])
        y = -np.arange(185) * 109.92
        y -= y[-1] / 2
        return np.meshgrid(x, y)
    if seg in ("EPIX10KA:V1", "EPIX100:V1"):
        p, w, rows, cols = (100, 225, 352, 384) if seg == "EPIX10KA:V1" else (50, 175, 704, 768)
        x_rhs = np.arange(cols // 2) * p + w - p / 2
        y_rhs = np.arange(rows // 2) * p + w - p / 2
        x = np.hstack([-x_rhs[::-1], x_rhs])
        y = np.hstack([y_rhs[::-1], -y_rhs]) if seg == "EPIX10KA:V1" else np.hstack([-y_rhs[::-1], y_rhs])
        return np.meshgrid(x, y)
    if seg.startswith("JUNGFRAU"):
        x_asic = np.arange(256) * 75.0
        x0 = np.array((-512 - 2.5, -256.5, 1.5, 256 + 3.5)) * 75
        x = np.hstack([x_asic + x0[i] for i in range(4)])
        if seg == "JUNGFRAU:V2":
            y0 = np.array((-256.5, 1.5)) * 75
            y = np.hstack([y0[0] + x_asic, y0[1] + x_asic])
        else:
            y0 = np.array((256.5, -1.5)) * 75
            y = np.hstack([y0[0] - x_asic, y0[1] - x_asic])
        return np.meshgrid(x, y)
    if seg == "PNCCD:V1":  # matrix frame: x along rows, y along columns
        yy, xx = np.meshgrid(np.arange(512) * 75.0, np.arange(512) * 75.0)
        return xx, yy
    if seg.startswith("MTRX:V2"):
        rows, cols, pr, pc = 20, 30, 50.0, 60.0
        x = (np.arange(cols) - (cols - 1) / 2) * pc
        y = (np.arange(rows) - (rows - 1) / 2) * -pr
        return np.meshgrid(x, y)
    raise AssertionError(seg)


def _psana_rotation(x, y, angle_deg):
    s, c = np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))
    return x * c - y * s, y * c + x * s


def _psana_transform(x, y, z, pars):
    """GeometryObject.transform_geo_coord_arrays: rotate about z, then y, then x, then translate."""
    x0, y0, z0, rz, ry, rx = pars
    x1, y1 = _psana_rotation(x, y, rz)
    z2, x2 = _psana_rotation(z, x1, ry)
    y3, z3 = _psana_rotation(y1, z2, rx)
    return x2 + x0, y3 + y0, z3 + z0


@pytest.mark.parametrize("seg", ["SENS2X1:V1", "EPIX10KA:V1", "EPIX100:V1", "JUNGFRAU:V1", "JUNGFRAU:V2",
                                 "PNCCD:V1", "MTRX:V2:20:30:50:60"])
def test_psana_segment_layouts_and_nested_transforms(tmp_path, seg):
    cam = (1200.0, -800.0, -300000.0, 30.0, 4.0, -3.0)  # under IP: z negated like psana does
    sub = (-5000.0, 700.0, 15.0, 90.0, 0.0, 180.0)
    text = (f"CAM:V1 0 {seg} 0 {sub[0]} {sub[1]} {sub[2]} {sub[3] - 0.4} {sub[4] + 0.2} {sub[5]} 0.4 -0.2 0\n"
            f"IP 0 CAM:V1 0 {cam[0]} {cam[1]} {-cam[2]} {cam[3]} {cam[4]} {cam[5]} 0 0 0\n")
    (tmp_path / "g.data").write_text(text)
    det = Detector.load(tmp_path / "g.data")
    x, y = _psana_segment_xy(seg)
    z = np.zeros_like(x)
    x, y, z = _psana_transform(x, y, z, sub)
    x, y, z = _psana_transform(x, y, z, cam)
    expected = np.stack([-y, -x, -z], axis=-1) * 1e-6  # psana frame -> lab frame
    assert det.shape == (1, *x.shape)
    np.testing.assert_allclose(det.pixel_positions[0], expected, rtol=0, atol=1e-12)


# ---- errors ----------------------------------------------------------------------------------------


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        Detector.load(tmp_path / "nothing.geom")
    with pytest.raises(InputFileError):
        Detector.from_crystfel(tmp_path / "nothing.geom")
    with pytest.raises(InputFileError):
        Detector.from_psana(tmp_path / "nothing.data")
    (tmp_path / "g.xyz").write_text("x")
    with pytest.raises(ConfigError, match="unknown geometry file type"):
        Detector.load(tmp_path / "g.xyz")


@pytest.mark.parametrize(
    "change, message",
    [
        (("0/res = 13333.3  ; 75 micron pixel size", "0/res = 0"), "impossible pixel size"),
        (("0/corner_x = -512.00", "0/corner_x = nan"), "not finite"),
        (("0/corner_x = -512.00\n", ""), "has no corner_x"),
        (("clen = 50.0e-3", "clen = -50.0e-3"), "downstream"),
        (("0/fs = x", "0/fs = -z"), "downstream"),
        (("0/fs = x", "0/fs = sideways"), "cannot read direction"),
        (("adu_per_eV = 1.0", "adu_per_eV 1.0"), "not a 'key = value' line"),
        (("0/min_fs = 0", "0/min_fs = 0\n0/dim0 = ss\n0/dim1 = 3\n0/dim2 = fs"), "not supported"),
        (("1/max_ss = 511", "1/max_ss = 600"), "overlap"),
        (("clen = 50.0e-3", ""), r"^broken.geom has no clen line, so its panels lie at z = 0 m, not downstream .*"
                                 r"add a camera length such as 'clen = 0.1' \(m\)"),
        (("clen = 50.0e-3", "clen = /LCLS/detector_1/EncoderValue"),
         r"^broken.geom reads clen from a data file \(/LCLS/detector_1/EncoderValue\), so its panels lie"),
    ],
)
def test_broken_crystfel_files_raise_config_errors(geometries, tmp_path, change, message):
    text = (geometries / "crystfel_simple.geom").read_text()
    assert change[0] in text
    (tmp_path / "broken.geom").write_text(text.replace(change[0], change[1], 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the clen-from-data-file warning comes before the error
        with pytest.raises(ConfigError, match=message):
            Detector.load(tmp_path / "broken.geom")


def test_a_binary_geometry_file_is_named_as_such(tmp_path):
    (tmp_path / "random.geom").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputFileError, match=r"random.geom is binary, not a CrystFEL .geom text file$"):
        Detector.load(tmp_path / "random.geom")


def test_crystfel_and_psana_readers_return_one_kind_of_result(geometries):
    from spisim.detector.crystfel import read_crystfel
    from spisim.detector.panels import GeometryFile
    from spisim.detector.psana import read_psana

    a = read_crystfel(geometries / "crystfel_simple.geom")
    b = read_psana(geometries / "psana_geometry-def-pnccd.data")
    assert type(a) is type(b) is GeometryFile
    assert a.shape == (1, 1024, 1024) and a.mask.shape == a.shape and not a.mask.any()
    assert b.shape[0] == 4 and b.mask.shape == b.shape


@pytest.mark.parametrize(
    "text, message",
    [
        ("IP 0 MYSTERY:V9 0 0 0 100000 0 0 0 0 0 0\n", "unknown psana segment type"),
        ("IP 0 PNCCD:V1 0 0 0 100000 0 0 0 0 0\n", "expected 13 fields"),
        ("IP 0 PNCCD:V1 0 0 0 100000 0 0 0 0 0 x\n", "numbers"),
        ("# only comments\n", "no geometry objects"),
        ("IP 0 PNCCD:V1 0 0 0 -100000 0 0 0 0 0 0\nTOP 0 PNCCD:V1 1 0 0 1 0 0 0 0 0 0\n", "top objects"),
        ("IP 0 SENS2X1:V1 0 0 0 100000 0 0 0 0 0 0\nIP 0 PNCCD:V1 0 0 0 100000 0 0 0 0 0 0\n", "different shapes"),
        ("IP 0 PNCCD:V1 0 0 0 100000 0 90 0 0 0 0\n", "edge-on|downstream"),
    ],
)
def test_broken_psana_files_raise_config_errors(tmp_path, text, message):
    (tmp_path / "broken.data").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Detector.load(tmp_path / "broken.data")
