"""End-to-end dataset generation: `spisim.generate` (what `spi simulate` runs) beside skopi, in one run.

Both make the same kind of shot: one particle, uniformly random orientation, Poisson photon noise, no
background, on the same detector (spisim's ``pnccd`` preset, two 512 × 1024 panels of 75 µm; skopi
gets exactly these pixel centres through its UserDefinedDetector since its own pnCCD class needs psana)
with the same beam (photon energy; photons per pulse in a flat-top focus of the same diameter; the
particle inside the focus sees the full fluence in both codes; anomalous terms off, as skopi has none) and
the same atoms as far as the codes allow (waters and hydrogens kept, as skopi keeps them; skopi drops
elements outside its table, e.g. the one Zn of 2cex, and ignores occupancies).

spisim: ``generate(manifest, out.h5)`` end to end (structure, reciprocal volume, shots, CXI/HDF5 with
compression, shard join), then the parts on their own with :class:`spisim.generate.Simulator`:
preparation (structure + volume), scattering per shot (``expected_photons``), noise (``shot`` minus
that), and writing (``write_shard`` of the frames with the chosen compression).
skopi: bench/skopi_runner.py in skopi's environment: SPIExperiment (reciprocal volume at mesh_size³,
default 151), then ``generate_image_stack()`` per shot (slice, corrections, Poisson), then the frames
written to HDF5 as skopi's own dataset script does (float32, no compression).

For a structure too large for skopi's numpy volume build (the 1.03 M-atom 3j6r capsid would take days),
skopi is run on a random subset of its atoms (``--skopi-subset``) at a smaller mesh, its build rate
(atom·voxel terms per second) is measured, and the full build time is extrapolated from it; skopi's time
per shot does not depend on the number of atoms, so it is measured as is.

Example usage (from the repository root):
    python bench/bench_generate_vs_skopi.py --structures 2cex --shots 64 --skopi-shots 10
    python bench/bench_generate_vs_skopi.py --structures 2cex,3j6r --json /tmp/gen_vs_skopi.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "structures"
STRUCTURES = {"2cex": DATA / "2cex_skopi.pdb", "3j6r": DATA / "3j6r.pdb.gz"}
DEFAULT_SKOPI_PYTHON = Path("/work/skopi-venv/bin/python")

MANIFEST = """\
seed: {seed}
shots: {shots}
beam:
  photon_energy: {energy} eV
  photons_per_pulse: {photons:g}
  focus_diameter: {focus_um} um
  profile: flattop
  polarization: horizontal
detector:
  preset: {preset}
  distance: {distance} m
particles:
  - name: {name}
    structure: {path}
    keep_waters: true
    keep_hydrogens: true
