"""spisim beside skopi on the same structure, detector, beam and orientation, in one run.

skopi (github lcls-psana/skopi, current source; see bench/skopi_runner.py for how it is installed and
run on numpy) runs in its own virtual environment through bench/skopi_runner.py; spisim runs here.
Both see the same atoms (the ones skopi parses from the PDB: it drops elements outside its table, e.g.
Zn, and ignores occupancies, so spisim is given exactly those atoms with occupancy 1), the same square
detector (N × N pixels, same pixel size and distance), the same photon energy and fluence, and the
same orientation (skopi's quaternion (w, x, y, z) turns the particle by R(q), r → R r, as spisim's
``rotation=R`` does; checked below by comparing with the transposed rotation too).

Reported:
  * times: skopi's exact (direct) pattern, its reciprocal-volume build (mesh_size³ voxels, default 151)
    and its per-pattern slice; spisim's exact CPU path (numba), NUFFT path, reciprocal-volume build
    and per-pattern slice; the ratios skopi/spisim; atom·pixel terms per second of the exact paths;
  * the difference between the patterns (expected photons, anomalous=False): relative L2
    ‖I_a − I_b‖ / ‖I_b‖ and Pearson correlation, for spisim exact vs skopi exact, spisim exact vs
    skopi volume, and each code's fast path against its own exact one; plus the parts of the
    difference: form factors (gemmi IT92 vs skopi's Waasmaier–Kirfel) and pixel geometry
    (solid angle: exact vs A cos α / R²).

Example usage (from the repository root; 10-15 min on 2 busy cores with the defaults, most of it skopi):
    python bench/bench_vs_skopi.py --n 256 --json /tmp/vs_skopi.json
    python bench/bench_vs_skopi.py --n 128 --mesh-size 61 --skip-nufft     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PDB = REPO.parent / "shared" / "data" / "structures" / "2cex_skopi.pdb"
DEFAULT_SKOPI_PYTHON = Path("/work/skopi-venv/bin/python")
DEFAULT_QUATERNION = (0.7, 0.2, -0.5, 0.4)  # normalised below; a rotation of ≈ 93° about a skew axis


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (units in the help texts)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pdb", type=Path, default=DEFAULT_PDB)
    p.add_argument("--n", type=int, default=256, help="pixels per side of the square detector")
    p.add_argument("--pixel-size", type=float, default=300e-6, help="m")
    p.add_argument("--distance", type=float, default=0.05, help="m")
    p.add_argument("--photon-energy", type=float, default=4600.0, help="eV (skopi's amo86615.beam example)")
    p.add_argument("--photons-per-pulse", type=float, default=1e12)
    p.add_argument("--focus-radius", type=float, default=0.5e-6, help="m, flat-top disc of area π r²")
    p.add_argument("--quaternion", type=str, default=",".join(map(str, DEFAULT_QUATERNION)))
    p.add_argument("--mesh-size", type=int, default=151, help="skopi's volume voxels per axis (its default 151)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats of spisim's exact/NUFFT/slice paths")
    p.add_argument("--skip-nufft", action="store_true")
    p.add_argument("--skopi-python", type=Path, default=DEFAULT_SKOPI_PYTHON)
    p.add_argument("--skopi-npz", type=Path, help="reuse this skopi_runner output instead of running skopi")
    p.add_argument("--save-skopi-npz", type=Path, help="keep skopi_runner's output here (reuse with --skopi-npz)")
    p.add_argument("--save-patterns", type=Path, help="write the compared patterns (expected photons) to this .npz")
    p.add_argument("--json", type=Path, help="write all figures here")
    return p.parse_args(argv)


# ---- comparison helpers ----------------------------------------------------------------------------
def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖₂ / ‖b‖₂ over finite pixels."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.linalg.norm(a[ok] - b[ok]) / np.linalg.norm(b[ok]))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of a and b over finite pixels."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok].ravel(), b[ok].ravel())[0, 1])


def compare(a: np.ndarray, b: np.ndarray, speckle: np.ndarray | None = None) -> dict[str, float]:
    """Relative L2 difference (b the reference) and correlation of two intensity patterns; with `speckle`
    (bool mask), the same over those pixels only (|q| beyond the first minimum, where the speckles are)."""
    out = {"rel_l2": rel_l2(a, b), "corr": correlation(a, b)}
    if speckle is not None:
        out["rel_l2_speckle"] = rel_l2(a[speckle], b[speckle])
        out["corr_speckle"] = correlation(a[speckle], b[speckle])
    return out


def pixel_map(ours: np.ndarray, theirs: np.ndarray, pixel_size: float) -> np.ndarray:
    """Index into theirs.reshape(-1, 3) of the pixel at each of our pixel centres (both (..., 3) m)."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(theirs.reshape(-1, 3)).query(ours.reshape(-1, 3))
    if dist.max() > 1e-3 * pixel_size:
        raise SystemExit(f"detector pixels differ between spisim and skopi by up to {dist.max():.3g} m")
    return idx.reshape(ours.shape[:-1])


