"""Throughput of the scattering engine: exact path (numba CPU, NUFFT) and fast path (reciprocal volume).

Prints one table: atom·pixel terms per second of the exact paths, shots per second of the fast path on
a full detector, and the exact paths' share of the machine's measured floating-point peak. Where a CUDA GPU
is present (or with ``--device cuda``) the numba.cuda twins are timed beside the CPU paths: the exact kernel
on the full detector, the volume fill by the direct sum on the GPU, and the slice; cuFINUFFT too when it is
installed. GPU times are end to end (host arrays in and out, transfers included), after a warm-up call.

Flop count per exact term (double, counting an FMA as 2): phase q·r 5; sincos 40 (range reduction
8, r² 1, sine polynomial 13, cosine polynomial 15, quadrant 3); two accumulating FMAs 4; total 49
(single: 37, shorter polynomials). The peak is the larger of a numba loop of independent vector FMAs and a
numpy/OpenBLAS float64 matmul, both on all threads numba and BLAS use.

Example usage:
    python bench/bench_scattering.py                        # 2cex (2,452 atoms), 1024x1024 pixels
    python bench/bench_scattering.py --pixels 512 --exact-pixels 16384 --shots 3
    python bench/bench_scattering.py --device cuda --skip-cpu      # GPU rows only
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import numpy as np
from numba import cuda, njit, prange

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


def gpu_peak_gflops(blocks_per_sm: int = 32, threads: int = 256, iters: int = 2000) -> tuple[float, float]:
    """(float64, float32) GFLOP/s of a numba.cuda kernel of independent FMA chains, best of three runs.

    Each thread runs 4 independent chains of 8 FMAs per iteration (64 flops); float32 runs 4× the iterations.
    """

    def make(dtype):
        @cuda.jit
        def kernel(out, iters, b, c):  # pragma: no cover - device code
            i = cuda.grid(1)
            v0 = dtype(1.0) + dtype(1e-9) * dtype(i)  # dtype(i): an int64 index would promote to float64
            v1 = v0 + dtype(1e-3)
            v2 = v0 + dtype(2e-3)
            v3 = v0 + dtype(3e-3)
            for _ in range(iters):
                for _k in range(8):
                    v0 = v0 * b + c
                    v1 = v1 * b + c
                    v2 = v2 * b + c
                    v3 = v3 * b + c
            out[i] = v0 + v1 + v2 + v3

        return kernel

    result = []
    for dtype in (np.float64, np.float32):
        from numba import float32, float64

        kernel = make(float64 if dtype is np.float64 else float32)
        device = getattr(cuda, "get_current_device", None)  # absent under the CUDA simulator
        blocks = (device().MULTIPROCESSOR_COUNT if device else 1) * blocks_per_sm
        out = cuda.device_array(threads * blocks, dtype=dtype)
        b, c = dtype(0.999999), dtype(1e-7)
        kernel[blocks, threads](out, 2, b, c)
        cuda.synchronize()
        n_iter = iters if dtype is np.float64 else 4 * iters
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            kernel[blocks, threads](out, n_iter, b, c)
            cuda.synchronize()
            best = max(best, 64.0 * n_iter * threads * blocks / (time.perf_counter() - t0) / 1e9)
        assert np.all(np.isfinite(out.copy_to_host()))
        result.append(best)
    return result[0], result[1]


def gpu_name() -> str:
    if not hasattr(cuda, "get_current_device"):
        return "numba CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


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
    p.add_argument("--cuda-pixels", type=int, default=0,
                   help="pixels timed on the exact CUDA path; default 0 = the whole detector")
    p.add_argument("--q-max", type=float, default=0.5, help="|q| at the detector corners (1/Å)")
    p.add_argument("--energy", type=float, default=6000.0, help="photon energy (eV)")
    p.add_argument("--shots", type=int, default=5, help="fast-path shots to time")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-nufft", action="store_true", help="skip the full-detector NUFFT timing")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU rows, and CUDA rows when a GPU is present; cuda: insist on the GPU rows")
    p.add_argument("--skip-cpu", action="store_true", help="time the GPU rows only (with --device cuda)")
    args = p.parse_args()

    from spisim.backend import cufinufft_available, numba_cuda_available

    if args.device == "cuda" and not numba_cuda_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    use_gpu = args.device == "cuda" or (args.device == "auto" and numba_cuda_available())
    use_cpu = not (args.skip_cpu and use_gpu)

    atoms = load_structure(args.structure, keep_waters=True, keep_hydrogens=True)
    q_full = flat_detector_q(args.pixels, args.q_max, args.energy)
    n_full = q_full.shape[0]
    rng = np.random.default_rng(0)
    q_exact = q_full[rng.choice(n_full, min(args.exact_pixels, n_full), replace=False)]
    q_cuda = q_full if args.cuda_pixels <= 0 else q_full[rng.choice(n_full, min(args.cuda_pixels, n_full), False)]
    rotation = random_rotations(1, rng)[0]
    rots = random_rotations(args.shots, rng)
    n_atoms = len(atoms)
    print(f"structure {args.structure.name}: {n_atoms} atoms; detector {args.pixels}x{args.pixels} = {n_full} px, "
          f"q_max {args.q_max} 1/Å, {args.energy:g} eV; numba threads {numba.get_num_threads()}"
          + (f"; GPU {gpu_name()}" if use_gpu else ""))  # fmt: skip

    rows = []  # (name, pixels, wall s, cpu s, atom·pixel terms)
    volume_rows = []  # (name, grid points, wall s, cpu s, shots or None)

    def exact_rows(method: str, q: np.ndarray) -> None:
        for precision in ("double", "single"):
            structure_factor(atoms, q[:256], args.energy, method=method, precision=precision)  # compile / load
            wall, cpu = best_time(
                lambda precision=precision: structure_factor(
                    atoms, q, args.energy, rotation=rotation, method=method, precision=precision
                ),
                args.repeats,
            )
            rows.append((f"exact {method} {precision}", q.shape[0], wall, cpu, n_atoms * q.shape[0]))

    def nufft_rows(label: str) -> None:
        for precision, tol in (("double", 1e-9), ("single", 1e-5)):

            def call(precision: str = precision, tol: float = tol) -> None:
                structure_factor(atoms, q_full, args.energy, rotation=rotation, method="nufft", precision=precision,
                                 nufft_tol=tol)  # the GPU's cuFINUFFT where installed, else FINUFFT

            if label == "cufinufft":
                call()  # plan creation and CUDA module load stay out of the figure
            wall, cpu = best_time(call, 1)
            rows.append((f"{label} {precision} tol {tol:g}", n_full, wall, cpu, n_atoms * n_full))

    def volume_and_slice(method: str) -> None:
        volume = None

        def build() -> None:
            nonlocal volume
            fill_method = "nufft" if method == "cpu" else "cuda"
            volume = ReciprocalVolume.build(atoms, args.energy, args.q_max, method=fill_method)

        if method == "cuda":
            ReciprocalVolume.build(atoms, args.energy, min(args.q_max, 0.05), method="cuda")  # compile
        wall_b, cpu_b = best_time(build, 1)
        volume.slice(q_full[:1000], rots[0], method=method)  # compile / load (and the grid's upload)
        wall_s, cpu_s = best_time(lambda: [volume.slice(q_full, r, method=method) for r in rots], args.repeats)
        fill = "nufft" if method == "cpu" else "cuda direct sum"
        volume_rows.append((f"fast: build {volume.n}^3 ({fill})", volume.n**3, wall_b, cpu_b, None))
        volume_rows.append((f"fast: slice {method}, {args.shots} shots", n_full, wall_s, cpu_s, args.shots))
        if method == "cuda":  # q kept on the device, F left there (what the simulator does on the GPU)
            from numba import cuda

            d_q = cuda.to_device(np.ascontiguousarray(q_full))
            volume.slice(d_q, rots[0])  # the one host check of this q

            def resident() -> None:
                for r in rots:
                    volume.slice(d_q, r)
                cuda.synchronize()

            wall_r, cpu_r = best_time(resident, args.repeats)
            volume_rows.append((f"fast: slice cuda, q resident, {args.shots} shots", n_full, wall_r, cpu_r, args.shots))

    if use_cpu:
        exact_rows("cpu", q_exact)
        if not args.skip_nufft:
            nufft_rows("nufft")
        volume_and_slice("cpu")
    if use_gpu:
        exact_rows("cuda", q_cuda)
        if cufinufft_available() and not args.skip_nufft:
            nufft_rows("cufinufft")
        elif not args.skip_nufft:
            print("cufinufft is not installed: no GPU NUFFT rows")
        volume_and_slice("cuda")

    print(f"\n{'path':34s} {'pixels':>9s} {'wall s':>8s} {'cpu s':>8s} {'terms/s':>9s} {'terms/cpu-s':>11s}")
    for name, pix, wall, cpu, work in rows:
        print(f"{name:34s} {pix:9d} {wall:8.3f} {cpu:8.3f} {work / wall:9.3g} {work / cpu:11.3g}")
    for name, pix, wall, cpu, shots in volume_rows:
        rate = f"   -> {shots / wall:.2f} shots/s, {shots / cpu:.2f} shots/cpu-s" if shots else ""
        print(f"{name:34s} {pix:9d} {wall:8.3f} {cpu:8.3f}{rate}")

    peaks = {}
    if use_cpu:
        fma, mm = peak_gflops()
        peaks["cpu"] = {"double": max(fma, mm), "single": 2 * max(fma, mm)}
        print(f"\npeak: numba FMA loop {fma:.1f} GFLOP/s, numpy float64 matmul {mm:.1f} GFLOP/s (same load)")
    if use_gpu:
        g64, g32 = gpu_peak_gflops()
        peaks["cuda"] = {"double": g64, "single": g32}
        print(f"GPU peak: numba.cuda FMA chains {g64:.0f} GFLOP/s float64, {g32:.0f} GFLOP/s float32")
    for name, _, wall, _, work in rows:
        _, method, precision = name.split()[:3]
        if method not in peaks:
            continue
        gf = work / wall * FLOPS_PER_TERM[precision] / 1e9
        share = 100 * gf / peaks[method][precision]
        print(f"{name}: {FLOPS_PER_TERM[precision]} flop/term -> {gf:.1f} GFLOP/s = {share:.0f}% of the "
              f"{precision} peak")


if __name__ == "__main__":
    main()
