"""Binned and subdivided detectors, and detectors read back from a CXI file's pixel positions."""

from __future__ import annotations

import numpy as np
import pytest

from spisim.cxi import CXIWriter
from spisim.detector import Detector
from spisim.detector.binning import bin_mask, bin_sum, upsample_mask
from spisim.errors import ConfigError


def test_bin_sum_matches_explicit_loop():
    rng = np.random.default_rng(1)
    data = rng.random((3, 2, 6, 9))
    out = bin_sum(data, 3)
    assert out.shape == (3, 2, 2, 3)
    for a in range(2):
        for b in range(3):
            assert np.allclose(out[..., a, b], data[..., 3 * a:3 * a + 3, 3 * b:3 * b + 3].sum(axis=(-2, -1)))


def test_bin_sum_refuses_sizes_that_do_not_divide():
    with pytest.raises(ConfigError, match="multiples of 4"):
        bin_sum(np.zeros((6, 8)), 4)


def test_bin_mask_is_any_and_upsample_is_its_inverse_for_whole_blocks():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 1] = True
    binned = bin_mask(mask, 2)
    assert binned.tolist() == [[[True, False], [False, False]]]
    assert np.array_equal(bin_mask(upsample_mask(binned, 2), 2), binned)


def test_binned_detector_conserves_area_and_solid_angle():
    det = Detector.preset("pnccd")
    b = det.binned(8)
    assert b.shape == (2, 64, 128)
    assert b.pixel_size == pytest.approx(8 * det.pixel_size)
    # a binned pixel covers the area of the 64 it joins: solid angles add up (exact formula on both)
    assert np.allclose(b.solid_angles(), bin_sum(det.solid_angles(), 8), rtol=1e-9)
    # its centre is the mean of theirs
    centres = bin_sum(np.moveaxis(det.pixel_positions, -1, 0), 8) / 64
    assert np.allclose(np.moveaxis(b.pixel_positions, -1, 0), centres, atol=1e-12)


def test_binned_mask_flags_a_bin_with_any_bad_pixel():
    det = Detector.square(8, 100e-6, 0.1)
    bad = np.zeros(det.shape, bool)
    bad[0, 5, 2] = True
    b = det.with_mask(bad).binned(4)
    assert b.mask.tolist() == [[[False, False], [True, False]]]


def test_subdivided_detector_has_the_same_area_and_bins_back():
    det = Detector.preset("square", n_pixels=16, pixel_size_m=600e-6, distance_m=0.3)
    sub = det.subdivided(3)
    assert sub.shape == (1, 48, 48)
    assert np.allclose(bin_sum(sub.solid_angles(), 3), det.solid_angles(), rtol=1e-9)
    back = sub.binned(3)
    assert np.allclose(back.pixel_positions, det.pixel_positions, atol=1e-12)


def test_binning_a_panel_whose_size_does_not_divide_is_an_error():
    det = Detector.square(10, 100e-6, 0.1)
    with pytest.raises(ConfigError, match="multiples of 4"):
        det.binned(4)


def _write_geometry(path, det):
    with CXIWriter(path, 1, pixel_position=det.pixel_positions, solid_angle=det.solid_angles(), mask=det.mask,
                   photon_energy_ev=1600.0, pulse_energy_j=1e-3, structures=[], max_particles=1) as w:
        w.data[0] = 0
        w._next = 1


@pytest.mark.parametrize("name", ["pnccd", "agipd1m", "jungfrau4m"])
def test_detector_read_back_from_cxi_pixel_positions(tmp_path, name):
    det = Detector.preset(name)
    bad = np.zeros(det.shape, bool)
    bad[0, 3, 4] = True
    det = det.with_mask(bad)
    path = tmp_path / "geom.h5"
    _write_geometry(path, det)
    back = Detector.load(path)
    assert back.shape == det.shape
    assert np.array_equal(back.mask, det.mask)
    ok = det.covered
    assert np.allclose(back.pixel_positions[ok], det.pixel_positions[ok], atol=1e-9)
    assert np.allclose(back.solid_angles(), det.solid_angles(), rtol=1e-6)


def test_cxi_without_pixel_positions_is_one_line_error(tmp_path):
    import h5py

    from spisim.errors import InputFileError

    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((2, 4, 4))
    with pytest.raises(InputFileError, match="pixel_position"):
        Detector.load(path)


def test_curved_pixel_grid_is_refused(tmp_path):
    from spisim.detector.pixelgrid import panels_from_pixel_positions

    det = Detector.square(8, 100e-6, 0.1)
    pos = np.array(det.pixel_positions)
    pos[..., 2] += 1e-4 * (pos[..., 0] / 1e-3) ** 2  # a bowl, not a plane
    with pytest.raises(ConfigError, match="not a flat regular pixel grid"):
        panels_from_pixel_positions(pos)
