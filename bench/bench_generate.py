"""End-to-end speed of the dataset generator, and where the time goes.

For each structure (default: the 3j6r capsid, 1.03 M atoms, and 2cex, 2,452 atoms) on the pnCCD
preset at 1.6 keV, every shot a single hit, with Poisson noise, background, readout noise and
common mode, written with gzip:

* setup: geometry, structure loading, reciprocal-volume build (reported apart: it is paid once per
  run and dominates for large particles);
* per shot: scattering (scene + volume slice + sums), detector noise, compression and writing
  (HDF5 chunk writes into memory with and without the filter);
* end to end: ``spisim.generate.generate`` into a file (shards, join), volume already built.

Run from the repository root (the structures are read from ../shared/data/structures):

    python bench/bench_generate.py --shots 16
    python bench/bench_generate.py --shots 64 --structures 2cex --detector square --compression lz4
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

STRUCTURES = {
    "3j6r": "../shared/data/structures/3j6r.pdb.gz",
    "2cex": "../shared/data/structures/2cex_skopi.pdb",
}

MANIFEST = """
seed: 1
shots: {shots}
beam: {{photon_energy: 1.6 keV, pulse_energy: 0.4 mJ, focus_diameter: 1.5 um}}
detector: {detector}
particles: [{{name: {name}, structure: {path}}}]
hits: {{single: 1}}
noise:
  background: {{kind: gas, photons: 300}}
  jitter: 0.2
  poisson: true
  readout: 0.02
  common_mode: 0.05
  common_mode_block: [512, 128]
output: {{compression: {compression}, shard_size: 8}}
"""

DETECTORS = {
    "pnccd": "{preset: pnccd}",
    "square": "{preset: square, n_pixels: 256, pixel_size: 300 um, distance: 0.2 m}",
}


def _write_seconds(frames: np.ndarray, compression: str) -> float:
    """Seconds to write ``frames`` shot by shot into an in-memory HDF5 file with ``compression``."""
    from spisim.cxi import compression_options

    t0 = time.perf_counter()
    with h5py.File(io.BytesIO(), "w") as f:
        d = f.create_dataset("data", shape=frames.shape, dtype=frames.dtype, chunks=(1, *frames.shape[1:]),
                             **compression_options(compression))
        for i, frame in enumerate(frames):
            d[i] = frame
    return time.perf_counter() - t0


def bench(name: str, shots: int, detector: str, compression: str, workers: int, device: str = "cpu") -> dict:
    from spisim.generate import Simulator, generate, shot_streams
    from spisim.manifest import parse_manifest
    from spisim.noise import apply_detector
    from spisim.structure import load_structure

    text = MANIFEST.format(shots=shots, detector=DETECTORS[detector], name=name, path=STRUCTURES[name],
                           compression=compression)
    m = parse_manifest(text, source=f"bench-{name}")
    row: dict = {"structure": name, "detector": detector, "device": device, "shots": shots}
    t0 = time.perf_counter()
    sim = Simulator(m, device)
    row["geometry_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    atoms = load_structure(Path(STRUCTURES[name]))
    row["atoms"] = len(atoms)
    row["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.prepare()  # loads again (cheap next to the build) and builds the reciprocal volume
    row["prepare_s"] = time.perf_counter() - t0
    body = sim.scene_model.particles[0].body
    vol = body.volume()
    row["volume"] = f"{vol.n}^3 ({vol.nbytes / 2**20:.0f} MiB)"
    row["pixels"] = int(sim.covered.sum())

    frames = np.empty((shots, *sim.shape), dtype=sim.dtype)
    t_scatter = t_noise = 0.0
    sim.shot(0)  # warm-up: kernel compilation and uploads stay out of the per-shot figures
    for i in range(shots):
        t0 = time.perf_counter()
        photons, scene, fluence, scale = sim.expected_photons(i)
        if device == "cuda":
            import cupy

            cupy.cuda.Device().synchronize()
            t1 = time.perf_counter()
            frames[i] = sim.shot(i)[0]  # computes the pattern again, then the noise on the GPU
            t2 = time.perf_counter()
            t_scatter += t1 - t0
            t_noise += max((t2 - t1) - (t1 - t0), 0.0)
            continue
        t1 = time.perf_counter()
        _, _, seq = shot_streams(m.spec.seed, i)
        frames[i] = apply_detector(photons + sim.effects.background * scale, m.spec.noise, sim.effects,
                                   np.random.default_rng(seq), sim.dtype)
        t2 = time.perf_counter()
        t_scatter += t1 - t0
        t_noise += t2 - t1
    row["scatter_ms"] = 1e3 * t_scatter / shots
    row["noise_ms"] = 1e3 * t_noise / shots
    raw = _write_seconds(frames, "none")
    packed = _write_seconds(frames, compression)
    row["write_ms"] = 1e3 * raw / shots
    row["compress_ms"] = 1e3 * max(packed - raw, 0.0) / shots
    row["MB_per_shot"] = frames[0].nbytes / 1e6

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        t0 = time.perf_counter()
        generate(m, Path(tmp) / "out.h5", workers=workers, device=device)  # the volume is in this process's cache
        row["end_to_end_s"] = time.perf_counter() - t0
        row["file_MB"] = (Path(tmp) / "out.h5").stat().st_size / 1e6
    row["shots_per_s"] = shots / row["end_to_end_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    ap.add_argument("--detector", default="pnccd", choices=list(DETECTORS))
    ap.add_argument("--compression", default="gzip", choices=["none", "gzip", "lz4", "zstd", "bitshuffle"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where shots are computed (cuda: numba.cuda slice and CuPy noise)")
    args = ap.parse_args()
    import os

    print(f"# bench_generate: {os.cpu_count()} CPUs, compression {args.compression}, workers {args.workers}, "
          f"device {args.device}")
    cols = ["structure", "atoms", "detector", "device", "pixels", "volume", "load_s", "prepare_s", "scatter_ms",
            "noise_ms",
            "compress_ms", "write_ms", "MB_per_shot", "file_MB", "end_to_end_s", "shots", "shots_per_s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in args.structures:
        row = bench(name, args.shots, args.detector, args.compression, args.workers, args.device)
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