def timed(fn, repeats: int) -> tuple[object, float, float]:
    """(result of the last call, wall time s, process CPU time s (all threads)) of the fastest of `repeats`."""
    best, best_cpu, out = np.inf, np.inf, None
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return out, best, best_cpu


def machine() -> dict[str, object]:
    """CPU model, core count, load and library versions of this run."""
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import numba

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "load_before": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
    }


# ---- the two sides ------------------------------------------------------------------------------------
def run_skopi(args: argparse.Namespace, quat: np.ndarray, out_npz: Path) -> dict:
    """Run bench/skopi_runner.py (exact + volume) in skopi's environment; its npz as a dict."""
    cmd = [
        str(args.skopi_python),
        str(HERE / "skopi_runner.py"),
        "--pdb",
        str(args.pdb),
        "--square",
        str(args.n),
        repr(args.pixel_size),
        repr(args.distance),
        "--photon-energy",
        repr(args.photon_energy),
        "--photons-per-pulse",
        repr(args.photons_per_pulse),
        "--focus-radius",
        repr(args.focus_radius),
        "--quaternion",
        ",".join(repr(float(v)) for v in quat),
        "--tasks",
        "exact,volume",
        "--mesh-size",
        str(args.mesh_size),
        "--out",
        str(out_npz),
    ]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if k != "USE_CUPY"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    print(f"skopi run took {time.perf_counter() - t0:.0f} s in all", flush=True)
    with np.load(out_npz) as d:
        return {k: d[k] for k in d.files}


def run_spisim(args: argparse.Namespace, sk: dict, rotation: np.ndarray) -> dict:
    """spisim's exact CPU, NUFFT and fast (volume + slice) paths on skopi's atoms; times and patterns."""
    from spisim.atoms import Atoms
    from spisim.constants import wavelength_angstrom
    from spisim.detector.geometry import Detector
    from spisim.photons import expected_photons
    from spisim.scattering import ReciprocalVolume, structure_factor

    res: dict = {}
    atoms = Atoms(sk["atom_positions_angstrom"], sk["atomic_numbers"], name="2cex as skopi reads it")
    det = Detector.square(args.n, args.pixel_size, args.distance)
    lam = wavelength_angstrom(args.photon_energy)
    q = det.q_vectors(lam).reshape(-1, 3)
    fluence = float(sk["fluence_photons_per_m2"])
    omega = det.solid_angles().reshape(-1)
    pol = det.polarization_factor("horizontal").reshape(-1)
    e = args.photon_energy

    def photons(F: np.ndarray) -> np.ndarray:
        return expected_photons(F, fluence, omega, pol)

    # exact CPU (numba): first call compiles (or loads numba's cache); time the calls after it
    t0 = time.perf_counter()
    structure_factor(atoms, q[:64], e, rotation=rotation, anomalous=False, method="cpu")
    res["exact_cpu_first_call_s"] = time.perf_counter() - t0
    F_exact, res["exact_cpu_s"], res["exact_cpu_cpu_s"] = timed(
        lambda: structure_factor(atoms, q, e, rotation=rotation, anomalous=False, method="cpu"), args.repeats
    )
    res["exact_F"] = F_exact
    res["exact_photons"] = photons(F_exact)
    # the orientation check: the same with Rᵀ (what a swapped convention would give)
    F_t = structure_factor(atoms, q, e, rotation=rotation.T, anomalous=False, method="cpu")
    res["exact_photons_transposed_rotation"] = photons(F_t)

    if not args.skip_nufft:
        structure_factor(atoms, q[:64], e, rotation=rotation, anomalous=False, method="nufft")
        F_nufft, res["nufft_s"], res["nufft_cpu_s"] = timed(
            lambda: structure_factor(atoms, q, e, rotation=rotation, anomalous=False, method="nufft"), args.repeats
        )
        res["nufft_photons"] = photons(F_nufft)

    q_max = float(np.linalg.norm(q, axis=1).max())
    vol, res["volume_build_s"], res["volume_build_cpu_s"] = timed(
        lambda: ReciprocalVolume.build(atoms, e, q_max, anomalous=False), 1
    )
    res["volume_shape"] = list(vol.grid.shape)
    res["volume_oversampling"] = vol.oversampling
    res["particle_diameter_angstrom"] = vol.diameter
    vol.slice(q[:64], rotation)  # compile
    F_fast, res["slice_s"], res["slice_cpu_s"] = timed(lambda: vol.slice(q, rotation), max(args.repeats, 5))
    res["fast_photons"] = photons(F_fast)
    res["q_max_inv_angstrom"] = q_max
    res["n_atoms"] = len(atoms)
    res["n_pixels"] = int(q.shape[0])
    res["pixel_position"] = det.pixel_positions
    res["solid_angle"] = omega
    res["polarization"] = pol
    res["q"] = q
    return res


