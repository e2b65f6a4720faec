"""CXI writer/reader round trip and the errors on bad files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from spisim.cxi import HIT_TYPES, CXIReader, CXIWriter, ShotLabels
from spisim.errors import InputFileError


def _write(path, n=5, complete=True, compression="gzip"):
    rng = np.random.default_rng(1)
    shape = (2, 6, 5)
    pos = rng.normal(size=(*shape, 3))
    frames = rng.poisson(3.0, size=(n, *shape)).astype(np.float32)
    w = CXIWriter(
        path, n, pixel_position=pos, solid_angle=np.full(shape, 1e-7), mask=np.zeros(shape, bool),
        photon_energy_ev=1600.0, pulse_energy_j=2e-3, structures=["a", "b"], max_particles=3,
        compression=compression, attrs={"spi_seed": 7},
    )
    for i in range(n if complete else n - 1):
        k = i % 3
        w.write_shot(
            i, frames[i],
            ShotLabels(hit_type=i % 4, structure=np.arange(k) % 2, orientation=np.tile([1.0, 0, 0, 0], (k, 1)),
                       position=np.zeros((k, 3)), fluence=1e15 * (i + 1), total_photons=float(frames[i].sum())),
        )
    w.close()
    return frames, pos


@pytest.mark.parametrize("compression", ["gzip", "lz4", "none"])
def test_round_trip(tmp_path, compression):
    frames, pos = _write(tmp_path / "d.h5", compression=compression)
    with CXIReader(tmp_path / "d.h5") as r:
        assert len(r) == 5 and r.frame_shape == (2, 6, 5)
        np.testing.assert_array_equal(r[3], frames[3])
        np.testing.assert_array_equal(r.frames([4, 0, 4]), frames[[4, 0, 4]])
        np.testing.assert_array_equal(r.hit_type, np.arange(5) % 4)
        assert r.class_names == list(HIT_TYPES)
        assert r.structure_names == ["a", "b"]
        np.testing.assert_allclose(r.pixel_position, pos)
        assert r.photon_energy_ev == pytest.approx(1600.0)
        assert r.attrs["spi_seed"] == 7
        struct = r.labels("structure")
        assert list(struct[2]) == [0, 1, -1]
        assert np.isnan(r.labels("orientation")[1, 1:]).all()
        scale, aspect = r.labels("scale"), r.labels("aspect")  # 1 per particle where none was given, NaN pads
        assert scale.shape == aspect.shape == (5, 3) and scale.dtype == np.float64
        assert list(scale[2, :2]) == [1.0, 1.0] and np.isnan(scale[2, 2]) and np.isnan(aspect[0]).all()
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["/entry_1/instrument_1/detector_1/data"].shape == (5, 2, 6, 5)
        assert json.loads(f["/entry_1/labels/hit_type"].attrs["names"])[1] == "single"


def test_incomplete_file_refused(tmp_path):
    _write(tmp_path / "d.h5", complete=False)
    with pytest.raises(InputFileError, match="incomplete"):
        CXIReader(tmp_path / "d.h5")
    assert len(CXIReader(tmp_path / "d.h5", allow_incomplete=True)) == 5


def test_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        CXIReader(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputFileError, match="not a readable HDF5"):
        CXIReader(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputFileError, match="no dataset"):
        CXIReader(tmp_path / "empty.h5")


def test_real_style_3d_file(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f["/entry_1/data_1/data"] = data
    with CXIReader(tmp_path / "real.h5") as r:
        assert r.frame_shape == (1, 3, 2) and not r.has_labels
        np.testing.assert_array_equal(r[2][0], data[2])
        assert not r.mask.any()


def test_labels_block_stores_sizes(tmp_path):
    from spisim.cxi import labels_block

    lab = ShotLabels(hit_type=2, structure=np.array([0, 0]), orientation=np.tile([1.0, 0, 0, 0], (2, 1)),
                     position=np.zeros((2, 3)), fluence=1.0, total_photons=1.0, scale=np.array([0.9, 1.2]),
                     aspect=np.array([1.1, 0.95]))
    block = labels_block([lab], 3)
    np.testing.assert_array_equal(block["scale"][0, :2], [0.9, 1.2])
    np.testing.assert_array_equal(block["aspect"][0, :2], [1.1, 0.95])
    assert np.isnan(block["scale"][0, 2]) and np.isnan(block["aspect"][0, 2])
