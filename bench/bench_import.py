"""Speed and memory of ``spi import`` (and, with ``--match``, ``spi match``) on a synthetic run.

Writes a synthetic run (default 10,000 frames of 1024 × 1024 int16 ADU, gzip-compressed, one frame per
chunk, as a detector's HDF5 would hold it: mostly zero-photon pixels with read noise, the rings of a
sphere of 35 nm radius (75 µm pixels at 0.5 m, 1.6 keV) around a beam centre, gain 7.6 ADU/photon),
then imports it in a child process with ``--gain auto --centre auto`` (first pass and main pass) and
reports wall time, frames/s, source MB/s, and peak memory: the child's maximum resident set size
(``resource.getrusage``) and, with ``--tracemalloc``, the peak of traced allocations (numpy arrays
included). With ``--match`` a second child runs ``spi match`` on the imported run (its default of at most
2,000 analysed frames, the ring-depth and scale calibrations by simulation) and reports the same figures.

Run from the repository root:

    python bench/bench_import.py --frames 400 --pixels 1024 --match
    python bench/bench_import.py --frames 2000 --pixels 512 --compression lz4 --tracemalloc
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_run(path: Path, n_frames: int, pixels: int, *, gain: float = 7.6, read_noise: float = 1.3,
              seed: int = 0) -> float:
    """Write the synthetic run (N, P, P) int16 ADU, gzip, one frame per chunk; returns seconds."""
    import h5py

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    y, x = np.indices((pixels, pixels))
    r = np.hypot(y - pixels / 2 - 3.3, x - pixels / 2 + 1.7)
    # the rings of a 35 nm sphere: |q| per pixel 2π/λ · 75 µm / 0.5 m at 1.6 keV (small angles)
    qr = np.maximum(r * (2 * np.pi / 7.749) * 75e-6 / 0.5 * 350.0, 1e-6)
    pattern = 0.02 + 300.0 * (3 * (np.sin(qr) - qr * np.cos(qr)) / qr**3) ** 2  # photons per frame and pixel
    block = 16
    with h5py.File(path, "w") as f:
        d = f.create_dataset("frames", shape=(n_frames, pixels, pixels), dtype="int16", chunks=(1, pixels, pixels),
                             compression="gzip", compression_opts=4, shuffle=True)
        for start in range(0, n_frames, block):
            n = min(block, n_frames - start)
            photons = rng.poisson(pattern * rng.uniform(0.2, 1.0, size=(n, 1, 1)))
            adu = photons * gain + rng.normal(0.0, read_noise, size=photons.shape)
            d[start : start + n] = np.rint(adu).astype(np.int16)
        f["mask"] = (r < 4).astype(np.uint8)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """Run the import in this process and print one JSON line of figures."""
    import tracemalloc

    from spisim.realrun import ImportOptions, run_import

    if args.tracemalloc:
        tracemalloc.start()
    opts = ImportOptions.from_strings(args.src, args.out, mask=("mask",), gain="auto", pixel_size="75 um",
                                      distance="0.5 m", energy="1.6 keV", centre="auto", compression=args.compression,
                                      overwrite=True, first_pass_frames=args.first_pass)
    times: dict[str, float] = {}
    t0 = time.perf_counter()

    def phase(name: str, total: int) -> None:
        times[name] = time.perf_counter()

    result = run_import(opts, phase=phase)
    end = time.perf_counter()
    starts = sorted(times.items(), key=lambda kv: kv[1])
    phases = {name: (starts[i + 1][1] if i + 1 < len(starts) else end) - t for i, (name, t) in enumerate(starts)}
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": end - t0, "phases": phases, "gain": result.gain.gain if result.gain else None,
                      "centre": result.centre_xy, "peak_traced_mb": None if peak is None else peak / 2**20,
                      "maxrss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}))


def child_match(args: argparse.Namespace) -> None:
    """Run spi match on an imported run in this process and print one JSON line of figures."""
    from spisim.realrun.match import match_run, write_match

    t0 = time.perf_counter()
    result = match_run(args.src)
    t1 = time.perf_counter()
    write_match(result, Path(args.out), overwrite=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": time.perf_counter() - t0, "fit_seconds": t1 - t0,
                      "frames": len(result.analysis.indices),
                      "single": len(result.single), "radius_nm": result.radius * 1e9,
                      "maxrss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10_000, help="frames in the synthetic run [10000]")
    p.add_argument("--pixels", type=int, default=1024, help="frame edge in pixels [1024]")
    p.add_argument("--compression", default="gzip", help="output compression [gzip]")
    p.add_argument("--first-pass", type=int, default=2000, help="frames of the first pass [2000]")
    p.add_argument("--tracemalloc", action="store_true", help="also trace allocations (slower)")
    p.add_argument("--workdir", help="folder for the run and the output [a temporary folder]")
    p.add_argument("--run", help="synthetic run file to reuse (written there first if absent) [in the workdir]")
    p.add_argument("--match", action="store_true", help="also time spi match on the imported run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-match", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.child_match:
        child_match(args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src, out = Path(args.run) if args.run else Path(tmp) / "run.h5", Path(tmp) / "run.cxi"
        if src.exists():
            import h5py

            with h5py.File(src, "r") as f:
                args.frames, args.pixels = f["frames"].shape[0], f["frames"].shape[1]
            print(f"synthetic run {src} reused")
        else:
            t_write = write_run(src, args.frames, args.pixels)
            print(f"synthetic run written in {t_write:.1f} s")
        size_mb = src.stat().st_size / 2**20
        print(f"synthetic run: {args.frames} frames of {args.pixels} x {args.pixels} int16 ADU, {size_mb:.0f} MB gzip")
        cmd = [sys.executable, __file__, "--child", "--src", str(src), "--out", str(out), "--compression",
               args.compression, "--first-pass", str(args.first_pass)] + (["--tracemalloc"] if args.tracemalloc else [])
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            sys.exit(res.stderr)
        fig = json.loads(res.stdout.strip().splitlines()[-1])
        out_mb = out.stat().st_size / 2**20 if out.exists() else float("nan")
        rate = args.frames / fig["seconds"]
        print(f"import --gain auto --centre auto --compression {args.compression}: {fig['seconds']:.1f} s, "
              f"{rate:.1f} frames/s, {rate * args.pixels**2 * 2 / 2**20:.0f} MB/s of raw int16 ADU")
        print(f"  CPU time {fig['cpu_s']:.1f} s (user + system, all threads)")
        for name, sec in fig["phases"].items():
            print(f"  {name}: {sec:.1f} s")
        print(f"  gain {fig['gain']:.3f} ADU/photon (true 7.6); centre {fig['centre']}")
        print(f"  output {out_mb:.0f} MB; peak memory: max RSS {fig['maxrss_mb']:.0f} MB"
              + (f", traced {fig['peak_traced_mb']:.0f} MB" if fig["peak_traced_mb"] is not None else ""))
        if args.match:
            cmd = [sys.executable, __file__, "--child-match", "--src", str(out), "--out", str(Path(tmp) / "m.yaml")]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if res.returncode != 0:
                sys.exit(res.stderr)
            fig = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"match: {fig['seconds']:.1f} s ({fig['fit_seconds']:.1f} s fits and calibrations), "
                  f"{fig['frames']} frames analysed, {fig['single']} single-like, radius {fig['radius_nm']:.2f} nm "
                  f"(true 35); CPU {fig['cpu_s']:.1f} s; max RSS {fig['maxrss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