def form_factor_difference(sk: dict, q_max: float) -> dict[str, float]:
    """Largest relative difference of skopi's WK f0 and spisim's IT92 f0 per element for |q| ≤ q_max."""
    from scipy.interpolate import CubicSpline

    from spisim.formfactors import f0

    s = np.linspace(0.0, q_max / (4 * np.pi), 200)  # sin θ / λ
    out = {}
    table = np.atleast_2d(sk["ff_table"])
    for row, z in zip(table, sk["ff_atomic_numbers"], strict=True):
        wk = CubicSpline(sk["ff_sin_theta_over_lambda"], row)(s)
        it92 = f0(int(z), 4 * np.pi * s)
        out[f"Z={int(z)}"] = float(np.max(np.abs(it92 - wk) / wk))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both codes, print a table of times and differences, optionally write JSON."""
    args = parse_args(argv)
    from spisim.orientation import quaternion_to_matrix
    from spisim.structure import load_structure

    quat = np.array([float(v) for v in args.quaternion.split(",")])
    quat /= np.linalg.norm(quat)
    rotation = quaternion_to_matrix(quat)
    info = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}

    with tempfile.TemporaryDirectory() as tmp:
        if args.skopi_npz:
            sk = dict(np.load(args.skopi_npz))
        else:
            sk = run_skopi(args, quat, args.save_skopi_npz or Path(tmp) / "skopi.npz")
    ours = run_spisim(args, sk, rotation)

    # map skopi's pixels onto ours (skopi's square has row 0 at −y, ours at +y)
    idx = pixel_map(ours["pixel_position"], sk["pixel_position"], args.pixel_size).reshape(-1)
    lin = sk["linear_correction"].reshape(-1)[idx]
    sk_exact = lin * np.abs(sk["exact_field"][0].reshape(-1)[idx]) ** 2
    sk_slice = sk["slice_photons"][0].reshape(-1)[idx]
    sk_q = 2 * np.pi * 1e-10 * sk["s_pixels"].reshape(-1, 3)[idx]
    sk_omega = sk["solid_angle"].reshape(-1)[idx]
    sk_pol = sk["polarization"].reshape(-1)[idx]

    n_terms = ours["n_atoms"] * ours["n_pixels"]
    t = {
        "skopi_exact_s": float(sk["exact_seconds"][0]),
        "skopi_volume_build_s": float(sk["volume_seconds"]),
        "skopi_slice_s": float(np.min(sk["slice_seconds"])),
        "spisim_exact_cpu_s": ours["exact_cpu_s"],
        "spisim_exact_cpu_first_call_s": ours["exact_cpu_first_call_s"],
        "spisim_volume_build_s": ours["volume_build_s"],
        "spisim_slice_s": ours["slice_s"],
    }
    if "nufft_s" in ours:
        t["spisim_nufft_s"] = ours["nufft_s"]
    c = {  # process CPU time (all threads): core-seconds, much less disturbed by other load
        "skopi_exact": float(sk["exact_cpu_seconds"][0]),
        "skopi_volume_build": float(sk["volume_cpu_seconds"]),
        "skopi_slice": float(np.min(sk["slice_cpu_seconds"])),
        "spisim_exact_cpu": ours["exact_cpu_cpu_s"],
        "spisim_volume_build": ours["volume_build_cpu_s"],
        "spisim_slice": ours["slice_cpu_s"],
    }
    if "nufft_s" in ours:
        c["spisim_nufft"] = ours["nufft_cpu_s"]
    cpu_ratios = {
        "exact: skopi / spisim cpu": c["skopi_exact"] / c["spisim_exact_cpu"],
        "volume build: skopi / spisim": c["skopi_volume_build"] / c["spisim_volume_build"],
        "per pattern (slice): skopi / spisim": c["skopi_slice"] / c["spisim_slice"],
    }
    ratios = {
        "exact: skopi / spisim cpu": t["skopi_exact_s"] / t["spisim_exact_cpu_s"],
        "volume build: skopi / spisim": t["skopi_volume_build_s"] / t["spisim_volume_build_s"],
        "per pattern (slice): skopi / spisim": t["skopi_slice_s"] / t["spisim_slice_s"],
        "skopi exact / spisim slice": t["skopi_exact_s"] / t["spisim_slice_s"],
    }
    if "nufft_s" in ours:
        ratios["exact: skopi / spisim nufft"] = t["skopi_exact_s"] / t["spisim_nufft_s"]
    rates = {
        "skopi_exact_terms_per_s": n_terms / t["skopi_exact_s"],
        "spisim_exact_cpu_terms_per_s": n_terms / t["spisim_exact_cpu_s"],
        "skopi_volume_terms_per_s": ours["n_atoms"] * int(sk["mesh_size"]) ** 3 / t["skopi_volume_build_s"],
        "spisim_exact_cpu_terms_per_core_s": n_terms / c["spisim_exact_cpu"],
        "skopi_exact_terms_per_core_s": n_terms / c["skopi_exact"],
    }
    from spisim.atoms import Atoms
    from spisim.scattering import first_minimum_q

    q_first_min = first_minimum_q(Atoms(sk["atom_positions_angstrom"], sk["atomic_numbers"]))
    spk = np.linalg.norm(ours["q"], axis=1) >= q_first_min
    diffs = {
        "spisim exact vs skopi exact": compare(ours["exact_photons"], sk_exact, spk),
        "spisim exact (R transposed) vs skopi exact": compare(ours["exact_photons_transposed_rotation"], sk_exact, spk),
        "spisim exact vs skopi volume slice": compare(ours["exact_photons"], sk_slice, spk),
        "skopi volume slice vs skopi exact": compare(sk_slice, sk_exact, spk),
        "spisim fast (volume+slice) vs spisim exact": compare(ours["fast_photons"], ours["exact_photons"], spk),
        "spisim fast vs skopi exact": compare(ours["fast_photons"], sk_exact, spk),
    }
    if "nufft_photons" in ours:
        diffs["spisim nufft vs spisim exact"] = compare(ours["nufft_photons"], ours["exact_photons"], spk)
    parts = {
        "max |q_spisim - q_skopi| (1/A)": float(np.abs(ours["q"] - sk_q).max()),
        "solid angle max rel diff (exact vs A cos a / R^2)": float(np.max(np.abs(ours["solid_angle"] / sk_omega - 1))),
        "polarisation max abs diff": float(np.max(np.abs(ours["polarization"] - sk_pol))),
        "f0 max rel diff IT92 vs WK per element": form_factor_difference(sk, ours["q_max_inv_angstrom"]),
    }
    # the part of the difference that the pixel factors explain: compare |F|² alone
    ours_f2 = np.abs(ours["exact_F"]) ** 2
    sk_f2 = np.abs(sk["exact_field"][0].reshape(-1)[idx]) ** 2
    diffs["|F|^2 only: spisim exact vs skopi exact"] = compare(ours_f2, sk_f2, spk)
    if args.save_patterns:
        shape = (args.n, args.n)
        np.savez_compressed(
            args.save_patterns,
            spisim_exact=ours["exact_photons"].reshape(shape),
            spisim_fast=ours["fast_photons"].reshape(shape),
            skopi_exact=sk_exact.reshape(shape),
            skopi_volume=sk_slice.reshape(shape),
            q_abs=np.linalg.norm(ours["q"], axis=1).reshape(shape),
        )
    structure = load_structure(args.pdb)
    summary = {
        **info,
        "skopi_commit": str(sk["skopi_commit"]),
        "detector": f"square {args.n}x{args.n}, {args.pixel_size * 1e6:g} um pixels at {args.distance} m",
        "beam": f"{args.photon_energy} eV, {args.photons_per_pulse:g} photons in pi*({args.focus_radius:g} m)^2"
        f" = {float(sk['fluence_photons_per_m2']):.4g} photons/m^2",
        "quaternion": quat.tolist(),
        "atoms_compared": ours["n_atoms"],
        "atoms_spisim_loader": len(structure),
        "skopi_mesh_size": int(sk["mesh_size"]),
        "spisim_volume_shape": ours["volume_shape"],
        "spisim_volume_oversampling": ours["volume_oversampling"],
        "skopi_volume_dq_inv_angstrom": 2 * np.pi * 1e-10 * float(sk["voxel_length"]),
        "skopi_volume_oversampling": 1.0 / (1e-10 * float(sk["voxel_length"]) * ours["particle_diameter_angstrom"]),
        "q_max_inv_angstrom": ours["q_max_inv_angstrom"],
        "speckle_region": f"|q| >= {q_first_min:.4f} 1/A (first minimum, equal-Rg sphere), {int(spk.sum())} px",
        "total_photons": {"spisim_exact": float(np.sum(ours["exact_photons"])), "skopi_exact": float(np.sum(sk_exact))},
        "times_s": t,
        "ratios": ratios,
        "cpu_times_s": c,
        "cpu_time_ratios": cpu_ratios,
        "rates": rates,
        "differences": diffs,
        "parts": parts,
        "load_after": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
