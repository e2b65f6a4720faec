"""Benchmark ``spi stream``: sustained rate and latency against batch size and model size.

Every row runs the whole stream path of :class:`spinet.stream.StreamRunner` (queue, batching under the
latency deadline, preprocessing, network, few-shot rule, label log written to a temporary folder), with
untrained networks (speed does not depend on the weights) and 20 supports per class. Frames are uint16
photon counts converted where the preprocessing runs. Two measurements per setting:

* ``sustained``: a source that waits for room (nothing dropped) and offers shots as fast as they are taken:
  the most shots/s the classifier sustains at that ``--max-batch``;
* ``live @ R Hz``: a live source at the target rate R (1 kHz for ``compact``, 120 Hz for the default
  SpeckleNN, the issue's targets): classified shots/s, dropped fraction and latency p50/p99 (ms from arrival
  to result; ``--max-latency`` 100 ms).

Sources: ``memory`` (frames played from memory in this process: the classifier alone) and ``karabo`` (``spi
serve``'s Karabo bridge server in a child process on a loopback port, REQ/REP: transport included; small
frames only, as 4 MB pnCCD frames at 1 kHz exceed what loopback ZeroMQ carries on this machine).

Detectors: ``pnccd`` (2 × 512 × 1024, a 384 × 384 crop binned 4 × to 96 × 96, as ``bench_inference.py``) and
``small`` (1 × 64 × 64, the default manifest's detector, 64 × 64 input). GPU rows print "not measured: no GPU"
where no CUDA device is present.

Usage::

    python bench/bench_stream.py                          # CPU, one thread, all rows (about 4 minutes)
    python bench/bench_stream.py --models compact --batch-sizes 1,32 --seconds 3 --json stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from spinet.checkpoint import ModelBundle
from spinet.config import Config
from spinet.inference import SupportSet
from spinet.models import build_model, count_parameters
from spinet.preprocess import Preprocessor, geometry_key
from spinet.speed import pnccd_like_geometry
from spinet.stream import ArraySource, FrameClassifier, Geometry, KaraboSource, ResultLog, StreamOptions, StreamRunner

MODELS = {
    "compact": ({"model": {"arch": "compact", "embedding_dim": 50}}, 1000.0),
    "specklenn": ({}, 120.0),
}
DETECTORS = {
    "pnccd": ((2, 512, 1024), {"input_size": 96, "bin": 4}),
    "small": ((1, 64, 64), {"input_size": 64, "bin": 1}),
}
CLASSES = ["no_hit", "single", "multi", "unintended"]


def detector(name: str) -> tuple[np.ndarray, np.ndarray]:
    shape, _ = DETECTORS[name]
    if name == "pnccd":
        return pnccd_like_geometry(shape[1], shape[2])
    from spinet.synthetic import toy_geometry

    pos, mask = toy_geometry(ss=32, fs=64, gap=0, pixel_size=400e-6, distance=0.12, beamstop=1.5)
    return pos.reshape(1, 64, 64, 3), mask.reshape(1, 64, 64)


def make_classifier(model: str, det: str, runtime: str, threads: int, device: str = "cpu") -> FrameClassifier:
    shape, pre_cfg = DETECTORS[det]
    cfg = Config.from_dict({**MODELS[model][0], "preprocess": pre_cfg})
    pos, mask = detector(det)
    pre = Preprocessor.from_geometry(cfg.preprocess, shape, pos, mask)
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.preprocess.input_size).eval().to(device)
    bundle = ModelBundle(cfg, CLASSES, net, pre.to(device), geometry_key(shape, pos, mask), {"spi_version": None})
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(80, cfg.model.embedding_dim, generator=g), dim=1)
    support = SupportSet(emb, torch.arange(80) % 4, CLASSES, "random")
    return FrameClassifier(bundle, support, Geometry(shape, pos, mask, det), rule="nearest", runtime=runtime,
                           threads=threads)


def frames_for(det: str, n: int = 32) -> np.ndarray:
    shape, _ = DETECTORS[det]
    rng = np.random.default_rng(0)
    return rng.poisson(0.05, size=(n, *shape)).astype(np.uint16)


def run(clf: FrameClassifier, source, batch: int, seconds: float) -> dict:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        log = ResultLog(Path(tmp) / "log.csv", clf.output_names)
        runner = StreamRunner(source, clf, StreamOptions(max_batch=batch, max_latency_ms=100.0,
                                                         queue_size=max(256, 4 * batch), max_seconds=seconds),
                              log=log)
        return runner.run()


def start_server(det: str, rate: float | None, tmp: str) -> tuple[subprocess.Popen, str]:
    """``spi serve --from`` a small file of this detector in a child process; returns (process, endpoint)."""
    from spisim.cxi import CXIWriter, ShotLabels

    path = Path(tmp) / f"{det}.h5"
    if not path.exists():
        pos, mask = detector(det)
        frames = frames_for(det).astype(np.float32)
        nothing = ShotLabels(hit_type=0, structure=np.zeros(0, dtype=np.int64), orientation=np.zeros((0, 4)),
                             position=np.zeros((0, 3)), fluence=0.0, total_photons=0.0)
        with CXIWriter(path, len(frames), pixel_position=pos, solid_angle=np.ones(mask.shape), mask=mask,
                       photon_energy_ev=1600.0, pulse_energy_j=1e-3, structures=["x"], max_particles=1) as w:
            for i, f in enumerate(frames):
                w.write_shot(i, f, nothing)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "cli", "serve", "--from", str(path), "--port", str(port), "--repeat", "0",
            "--dtype", "uint16", "--no-labels"] + (["--rate", str(rate)] if rate else [])
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(args, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until it serves
        if line.startswith("serving ") and " on tcp://" in line:
            break
    return proc, f"tcp://127.0.0.1:{port}"


def fmt(v: float) -> str:
    return "-" if v != v else (f"{v:.3g}" if v < 100 else f"{v:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="compact,specklenn")
    ap.add_argument("--detectors", default="pnccd,small")
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--runtimes", default="torch,onnx")
    ap.add_argument("--sources", default="memory,karabo")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per row")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}, threads {args.threads}")
    head = (f"{'model':10s} {'params':>7s} {'detector':8s} {'source':7s} {'runtime':7s} {'batch':>5s} "
            f"{'mode':14s} {'shots/s':>8s} {'dropped':>8s} {'p50 ms':>7s} {'p99 ms':>7s}")
    print(head)
    rows = []
    batches = [int(v) for v in args.batch_sizes.split(",")]
    cuda = torch.cuda.is_available()
    settings = []
    for model in args.models.split(","):
        for det in args.detectors.split(","):
            for source in args.sources.split(","):
                if source == "karabo" and det != "small":
                    continue
                for runtime in args.runtimes.split(","):
                    settings.append((model, det, source, runtime, "cpu"))
            settings.append((model, det, "memory", "torch", "cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        for model, det, source, runtime, device in settings:
            if device == "cuda" and not cuda:
                print(f"{model:10s} {'':7s} {det:8s} {source:7s} {runtime:7s} {'':5s} cuda: not measured: no GPU")
                continue
            target = MODELS[model][1]
            frames = frames_for(det)
            clf = make_classifier(model, det, runtime, args.threads, device)
            params = count_parameters(clf.module.embedder)
            for batch in batches:
                for mode, rate in (("sustained", None), (f"live @ {target:g} Hz", target)):
                    if source == "memory":
                        s = run(clf, ArraySource(frames, shots=10**9, rate=rate), batch, args.seconds)
                    else:
                        proc, endpoint = start_server(det, rate, tmp)
                        try:
                            s = run(clf, KaraboSource(endpoint), batch, args.seconds)
                        finally:
                            proc.terminate()
                            proc.wait(10)
                    offered = s["received"] or 1
                    row = {"model": model, "params": params, "detector": det, "source": source,
                           "runtime": runtime, "device": device, "batch": batch, "mode": mode,
                           "shots_per_s": s["rate"], "dropped_fraction": s["dropped"] / offered,
                           "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"]}
                    rows.append(row)
                    print(f"{model:10s} {params:7d} {det:8s} {source:7s} {runtime:7s} {batch:5d} "
                          f"{mode + ('' if device == 'cpu' else ' cuda'):14s} {row['shots_per_s']:8.0f} "
                          f"{row['dropped_fraction']:8.1%} {fmt(row['p50_ms']):>7s} {fmt(row['p99_ms']):>7s}",
                          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
