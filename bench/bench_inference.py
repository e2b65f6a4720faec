"""Benchmark the classifier's inference path (raw pnCCD-sized frames in, embeddings out).

Settings timed (untrained networks: speed does not depend on the weights):

* ``specklenn-96``: the default (SpeckleNN, 96 × 96 input, a 384 × 384 pixel crop binned 4 ×);
* ``specklenn-65``: the paper's real-data setting (a 390 × 390 crop binned 6 × to 65 × 65);
* ``residual-96``: the residual option at 96 × 96.

Each on the CPU with ``--threads`` threads (default 1: the LCLS-I question is one core at 120 Hz) for
torch eager and ONNX Runtime, and on the GPU when one is present. Prints a table and, with ``--json``,
writes the rows.

Usage::

    python bench/bench_inference.py                  # CPU, one thread
    python bench/bench_inference.py --threads 4 --batch-sizes 1,16,64 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from spinet.config import Config
from spinet.speed import LCLS_I_HZ, benchmark, default_bundle

SETTINGS = {
    "specklenn-96": {"preprocess": {"input_size": 96, "bin": 4}},
    "specklenn-65": {"preprocess": {"input_size": 65, "bin": 6}},
    "residual-96": {"preprocess": {"input_size": 96, "bin": 4}, "model": {"arch": "residual"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--runtimes", default="torch,onnx")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    batches = [int(v) for v in args.batch_sizes.split(",")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f}, threads {args.threads}"
    )
    print(f"{'setting':14s} {'runtime':8s} {'device':6s} {'batch':>5s} {'latency ms':>11s} {'shots/s':>8s}")
    rows = []
    for name in args.settings.split(","):
        bundle = default_bundle(Config.from_dict(SETTINGS[name]))
        for r in benchmark(
            bundle,
            batch_sizes=batches,
            runtimes=args.runtimes.split(","),
            devices=devices,
            threads=args.threads,
            min_seconds=args.min_seconds,
        ):
            print(f"{name:14s} {r.runtime:8s} {r.device:6s} {r.batch:5d} {r.latency_ms:11.2f} {r.shots_per_s:8.0f}")
            rows.append({"setting": name, **r.as_dict()})
    for name in args.settings.split(","):
        cpu = [r for r in rows if r["setting"] == name and r["device"] == "cpu"]
        best = max(cpu, key=lambda r: r["shots_per_s"])
        ok = "keeps up with" if best["shots_per_s"] >= LCLS_I_HZ else "does not keep up with"
        print(
            f"{name}: best CPU {best['shots_per_s']:.0f} shots/s ({best['runtime']}, batch {best['batch']}) "
            f"{ok} {LCLS_I_HZ:.0f} Hz"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": torch.__version__, "threads": args.threads, "load_average": load, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
