"""Throughput of the scattering engine: exact path (numba CPU, NUFFT) and fast path (reciprocal volume).

Prints one table: atom·pixel terms per second of the exact paths, shots per second of the fast path on
a full detector, and the exact CPU path's share of the machine's measured floating-point peak.

Flop count per exact term (double, counting an FMA as 2): phase q·r 5; sincos 40 (range reduction
8, r² 1, sine polynomial 13, cosine polynomial 15, quadrant 3); two accumulating FMAs 4; total 49
(single: 37, shorter polynomials). The peak is the larger of a numba loop of independent vector FMAs and a
numpy/OpenBLAS float64 matmul, both on all threads numba and BLAS use.

Example usage:
    python bench/bench_scattering.py                        # 2cex (2,452 atoms), 1024x1024 pixels
    python bench/bench_scattering.py --pixels 512 --exact-pixels 16384 --shots 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from spisim.orientation import random_rotations
from spisim.scattering import ReciprocalVolume, structure_factor
from spisim.structure import load_structure

FLOPS_PER_TERM = {"double": 49, "single": 37}
DEFAULT_STRUCTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures" / "2cex_skopi.pdb"


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _fma_loop(iters: int, lanes: int) -> float:
    """Per thread, 4×256 values each pushed through 8 dependent FMAs per pass: 16,384 flops per pass.

    The four rows give LLVM independent vector chains to interleave, so the loop is throughput-bound
    (no reassociation is allowed, so the FMAs cannot be folded away).
    """
    out = np.zeros(lanes)
    for t in prange(lanes):
        y = np.full((4, 256), 1.0 + 1e-9 * t)
        b = 0.999999
        c = 1e-7
        for _ in range(iters):
            for i in range(256):
                v0 = y[0, i]
                v1 = y[1, i]
                v2 = y[2, i]
                v3 = y[3, i]
                for _k in range(8):
                    v0 = v0 * b + c
                    v1 = v1 * b + c
                    v2 = v2 * b + c
                    v3 = v3 * b + c
                y[0, i] = v0
                y[1, i] = v1
                y[2, i] = v2
                y[3, i] = v3
        out[t] = y.sum()
    return out.sum()


def peak_gflops() -> tuple[float, float]:
    """(numba FMA-loop GFLOP/s, numpy float64 matmul GFLOP/s), best of three runs each."""
    lanes = numba.get_num_threads()
    _fma_loop(2, lanes)
    iters = 100_000
    best_fma = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        _fma_loop(iters, lanes)
        best_fma = max(best_fma, 16384.0 * iters * lanes / (time.perf_counter() - t0) / 1e9)
    n = 2048
    a = np.random.default_rng(0).random((n, n))
    a @ a
    best_mm = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best_mm = max(best_mm, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best_fma, best_mm


def flat_detector_q(side: int, q_max: float, energy_ev: float) -> np.ndarray:
    """q (side², 3) Å⁻¹ of a square flat detector normal to the beam, centred on it, corners at q_max."""
    k = 2 * np.pi / (12398.419843320026 / energy_ev)
    two_theta = 2 * np.arcsin(q_max / (2 * k))
    half = np.tan(two_theta) / np.sqrt(2) * 0.9999
    u = np.linspace(-half, half, side)
    x, y = np.meshgrid(u, u, indexing="ij")
    pos = np.stack([x.ravel(), y.ravel(), np.ones(side * side)], axis=1)
    return pos / np.linalg.norm(pos, axis=1)[:, None] * k - np.array([0.0, 0.0, k])


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, process CPU seconds of that run) over `repeats` calls of `fn`."""
    best = (np.inf, np.inf)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE)
    p.add_argument("--pixels", type=int, default=1024, help="detector side (pixels); default 1024")
    p.add_argument("--exact-pixels", type=int, default=65536, help="pixels timed on the exact CPU path")
    p.add_argument("--q-max", type=float, default=0.5, help="|q| at the detector corners (1/Å)")
    p.add_argument("--energy", type=float, default=6000.0, help="photon energy (eV)")
    p.add_argument("--shots", type=int, default=5, help="fast-path shots to time")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-nufft", action="store_true", help="skip the full-detector NUFFT timing")
    args = p.parse_args()

    atoms = load_structure(args.structure, keep_waters=True, keep_hydrogens=True)
    q_full = flat_detector_q(args.pixels, args.q_max, args.energy)
    n_full = q_full.shape[0]
    rng = np.random.default_rng(0)
    q_exact = q_full[rng.choice(n_full, min(args.exact_pixels, n_full), replace=False)]
    rotation = random_rotations(1, rng)[0]
    n_atoms = len(atoms)
    print(f"structure {args.structure.name}: {n_atoms} atoms; detector {args.pixels}x{args.pixels} = {n_full} px, "
          f"q_max {args.q_max} 1/Å, {args.energy:g} eV; numba threads {numba.get_num_threads()}")  # fmt: skip

    rows = []  # (name, pixels, wall s, cpu s, work: atom·pixel terms or shots)
    for precision in ("double", "single"):
        structure_factor(atoms, q_exact[:256], args.energy, method="cpu", precision=precision)  # compile / load
        wall, cpu = best_time(
            lambda precision=precision: structure_factor(
                atoms, q_exact, args.energy, rotation=rotation, method="cpu", precision=precision
            ),
            args.repeats,
        )
        rows.append((f"exact cpu {precision}", q_exact.shape[0], wall, cpu, n_atoms * q_exact.shape[0]))
    if not args.skip_nufft:
        for precision, tol in (("double", 1e-9), ("single", 1e-5)):
            wall, cpu = best_time(
                lambda precision=precision, tol=tol: structure_factor(
                    atoms, q_full, args.energy, rotation=rotation, method="nufft", precision=precision, nufft_tol=tol
                ),
                1,
            )
            rows.append((f"nufft {precision} tol {tol:g}", n_full, wall, cpu, n_atoms * n_full))

    volume = None

    def build() -> None:
        nonlocal volume
        volume = ReciprocalVolume.build(atoms, args.energy, args.q_max)

    wall_b, cpu_b = best_time(build, 1)
    rots = random_rotations(args.shots, rng)
    volume.slice(q_full[:1000], rots[0], method="cpu")  # compile / load
    wall_s, cpu_s = best_time(lambda: [volume.slice(q_full, r, method="cpu") for r in rots], 1)

    fma, mm = peak_gflops()
    peak = max(fma, mm)
    print(f"\n{'path':30s} {'pixels':>9s} {'wall s':>8s} {'cpu s':>8s} {'terms/s':>9s} {'terms/cpu-s':>11s}")
    for name, pix, wall, cpu, work in rows:
        print(f"{name:30s} {pix:9d} {wall:8.3f} {cpu:8.3f} {work / wall:9.3g} {work / cpu:11.3g}")
    print(f"{'fast: build ' + str(volume.n) + '^3 grid':30s} {volume.n**3:9d} {wall_b:8.3f} {cpu_b:8.3f}")
    print(
        f"{'fast: slice cubic, ' + str(args.shots) + ' shots':30s} {n_full:9d} {wall_s:8.3f} {cpu_s:8.3f}"
        f"   -> {args.shots / wall_s:.2f} shots/s, {args.shots / cpu_s:.2f} shots/cpu-s"
    )
    print(f"\npeak: numba FMA loop {fma:.1f} GFLOP/s, numpy float64 matmul {mm:.1f} GFLOP/s (same load)")
    for name, _, wall, _, work in rows[:2]:
        precision = name.split()[-1]
        gf = work / wall * FLOPS_PER_TERM[precision] / 1e9
        print(f"{name}: {FLOPS_PER_TERM[precision]} flop/term -> {gf:.1f} GFLOP/s = {100 * gf / peak:.0f}% of peak")


if __name__ == "__main__":
    main()
