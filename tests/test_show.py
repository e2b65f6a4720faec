"""`spi show` on hard inputs: non-finite pixels, frames without a finite pixel, large files read in bounded
memory, and a progress display while it reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import matplotlib.figure
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import spi
from spisim.visualize import _layout, _radial, _radial_bins, _Scan, show_dataset

SMALL = """
shots: 12
beam: {photon_energy: 1.6 keV, pulse_energy: 0.4 mJ}
detector: {preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m}
particles: [{shape: sphere, radius: 25 nm}]
hits: balanced
output: {shard_size: 6}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("show")
    (folder / "m.yaml").write_text(SMALL)
    out = folder / "d.h5"
    res = CliRunner().invoke(spi, ["simulate", str(folder / "m.yaml"), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    return out


def _copy_with(dataset: Path, target: Path, change) -> Path:
    target.write_bytes(dataset.read_bytes())
    with h5py.File(target, "r+") as f:
        data = f["/entry_1/data_1/data"]
        frames = data[()]
        change(frames)
        data[...] = frames
    return target


def _capture_figures(monkeypatch) -> list:
    figures = []
    save = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kw):
        figures.append(self)
        return save(self, *args, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def test_non_finite_pixels_are_masked_and_counted_and_empty_frames_skipped(dataset, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    with h5py.File(dataset) as f:
        hit_type = f["/entry_1/labels/hit_type"][()]
        mask = f["/entry_1/instrument_1/detector_1/mask"][()].reshape(1, 24, 24) != 0
    good = np.argwhere(~mask)
    bad_pixels = good[rng.choice(len(good), 7, replace=False)]

    def change(frames):
        for k, (m, s, f) in enumerate(bad_pixels):
            frames[2, m, s, f] = np.nan if k % 2 else np.inf
        frames[5] = np.nan

    path = _copy_with(dataset, tmp_path / "nan.h5", change)
    figures = _capture_figures(monkeypatch)
    res = CliRunner().invoke(spi, ["show", str(path), "-o", str(tmp_path / "nan.png"), "-q"])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert warnings == [f"warning: 7 non-finite pixels (NaN or inf) in 1 shot of {path} were masked (#2)",
                        f"warning: 1 shot of {path} with no finite unmasked pixel left out of the picture (#5)"]
    (fig,) = figures
    hist = next(ax for ax in fig.axes if ax.get_title() == "counts per shot")
    counted = sum(_hist_count(p) for p in hist.patches)
    assert counted == len(hit_type) - 1  # ... and count every shot but the empty one, the NaN-pixel shot included
    assert "(1 without a finite pixel left out)" in fig._suptitle.get_text()


def _hist_count(patch) -> int:
    """Shots in a step histogram: the sum of its bar heights (the step outline's y values at each bin)."""
    y = patch.get_path().vertices[:, 1]
    return int(round(y[1:-1:2].sum()))


def test_a_file_of_nan_frames_is_an_error(dataset, tmp_path):
    path = _copy_with(dataset, tmp_path / "allnan.h5", lambda frames: frames.fill(np.nan))
    res = CliRunner().invoke(spi, ["show", str(path), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"Error: {path}: no shot has a finite unmasked pixel (all 12 are NaN or inf): nothing to draw")
    assert not (tmp_path / "x.png").exists()


def test_scan_matches_whole_file_arithmetic(dataset):
    """Block by block (any block size) gives the totals and profiles of the whole frames at once."""
    from spisim.cxi import CXIReader
    from spisim.detector.assemble import build_assembly_map

    with CXIReader(dataset) as reader:
        frames = reader.frames(np.arange(len(reader)))
        mask, pos, energy = reader.mask, reader.pixel_position, reader.photon_energy_ev
    frames[3, 0, 4, 4] = np.nan
    covered = np.isfinite(pos).all(-1)
    good = covered & ~mask
    image, r, _, _ = _layout(pos, covered, good, frames.shape[1:], energy, build_assembly_map)
    edges = np.linspace(0, float(r[good].max()), 61)
    for step in (1, 5, 12):
        scan = _Scan(len(frames), good, image, _radial_bins(r, good, edges), 60, {0, 3}, set(range(12)))
        for start in range(0, len(frames), step):
            scan.add(frames[start:start + step], start)
        expect = np.nansum(np.where(good, frames, 0.0), axis=(1, 2, 3))
        np.testing.assert_allclose(scan.totals, expect, rtol=1e-6)
        assert scan.n_bad.tolist() == [0, 0, 0, int(good[0, 4, 4])] + [0] * 8 and scan.usable.all()
        np.testing.assert_allclose(np.array([scan.profiles[i] for i in range(12)]), _radial(frames, r, good, edges),
                                   equal_nan=True)
        assert np.isnan(scan.images[3]).sum() >= np.isnan(scan.images[0]).sum()


@pytest.mark.slow
def test_large_files_are_read_in_bounded_memory(tmp_path):
    """A 400-frame file of 59 MB is drawn with a few MB of frames in memory at a time, not the file."""
    n, ss, fs = 400, 192, 192
    rng = np.random.default_rng(0)
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("/entry_1/data_1/data", (n, 1, ss, fs), np.float32, chunks=(1, 1, ss, fs))
        for i in range(0, n, 50):
            d[i:i + 50] = rng.poisson(1.0, (50, 1, ss, fs)).astype(np.float32)
        f["/entry_1/labels/hit_type"] = np.arange(n) % 4
        f["/entry_1/labels/hit_type"].attrs["names"] = '["no_hit", "single", "multi", "unintended"]'
    size = n * ss * fs * 4
    seen, before, peaks = [], [], []

    def on_start(total: int) -> None:  # the file is open: reading starts
        tracemalloc.reset_peak()
        before.append(tracemalloc.get_traced_memory()[0])

    def progress(k: int) -> None:
        seen.append(k)
        peaks.append(tracemalloc.get_traced_memory()[1] - before[0])  # the most held at once while reading

    tracemalloc.start()
    try:
        show_dataset(path, tmp_path / "big.png", per_class=2, block_bytes=2 << 20, on_start=on_start,
                     progress=progress)
    finally:
        tracemalloc.stop()
    assert sum(seen) == n and max(seen) == (2 << 20) // (4 * ss * fs)
    assert max(peaks) < 5 * (2 << 20), (max(peaks), size)  # a few blocks of 2 MB, not the 59 MB of frames
    assert (tmp_path / "big.png").stat().st_size > 10_000


def test_progress_is_shown_while_reading(dataset, tmp_path):
    res = CliRunner().invoke(spi, ["show", str(dataset), "-o", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert lines[0] == "reading: 0/12 shots (0.0 %)" and lines[-1].startswith("reading: 12/12 shots (100.0 %)")
    assert lines[-1].endswith(tuple(f"done after 0:{s:02d}" for s in range(60)))
    assert res.stdout.strip() == f"wrote {tmp_path / 'p.png'}"
    quiet = CliRunner().invoke(spi, ["show", str(dataset), "-o", str(tmp_path / "q.png"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
