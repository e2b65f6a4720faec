"""Run skopi (github lcls-psana/skopi, current source) on one structure, detector and beam; save to .npz.

This script runs in skopi's own environment, NOT in ours: it imports skopi and numpy only, never spisim.
The benchmarks (bench_vs_skopi.py, bench_generate_vs_skopi.py) start it as a subprocess with the
interpreter of a separate virtual environment, so that the two packages never share a process.

How skopi was made to run on a CPU (no edits to its files):
    git clone https://github.com/lcls-psana/skopi /work/skopi-src   # or the fetched mirror
    python3 -m venv /work/skopi-venv
    /work/skopi-venv/bin/pip install numpy scipy h5py six matplotlib gdown
    /work/skopi-venv/bin/pip install --no-deps -e /work/skopi-src
skopi's master picks numpy unless the environment variable USE_CUPY=1 is set (skopi/util.py), so nothing
else is needed: this script makes sure USE_CUPY is unset. gdown is needed only because `import skopi`
imports skopi.datasets, which imports it; mpi4py, prody, scikit-learn and psana are not needed for
what we run here (psana detectors are skipped by skopi when psana is absent; we use
SimpleSquareDetector or UserDefinedDetector instead). The PDB reader opens plain text only, so a
gzipped PDB is decompressed to a temporary file first, as a user would.

Units here follow skopi: metres, s = (k̂_out − k̂_in)/λ in m⁻¹ (phase 2π s·r), photons per pulse.
What this writes (all float64 unless said):
    s_pixels (panels, ss, fs, 3) m⁻¹; solid_angle, polarization, linear_correction (panels, ss, fs);
    atom_positions_angstrom (N, 3) and atomic_numbers (N,) exactly as skopi parsed them;
    ff_table (types, samples) electrons at ff_sin_theta_over_lambda (Å⁻¹) for ff_atomic_numbers;
    quaternions (K, 4) (w, x, y, z) as given;
    task "exact": exact_field (K, panels, ss, fs) complex128, exact_seconds (K,);
    task "volume": volume_seconds, mesh_size, voxel_length (m⁻¹), slice_photons (K, ...),
        slice_seconds (K,) (expected photons, i.e. intensities with skopi's linear correction);
    task "shots": shot_seconds (S,), shot_total_photons (S,), first shots' photons, write_seconds.
    Every *_seconds (wall clock) has a *_cpu_seconds twin (process CPU time, all threads), which a
    busy shared machine disturbs much less.

Example usage (from the repository root):
    /work/skopi-venv/bin/python bench/skopi_runner.py --pdb ../shared/data/structures/2cex_skopi.pdb \
        --square 256 7.5e-4 0.1 --photon-energy 1600 --photons-per-pulse 1e12 --focus-radius 0.5e-6 \
        --quaternion 0.7,0.2,-0.5,0.4 --tasks exact,volume --mesh-size 151 --out /tmp/skopi.npz
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.pop("USE_CUPY", None)  # skopi/util.py: numpy unless USE_CUPY=1

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; see the module docstring for their units."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdb", required=True, help="PDB file (plain or .gz); skopi applies REMARK 350 BIOMT")
    det = p.add_mutually_exclusive_group(required=True)
    det.add_argument(
        "--square",
        nargs=3,
        metavar=("N", "PIXEL_SIZE_M", "DISTANCE_M"),
        help="skopi SimpleSquareDetector of N×N pixels",
    )
    det.add_argument(
        "--pixels-npz",
        help="npz with pixel_position (panels, ss, fs, 3) m and pixel_size (m): "
        "a skopi UserDefinedDetector with these pixel centres",
    )
    p.add_argument("--photon-energy", type=float, required=True, help="eV")
    p.add_argument("--photons-per-pulse", type=float, required=True)
    p.add_argument("--focus-radius", type=float, required=True, help="m; skopi's focus area is π r²")
    p.add_argument(
        "--quaternion",
        action="append",
        default=[],
        help="w,x,y,z of an orientation (skopi: the particle is turned by R(q)); repeatable",
    )
    p.add_argument("--tasks", default="exact", help="comma list of: exact, volume, shots")
    p.add_argument("--mesh-size", type=int, default=151, help="skopi Experiment.mesh_size (voxels per axis)")
    p.add_argument("--n-shots", type=int, default=10)
    p.add_argument("--keep-shots", type=int, default=4, help="how many shot images to store")
    p.add_argument("--write-h5", help="also write the shots to this HDF5 file as skopi's dataset script does")
    p.add_argument("--atom-subset", type=int, default=0, help="keep this many random atoms (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def _plain_pdb(path: str, tmpdir: str) -> str:
    """Path of a plain-text copy of `path` (skopi's reader opens text files only)."""
    if not path.endswith(".gz"):
        return path
    out = Path(tmpdir) / Path(path).name[:-3]
    with gzip.open(path, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())
    return str(out)


def make_particle(sk, pdb: str, subset: int, rng: np.random.Generator):
    """skopi Particle from `pdb` with the WK form factors (skopi's default); optionally a random subset."""
    particle = sk.Particle()
    with tempfile.TemporaryDirectory() as tmp:
        particle.read_pdb(_plain_pdb(pdb, tmp), ff="WK")
    particle.n_atoms_parsed = particle.atom_pos.shape[0]
    if subset and subset < particle.atom_pos.shape[0]:
        keep = np.sort(rng.choice(particle.atom_pos.shape[0], subset, replace=False))
        z_before = np.unique(particle.at)
        particle.atom_pos = particle.atom_pos[keep]
        particle.at = particle.at[keep]
        z_after, idx = np.unique(particle.at, return_index=True)  # atoms stay sorted by type
        if not np.array_equal(z_before, z_after):
            raise SystemExit(f"subset of {subset} atoms lost an element ({z_before} -> {z_after}); take more")
        particle.split_idx = np.append(idx, [particle.atom_pos.shape[0]])
    return particle


def make_detector(sk, args: argparse.Namespace, beam):
    """skopi detector: SimpleSquareDetector (--square) or UserDefinedDetector (--pixels-npz)."""
    if args.square:
        n, pixel, distance = int(args.square[0]), float(args.square[1]), float(args.square[2])
        return sk.SimpleSquareDetector(n, n * pixel, distance, beam=beam)
    data = np.load(args.pixels_npz)
    pos = np.asarray(data["pixel_position"], dtype=np.float64)
    size = float(data["pixel_size"])
    geom = {
        "panel number": pos.shape[0],
        "panel pixel num x": pos.shape[1],
        "panel pixel num y": pos.shape[2],
        "pixel width": np.full(pos.shape[:3], size),
        "pixel height": np.full(pos.shape[:3], size),
        "pixel center x": pos[..., 0],
        "pixel center y": pos[..., 1],
        "pixel center z": pos[..., 2],
    }
    return sk.UserDefinedDetector(geom, beam=beam)


def run_exact(sk, det, particle, quats: np.ndarray, out: dict) -> None:
    """skopi's direct path (Detector.get_pattern_without_corrections) at each orientation."""
    fields, seconds, cpu = [], [], []
    original = particle.atom_pos.copy()
    for q in quats:
        particle.rotate(q)  # atom_pos <- atom_pos @ R(q)ᵀ
        t0, c0 = time.perf_counter(), time.process_time()
        fields.append(det.get_pattern_without_corrections(particle, return_type="complex_field"))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        particle.set_atom_pos(original.copy())
        print(f"skopi exact pattern: {seconds[-1]:.2f} s (cpu {cpu[-1]:.2f} s)", flush=True)
    out["exact_field"] = np.asarray(fields)
    out["exact_seconds"] = np.asarray(seconds)
    out["exact_cpu_seconds"] = np.asarray(cpu)


def build_experiment(sk, det, beam, particle, mesh_size: int, out: dict):
    """skopi SPIExperiment (builds the reciprocal volume at mesh_size³ voxels); its build time."""
    sk.SPIExperiment.mesh_size = mesh_size  # class attribute that skopi's Experiment reads (default 151)
    t0, c0 = time.perf_counter(), time.process_time()
    experiment = sk.SPIExperiment(det, beam, particle)
    out["volume_seconds"] = time.perf_counter() - t0
    out["volume_cpu_seconds"] = time.process_time() - c0
    out["mesh_size"] = mesh_size
    out["voxel_length"] = experiment.voxel_length
    print(
        f"skopi volume {mesh_size}^3: {out['volume_seconds']:.1f} s (cpu {out['volume_cpu_seconds']:.1f} s)", flush=True
    )
    return experiment


def run_volume_slices(experiment, quats: np.ndarray, out: dict) -> None:
    """Expected photons (no noise) sliced from skopi's volume at the given orientations."""
    experiment.set_orientations(np.asarray(quats, dtype=np.float64))
    patterns, seconds, cpu = [], [], []
    for _ in quats:
        t0, c0 = time.perf_counter(), time.process_time()
        patterns.append(experiment.generate_image_stack(return_photons=False, return_intensities=True))
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out["slice_photons"] = np.asarray(patterns)
    out["slice_seconds"] = np.asarray(seconds)
    out["slice_cpu_seconds"] = np.asarray(cpu)


def run_shots(experiment, n_shots: int, keep: int, out: dict, write_h5: str | None) -> None:
    """Single-hit shots with Poisson noise and random orientations, skopi's generate_image_stack()."""
    experiment._orientations = None  # back to random orientations (skopi's default)
    shots, seconds, cpu, totals = [], [], [], []
    for _ in range(n_shots):
        t0, c0 = time.perf_counter(), time.process_time()
        photons = experiment.generate_image_stack()
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        totals.append(float(np.sum(photons)))
        shots.append(photons)
    out["shot_seconds"] = np.asarray(seconds)
    out["shot_cpu_seconds"] = np.asarray(cpu)
    out["shot_total_photons"] = np.asarray(totals)
    out["shots"] = np.asarray(shots[:keep], dtype=np.float32)
    if write_h5:
        import h5py

        t0, c0 = time.perf_counter(), time.process_time()
        stack = np.asarray(shots, dtype=np.float32)
        with h5py.File(write_h5, "w") as f:  # as skopi's cspi_generate_synthetic_dataset.py: float32, plain
            f.create_dataset("diffraction_patterns", data=stack)
        out["write_seconds"] = time.perf_counter() - t0
        out["write_cpu_seconds"] = time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    """Run the requested skopi tasks and write the .npz named by --out."""
    args = parse_args(argv)
    np.random.seed(args.seed)  # skopi draws from numpy's global generator
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    import skopi as sk

    out: dict = {"import_seconds": time.perf_counter() - t0}
    src = Path(sk.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    out["skopi_commit"] = commit.stdout.strip() or "unknown"
    out["numpy_version"] = np.__version__

    beam = sk.Beam(
        photon_energy=args.photon_energy, fluence=args.photons_per_pulse, focus_radius=args.focus_radius
    )  # skopi's "fluence" argument is photons per pulse
    t0 = time.perf_counter()
    particle = make_particle(sk, args.pdb, args.atom_subset, rng)
    out["read_seconds"] = time.perf_counter() - t0
    det = make_detector(sk, args, beam)
    out["atom_positions_angstrom"] = particle.atom_pos * 1e10
    out["atomic_numbers"] = np.asarray(particle.at, dtype=np.int64)
    out["atoms_parsed"] = particle.n_atoms_parsed  # before --atom-subset
    out["ff_table"] = np.atleast_2d(particle.ff_table)  # (types, samples), electrons, one row per element
    out["ff_sin_theta_over_lambda"] = particle.q_sample  # its sample points, sin θ / λ in Å⁻¹
    out["ff_atomic_numbers"] = np.asarray(particle.at[particle.split_idx[:-1]], dtype=np.int64)
    out["s_pixels"] = np.asarray(det.pixel_position_reciprocal)
    out["pixel_position"] = np.asarray(det.pixel_position)
    out["solid_angle"] = np.asarray(det.solid_angle_per_pixel)
    out["polarization"] = np.asarray(det.polarization_correction)
    out["linear_correction"] = np.asarray(det.linear_correction)
    out["fluence_photons_per_m2"] = beam.get_photons_per_pulse() / beam.get_focus_area()
    quats = np.array([[float(v) for v in q.split(",")] for q in args.quaternion]).reshape(-1, 4)
    out["quaternions"] = quats

    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    unknown = tasks - {"exact", "volume", "shots"}
    if unknown:
        raise SystemExit(f"unknown task(s) {sorted(unknown)}; expected exact, volume, shots")
    if "exact" in tasks:
        run_exact(sk, det, particle, quats, out)
    if tasks & {"volume", "shots"}:
        experiment = build_experiment(sk, det, beam, particle, args.mesh_size, out)
        if "volume" in tasks and len(quats):
            run_volume_slices(experiment, quats, out)
        if "shots" in tasks:
            run_shots(experiment, args.n_shots, args.keep_shots, out, args.write_h5)
    np.savez(args.out, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
