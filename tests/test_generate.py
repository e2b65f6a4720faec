"""The shot loop: byte-identical output for any workers, backend and interruption; the file layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import spisim
from spisim.cxi import HIT_TYPES, CXIReader
from spisim.errors import InputFileError, SpiError
from spisim.generate import Plan, generate, parts_dir, shot_streams
from spisim.manifest import load_manifest, parse_manifest

SMALL = """
seed: 11
shots: {shots}
beam: {{photon_energy: 1.6 keV, pulse_energy: 0.4 mJ, focus_diameter: 1.5 um}}
detector: {{preset: square, n_pixels: {pixels}, pixel_size: 400 um, distance: 0.12 m}}
particles:
  - {{name: s30, shape: sphere, radius: 30 nm, model: continuum}}
  - {{name: ell, shape: spheroid, radius: 20 nm, polar_radius: 35 nm, model: continuum}}
hits: balanced
multi: {{n_min: 2, n_max: 3}}
noise: {{background: {{photons: 40}}, jitter: 0.2, beamstop: 1 mm, readout: 0.1, dead_pixels: 0.01}}
output: {{shard_size: {shard}, compression: gzip}}
"""


def small(shots: int = 24, shard: int = 5, pixels: int = 24, **over):
    return parse_manifest(SMALL.format(shots=shots, shard=shard, pixels=pixels), overrides=over or None)


def _bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def test_layout_labels_and_attributes(tmp_path):
    m = small()
    result = generate(m, tmp_path / "d.h5")
    assert result.n_shots == 24 and result.shards_made == 5 and result.shards_reused == 0
    assert not parts_dir(tmp_path / "d.h5").exists()
    with h5py.File(tmp_path / "d.h5") as f:
        assert f.attrs["spi_manifest"] == m.text
        assert f.attrs["spi_version"] == spisim.__version__
        assert f.attrs["spi_seed"] == 11 and bool(f.attrs["spi_complete"])
        data = f["/entry_1/data_1/data"]
        assert data.shape == (24, 1, 24, 24) and data.chunks == (1, 1, 24, 24) and data.compression == "gzip"
        assert data.dtype == np.float32 and data.attrs["units"] == "photons"
        det = f["/entry_1/instrument_1/detector_1"]
        mask = det["mask"][()]
        pos = det["pixel_position"][()]
        r = np.hypot(pos[..., 0], pos[..., 1])
        assert mask[r < 0.8e-3].all() and mask.dtype == np.uint8  # the beamstop is masked
        assert 0 < mask.mean() < 0.1
        assert det["distance"][()] == pytest.approx(0.12)
        assert f["/entry_1/instrument_1/source_1/energy"][()] == pytest.approx(1600 * 1.602176634e-19)
        lab = f["/entry_1/labels"]
        assert json.loads(lab["hit_type"].attrs["names"]) == list(HIT_TYPES)
        assert json.loads(lab.attrs["structures"]) == ["s30", "ell", "droplet", "salt", "debris"]
        assert lab["structure"].shape == (24, m.spec.max_particles)
        frames = data[()]
        n = lab["n_particles"][()]
        ht = lab["hit_type"][()]
        assert set(ht) == {0, 1, 2, 3}, "a balanced mix of 24 shots holds all four types"
        assert np.all(n[ht == 0] == 0) and np.all(n[ht == 1] == 1) and np.all(n[ht == 2] >= 2)
        q = lab["orientation"][()]
        real = ~np.isnan(q[..., 0])
        assert real.sum() == n.sum()
        np.testing.assert_allclose(np.linalg.norm(q[real], axis=-1), 1.0, rtol=1e-12)
        assert np.all(lab["structure"][()][~real] == -1)
        # labels agree with the frames: hits scatter far more than misses
        totals = np.where(mask, 0, frames).sum(axis=(1, 2, 3))
        assert totals[ht == 0].max() < totals[ht != 0].min()
    with CXIReader(tmp_path / "d.h5") as reader:
        assert len(reader) == 24 and reader.labels("pulse_scale").std() > 0


@pytest.mark.slow
def test_workers_and_chunking_do_not_change_the_bytes(tmp_path):
    generate(small(), tmp_path / "a.h5")
    generate(small(), tmp_path / "b.h5", workers=2)
    assert _bytes(tmp_path / "a.h5") == _bytes(tmp_path / "b.h5")
    # another shard size changes only how the work is cut: the frames and labels stay the same
    generate(small(shard=7), tmp_path / "c.h5")
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "c.h5") as fc:
        np.testing.assert_array_equal(fa["/entry_1/data_1/data"][()], fc["/entry_1/data_1/data"][()])
        for name in fa["/entry_1/labels"]:
            np.testing.assert_array_equal(fa["/entry_1/labels"][name][()], fc["/entry_1/labels"][name][()])


@pytest.mark.slow
def test_default_manifest_with_atoms_two_workers_same_bytes(tmp_path):
    m = load_manifest(overrides={"shots": 12, "output": {"shard_size": 4}})
    generate(m, tmp_path / "one.h5")
    generate(m, tmp_path / "two.h5", workers=2)
    assert _bytes(tmp_path / "one.h5") == _bytes(tmp_path / "two.h5")


def test_resume_after_a_crash_gives_the_same_bytes(tmp_path):
    m = small()
    generate(m, tmp_path / "ref.h5")
    out = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="injected failure after 2 shards"):
        generate(m, out, _fail_after_shards=2)
    assert not out.exists(), "a partial run must never leave the final file"
    folder = parts_dir(out)
    shards = sorted(p.name for p in folder.glob("shard-*.h5"))
    assert shards == ["shard-000000.h5", "shard-000001.h5"] and (folder / "plan.json").is_file()
    with pytest.raises(SpiError, match="add --resume to continue it"):
        generate(m, out)
    with pytest.raises(SpiError, match="made from another manifest"):
        generate(small(seed=12), out, resume=True)
    import fcntl

    with open(folder / "lock", "w") as fh:  # another run still at work on these shards
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(SpiError, match="another spi simulate is writing"):
            generate(m, out, resume=True)
        with pytest.raises(SpiError, match="another spi simulate is writing"):  # not "add --resume"
            generate(m, out)
        with pytest.raises(SpiError, match="another spi simulate is writing"):  # the lock holds under --overwrite
            generate(m, out, overwrite=True)
        assert sorted(p.name for p in folder.glob("shard-*.h5")) == shards  # the other run's work is untouched
    (folder / "shard-000003.h5.tmp.999").write_bytes(b"half a shard")  # a worker killed mid-write
    seen = []
    result = generate(m, out, resume=True, on_start=lambda todo, done: seen.append((todo, done)))
    assert seen == [(14, 10)] and result.shards_reused == 2 and result.shards_made == 3
    assert _bytes(out) == _bytes(tmp_path / "ref.h5")
    with pytest.raises(SpiError, match="already complete"):
        generate(m, out, resume=True)
    with pytest.raises(SpiError, match="exists: use --overwrite"):
        generate(m, out)
    generate(m, out, overwrite=True)
    assert _bytes(out) == _bytes(tmp_path / "ref.h5")


def test_incomplete_file_is_refused(tmp_path):
    m = small(shots=6, shard=3)
    generate(m, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "a") as f:  # what a writer leaves when killed before the end
        f.attrs["spi_complete"] = False
    with pytest.raises(InputFileError, match="incomplete"):
        CXIReader(tmp_path / "d.h5")


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_bytes(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(SMALL.format(shots=480, shard=8, pixels=96))
    m = load_manifest(manifest)
    generate(m, tmp_path / "ref.h5")
    out = tmp_path / "out.h5"
    cmd = [sys.executable, "-m", "cli", "simulate", str(manifest), "-o", str(out), "-q"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    folder = parts_dir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("shard-*.h5"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    kept = len(list(folder.glob("shard-*.h5")))
    assert 3 <= kept < Plan(480, 8).n_shards
    result = generate(m, out, resume=True)
    assert result.shards_reused == kept
    assert _bytes(out) == _bytes(tmp_path / "ref.h5")


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_bytes(tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed")
    m = small(shots=12, shard=4)
    generate(m, tmp_path / "a.h5")
    done = []
    generate(m, tmp_path / "d.h5", workers=2, backend="dask", progress=done.append)
    assert sum(done) == 12
    assert _bytes(tmp_path / "a.h5") == _bytes(tmp_path / "d.h5")
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        generate(m, tmp_path / "s.h5", scheduler=cluster.scheduler_address)  # a running cluster
    assert _bytes(tmp_path / "a.h5") == _bytes(tmp_path / "s.h5")
    import spisim.generate

    monkeypatch.setattr(spisim.generate, "DASK_CONNECT_TIMEOUT", "1s")
    with pytest.raises(SpiError, match="cannot reach the Dask scheduler"):
        generate(m, tmp_path / "x.h5", scheduler="tcp://127.0.0.1:9")


def test_other_compressions_and_adu_output(tmp_path):
    m = small(shots=4, shard=2, noise={"gain": 8.0, "pedestal": 20.0, "readout": 2.0}, output={"compression": "lz4"})
    generate(m, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5") as f:
        d = f["/entry_1/data_1/data"]
        assert d.dtype == np.int32 and d.attrs["units"] == "adu"
        assert d.compression != "gzip" and "32004" in {str(k) for k in d._filters}  # the LZ4 filter id
        frames = d[()]
        pos = f["/entry_1/instrument_1/detector_1/pixel_position"][()]
    shadow = np.hypot(pos[..., 0], pos[..., 1]) < 0.8e-3  # behind the beamstop: pedestal and readout only
    dark = frames[:, shadow]
    assert np.abs(dark - 20).max() <= 10 and dark.std() == pytest.approx(2.0, rel=0.5)
    assert frames.max() > 1000  # photons arrive elsewhere, at 8 ADU each


def test_shot_streams_are_independent_per_shot():
    a1, b1, c1 = shot_streams(5, 3)
    a2, b2, c2 = shot_streams(5, 3)
    assert a1.random() == a2.random() and b1.random() == b2.random()
    assert np.random.default_rng(c1).random() == np.random.default_rng(c2).random()
    draws = {shot_streams(5, i)[0].random() for i in range(50)} | {shot_streams(6, 3)[0].random()}
    assert len(draws) == 51


def test_user_errors(tmp_path):
    with pytest.raises(SpiError, match="does not exist"):
        generate(small(), tmp_path / "missing" / "d.h5")
    with pytest.raises(SpiError, match="--workers must be >= 1"):
        generate(small(), tmp_path / "d.h5", workers=0)
    with pytest.raises(SpiError, match="unknown backend"):
        generate(small(), tmp_path / "d.h5", backend="mpi")


def test_output_names_that_cannot_be_written(tmp_path, monkeypatch):
    from spisim.errors import OutputFileError
    from spisim.generate import check_output

    (tmp_path / "adir").mkdir()
    for bad, message in (("", "output '' is not a file name"), (f"{tmp_path}/", "is not a file name"),
                         (tmp_path / "adir", "is a folder: give a file name such as")):
        with pytest.raises(OutputFileError, match=message):
            check_output(bad)
    monkeypatch.setattr("spisim.generate.os.access", lambda path, mode: False)
    with pytest.raises(OutputFileError, match=f"cannot write in output folder {tmp_path}: "):
        check_output(tmp_path / "d.h5")


def test_a_failed_start_leaves_no_folder_that_asks_for_resume(tmp_path):
    broken = SMALL.format(shots=4, shard=2, pixels=8).replace(
        "{name: ell, shape: spheroid, radius: 20 nm, polar_radius: 35 nm, model: continuum}",
        "{name: prot, structure: broken.pdb}")
    (tmp_path / "broken.pdb").write_bytes(bytes(range(256)))
    manifest = parse_manifest(broken, base_dir=tmp_path)
    with pytest.raises(InputFileError, match="broken.pdb"):
        generate(manifest, tmp_path / "d.h5")
    assert not parts_dir(tmp_path / "d.h5").exists()  # nothing was finished: nothing to resume
    res = generate(small(shots=4, shard=2, pixels=8), tmp_path / "d.h5")  # so a fixed run needs no flag
    assert res.n_shots == 4 and not parts_dir(tmp_path / "d.h5").exists()


def test_finished_shards_survive_a_failure_and_the_message_counts_them(tmp_path):
    out = tmp_path / "d.h5"
    with pytest.raises(RuntimeError, match="injected failure"):
        generate(small(shots=6, shard=2), out, _fail_after_shards=2)
    assert len(list(parts_dir(out).glob("shard-*.h5"))) == 2
    with pytest.raises(SpiError, match=r"holds an unfinished run \(2 finished shards\): add --resume"):
        generate(small(shots=6, shard=2), out)


def test_a_geometry_file_without_camera_length_takes_the_manifest_distance(tmp_path, shared_data):
    from spisim.generate import build_detector

    text = (shared_data / "geometries" / "crystfel_simple.geom").read_text().replace("clen = 50.0e-3", "")
    (tmp_path / "noclen.geom").write_text(text)
    base = "beam: {photon_energy: 1.6 keV, pulse_energy: 1 mJ}\nhits: {no_hit: 1}\n"
    det = build_detector(parse_manifest(base + "detector: {geometry: noclen.geom, distance: 0.2 m}\n",
                                        base_dir=tmp_path))
    assert det.distance == pytest.approx(0.2)
    ref = build_detector(parse_manifest(base + f"detector: {{geometry: {shared_data}/geometries/crystfel_simple.geom,"
                                               " distance: 0.2 m}\n"))
    np.testing.assert_allclose(det.pixel_positions, ref.pixel_positions, atol=1e-12)
    with pytest.raises(SpiError, match=r"noclen.geom has no clen line, so its panels lie at z = 0 m.*distance"):
        build_detector(parse_manifest(base + "detector: {geometry: noclen.geom}\n", base_dir=tmp_path))


@pytest.mark.gpu
def test_gpu_pipeline_matches_cpu_without_noise_and_in_distribution_with_it():
    from spisim.generate import Simulator

    text = SMALL.format(shots=8, shard=4, pixels=32).replace(
        "noise: {background: {photons: 40}, jitter: 0.2, beamstop: 1 mm, readout: 0.1, dead_pixels: 0.01}",
        "noise: none")
    text += "unintended: {molecules: [{name: blob, shape: spheroid, radius: 3 nm, polar_radius: 4 nm, model: atoms}]}\n"
    cpu, gpu = Simulator(parse_manifest(text), "cpu"), Simulator(parse_manifest(text), "cuda")
    for i in range(8):
        a, la = cpu.shot(i)
        b, lb = gpu.shot(i)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * max(a.max(), 1))
        assert la.hit_type == lb.hit_type and la.total_photons == pytest.approx(lb.total_photons, rel=1e-6)
    noisy = parse_manifest(SMALL.format(shots=8, shard=4, pixels=32))
    cpu, gpu = Simulator(noisy, "cpu"), Simulator(noisy, "cuda")
    a = np.array([cpu.shot(i)[0] for i in range(8)])
    b = np.array([gpu.shot(i)[0] for i in range(8)])
    assert b.dtype == a.dtype and b.sum() == pytest.approx(a.sum(), rel=0.05)


@pytest.mark.slow
def test_two_fresh_processes_with_atoms_give_the_same_bytes(tmp_path):
    """Same manifest and seed, two independent runs (own volume builds), atomistic particles: same file bytes."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        SMALL.format(shots=8, shard=4, pixels=32).replace(
            "model: continuum}\n  - {name: ell", "model: continuum}\n  - {name: ico, shape: icosahedron, radius: 6 nm, "
            "model: atoms}\n  - {name: ell"
        )
    )
    assert "icosahedron" in manifest.read_text()
    repo = Path(__file__).resolve().parents[1]
    outs = []
    for name in ("a.h5", "b.h5"):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "cli", "simulate", str(manifest), "-o", str(out), "-q"]
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
        outs.append(_bytes(out))
    assert outs[0] == outs[1]
    with CXIReader(tmp_path / "a.h5") as r:
        assert "ico" in r.structure_names


def test_lobed_particles_follow_their_shape_seed(tmp_path):
    """A lobed body's layout comes from shape_seed: two seeds, two different single-hit patterns; same seed, same."""
    frames = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        text = SMALL.format(shots=6, shard=6, pixels=24).replace(
            "  - {name: s30, shape: sphere, radius: 30 nm, model: continuum}\n"
            "  - {name: ell, shape: spheroid, radius: 20 nm, polar_radius: 35 nm, model: continuum}",
            f"  - {{name: lob, shape: lobed, radius: 12 nm, lobes: 4, shape_seed: {seed}}}",
        ).replace("hits: balanced", "hits: {single: 1}")
        m = parse_manifest(text)
        assert m.spec.particles[0].lobes == 4 and m.spec.particles[0].shape_seed == seed
        generate(m, tmp_path / f"{name}.h5")
        with h5py.File(tmp_path / f"{name}.h5") as f:
            frames[name] = f["/entry_1/data_1/data"][()]
            assert (f["/entry_1/labels/hit_type"][()] == 1).all()
    assert frames["a"].sum() > 100  # photons on the detector
    np.testing.assert_array_equal(frames["a"], frames["b"])
    assert not np.array_equal(frames["a"], frames["c"])