hits: {{no_hit: 0, single: 1, multi: 0, unintended: 0}}
noise: {{poisson: true}}
scattering: {{method: fast, anomalous: false}}
output: {{compression: {compression}, shard_size: {shard}}}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (units in the help texts)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--structures", default="2cex,3j6r", help=f"comma list of {sorted(STRUCTURES)}")
    p.add_argument("--preset", default="pnccd", help="spisim detector preset (pnccd or square)")
    p.add_argument("--distance", type=float, default=0.13, help="m")
    p.add_argument("--photon-energy", type=float, default=1600.0, help="eV")
    p.add_argument("--photons-per-pulse", type=float, default=1e12)
    p.add_argument("--focus-diameter", type=float, default=1e-6, help="m, flat-top")
    p.add_argument("--shots", type=int, default=64, help="spisim shots per structure")
    p.add_argument("--compression", default="gzip")
    p.add_argument("--skopi-shots", type=int, default=10)
    p.add_argument("--skopi-mesh", type=int, default=151, help="skopi Experiment.mesh_size (its default 151)")
    p.add_argument(
        "--skopi-subset",
        type=int,
        default=2000,
        help="atoms of a random subset for skopi when a structure has more than --skopi-max-atoms",
    )
    p.add_argument("--skopi-subset-mesh", type=int, default=75, help="mesh for the subset's build-rate run")
    p.add_argument("--skopi-max-atoms", type=int, default=20000)
    p.add_argument("--skopi-python", type=Path, default=DEFAULT_SKOPI_PYTHON)
    p.add_argument("--skip-skopi", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def manifest_text(args: argparse.Namespace, name: str, path: Path, shots: int, compression: str) -> str:
    """The spisim manifest of one benchmark case (single hits, Poisson only)."""
    return MANIFEST.format(
        seed=args.seed,
        shots=shots,
        energy=args.photon_energy,
        photons=args.photons_per_pulse,
        focus_um=args.focus_diameter * 1e6,
        preset=args.preset,
        distance=args.distance,
        name=name,
        path=path,
        compression=compression,
        shard=16,
    )


def forget_volumes() -> None:
    """Empty spisim's per-process cache of reciprocal volumes, so that each timed run builds its own."""
    import spisim.scene

    getattr(spisim.scene, "_VOLUMES", {}).clear()


def run_spisim(args: argparse.Namespace, name: str, path: Path, tmp: Path) -> dict:
    """spisim end to end with generate(), then the same work split into its parts."""
    from spisim.cxi import labels_block, write_shard
    from spisim.generate import Simulator, generate
    from spisim.manifest import parse_manifest

    res: dict = {}
    manifest = parse_manifest(manifest_text(args, name, path, args.shots, args.compression))
    out = tmp / f"spisim_{name}.h5"
    forget_volumes()
    t0, c0 = time.perf_counter(), time.process_time()
    run = generate(manifest, out, overwrite=True)
    res["end_to_end_s"] = time.perf_counter() - t0
    res["end_to_end_cpu_s"] = time.process_time() - c0
    res["shots"] = run.n_shots if hasattr(run, "n_shots") else args.shots
    res["file_bytes"] = out.stat().st_size
    res["end_to_end_shots_per_s"] = args.shots / res["end_to_end_s"]

    # the parts, in a fresh simulator (same manifest)
    forget_volumes()
    sim = Simulator(manifest)
    t0, c0 = time.perf_counter(), time.process_time()
    sim.prepare()
    res["prepare_s"] = time.perf_counter() - t0
    res["prepare_cpu_s"] = time.process_time() - c0
    res["n_pixels"] = int(np.prod(sim.shape))
    n = min(args.shots, 16)
    t0, c0 = time.perf_counter(), time.process_time()
    totals = [float(sim.expected_photons(i)[0].sum()) for i in range(n)]
    res["scatter_s_per_shot"] = (time.perf_counter() - t0) / n
    res["scatter_cpu_s_per_shot"] = (time.process_time() - c0) / n
    res["mean_expected_photons"] = float(np.mean(totals))
    frames = np.empty((n, *sim.shape), dtype=sim.dtype)
    labels = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        frames[i], lab = sim.shot(i)
        labels.append(lab)
    res["shot_s_per_shot"] = (time.perf_counter() - t0) / n
    res["shot_cpu_s_per_shot"] = (time.process_time() - c0) / n
    res["noise_s_per_shot"] = res["shot_s_per_shot"] - res["scatter_s_per_shot"]
    res["noise_cpu_s_per_shot"] = res["shot_cpu_s_per_shot"] - res["scatter_cpu_s_per_shot"]
    res["mean_photons_per_shot"] = float(frames.sum(axis=(1, 2, 3)).mean())
    block = labels_block(labels, sim.spec.max_particles)
    t0, c0 = time.perf_counter(), time.process_time()
    write_shard(tmp / f"part_{name}.h5", 0, frames, block, compression=args.compression, units=sim.units)
    res["write_s_per_shot"] = (time.perf_counter() - t0) / n
    res["write_cpu_s_per_shot"] = (time.process_time() - c0) / n
    t0 = time.perf_counter()
    write_shard(tmp / f"part_{name}_plain.h5", 0, frames, block, compression="none", units=sim.units)
    res["write_uncompressed_s_per_shot"] = (time.perf_counter() - t0) / n
    res["steady_shots_per_s"] = 1.0 / (res["shot_s_per_shot"] + res["write_s_per_shot"])
    res["steady_shots_per_cpu_s"] = 1.0 / (res["shot_cpu_s_per_shot"] + res["write_cpu_s_per_shot"])
    res["pixel_position"] = np.asarray(sim.detector.pixel_positions)
    res["pixel_size"] = float(sim.detector.pixel_size)
    res["volume_points_per_axis"] = [
        int(k.body.volume().n) for k in sim.scene_model.particles if hasattr(k.body, "volume")
    ]
    return res


def run_skopi(
    args: argparse.Namespace, name: str, path: Path, pixels: np.ndarray, pixel_size: float, n_atoms: int, tmp: Path
) -> dict:
    """skopi's SPIExperiment on the same pixels and beam: build time, per-shot time, write time."""
    px = tmp / "pixels.npz"
    np.savez(px, pixel_position=pixels, pixel_size=pixel_size)
    subset = args.skopi_subset if n_atoms > args.skopi_max_atoms else 0
    mesh = args.skopi_subset_mesh if subset else args.skopi_mesh
    out = tmp / f"skopi_{name}.npz"
    cmd = [
        str(args.skopi_python),
        str(HERE / "skopi_runner.py"),
        "--pdb",
        str(path),
        "--pixels-npz",
        str(px),
        "--photon-energy",
        repr(args.photon_energy),
        "--photons-per-pulse",
        repr(args.photons_per_pulse),
        "--focus-radius",
        repr(args.focus_diameter / 2),
        "--tasks",
        "shots",
        "--mesh-size",
        str(mesh),
        "--n-shots",
        str(args.skopi_shots),
        "--keep-shots",
        "2",
        "--write-h5",
        str(tmp / f"skopi_{name}.h5"),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ]
    if subset:
        cmd += ["--atom-subset", str(subset)]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "USE_CUPY"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    with np.load(out) as d:
        sk = {k: d[k] for k in d.files}
    n_sk = int(sk["atomic_numbers"].shape[0])
    res = {
        "wall_s": wall,
        "atoms_run": n_sk,
        "mesh_size": mesh,
        "volume_build_s": float(sk["volume_seconds"]),
        "volume_build_cpu_s": float(sk["volume_cpu_seconds"]),
        "build_terms_per_s": n_sk * mesh**3 / float(sk["volume_seconds"]),
        "shot_s_mean": float(np.mean(sk["shot_seconds"])),
        "shot_cpu_s_mean": float(np.mean(sk["shot_cpu_seconds"])),
        "shots": int(sk["shot_seconds"].shape[0]),
        "write_s_per_shot": float(sk["write_seconds"]) / int(sk["shot_seconds"].shape[0]),
        "write_cpu_s_per_shot": float(sk["write_cpu_seconds"]) / int(sk["shot_seconds"].shape[0]),
        "mean_photons_per_shot": float(np.mean(sk["shot_total_photons"])),
        "read_s": float(sk["read_seconds"]),
    }
    res["steady_shots_per_s"] = 1.0 / (res["shot_s_mean"] + res["write_s_per_shot"])
    res["steady_shots_per_cpu_s"] = 1.0 / (res["shot_cpu_s_mean"] + res["write_cpu_s_per_shot"])
    res["build_terms_per_cpu_s"] = n_sk * mesh**3 / res["volume_build_cpu_s"]
    if subset:
        full = int(sk["atoms_parsed"])
        res["subset_of"] = full
        res["extrapolated_full_build_s_at_mesh_151"] = full * 151**3 / res["build_terms_per_s"]
        res["extrapolated_full_build_cpu_s_at_mesh_151"] = full * 151**3 / res["build_terms_per_cpu_s"]
        res["note"] = (
            f"skopi ran on {n_sk} random atoms of the {full} it parses, at mesh {mesh}; the full build at its "
            f"default mesh 151 is extrapolated from the measured rate (atom x voxel terms per second); "
            f"the subset's photon counts mean nothing"
        )
    return res


def main(argv: list[str] | None = None) -> int:
    """Run both generators for each structure; print and optionally save the figures."""
    args = parse_args(argv)
    from spisim.structure import load_structure

    model = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in model.splitlines() if ln.startswith("Model name")), "?")
    summary: dict = {
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "load_before": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "cases": {},
    }
    for name in [s.strip() for s in args.structures.split(",") if s.strip()]:
        if name not in STRUCTURES:
            raise SystemExit(f"unknown structure {name!r}; expected one of {sorted(STRUCTURES)}")
        path = STRUCTURES[name]
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            ours = run_spisim(args, name, path, tmp)
            n_atoms = len(load_structure(path, keep_waters=True, keep_hydrogens=True))
            case = {"atoms_spisim": n_atoms, "spisim": {k: v for k, v in ours.items() if k not in ("pixel_position",)}}
            if not args.skip_skopi:
                sk = run_skopi(args, name, path, ours["pixel_position"], ours["pixel_size"], n_atoms, tmp)
                case["skopi"] = sk
                full_build = sk.get("extrapolated_full_build_s_at_mesh_151", sk["volume_build_s"])
                n = args.shots
                sk_total = full_build + n * (sk["shot_s_mean"] + sk["write_s_per_shot"])
                tag = " (skopi build extrapolated)" if "subset_of" in sk else ""
                case["ratios"] = {
                    "steady shots/s: spisim / skopi": ours["steady_shots_per_s"] / sk["steady_shots_per_s"],
                    "steady shots per CPU-second: spisim / skopi": ours["steady_shots_per_cpu_s"]
                    / sk["steady_shots_per_cpu_s"],
                    f"{n} shots from scratch (build + shots + write): skopi / spisim{tag}": sk_total
                    / ours["end_to_end_s"],
                    f"preparation (volume build): skopi / spisim{tag}": full_build / ours["prepare_s"],
                }
            summary["cases"][name] = case
            print(json.dumps({name: case}, indent=2, default=float), flush=True)
    summary["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
