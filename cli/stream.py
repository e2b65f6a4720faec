"""Classify a live detector stream shot by shot: a Karabo bridge (EuXFEL), an OnDA-style ZeroMQ socket, or a
file replayed at a rate.

SOURCE (--source) is karabo://tcp://HOST:PORT (a Karabo bridge; --karabo-source and --karabo-key name the
detector data), zmq://tcp://HOST:PORT (spi-frames messages, docs/stream.md) or replay:FILE.cxi[?rate=HZ]
(the command ends with the file). Frames (any integer or float dtype) are batched until --max-batch shots
are in hand or the oldest has waited nearly --max-latency, preprocessed and embedded on --device, and
classified against the support set (--support FILE[,labels=L][,k=K][,seed=S], repeatable, as in spi classify:
the classes are the union of the support files'). When the classifier falls behind, the
oldest waiting shots are dropped (and counted); unreadable messages are counted and skipped; a source that
goes quiet for --reconnect-after seconds is reconnected.

-o LOG.csv gets one row per shot (index, label, score, train/pulse id, truth, distances); it is a label file
for spi classify --support-labels and studies, and a restart resumes it (shots already logged are
skipped). --publish sends every batch's results on a ZeroMQ PUB socket; --veto-out lists the single hits.
The status (received, classified, dropped, rate, latency p50/p99, classes, accuracy where the messages
carry true labels) is a live line on a terminal, else a plain line every --status-every seconds. Ctrl-C
flushes the outputs and ends with a summary.

\b
Example usage:
    spi serve --port 4545 --rate 500 --shots 2000 &                  # a simulated beamline
    spi stream runs/sim/best.pt --source karabo://tcp://localhost:4545 --support sim.h5 -k 20 --rule nearest -o live.csv
    spi stream best.pt --source karabo://tcp://exflong01:45000 --karabo-source SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED \\
        --support support.cxi --support-labels support.csv --geometry agipd_run.cxi --publish tcp://*:5560
    spi stream best.pt --source "replay:run42.cxi?rate=120" --support sim.h5,k=20 --runtime onnx -o run42.live.csv
    spi stream best.pt --source "replay:run42.cxi" --support sim.h5,k=20 --support run42.cxi,labels=run42.csv,k=5
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from cli.progress import PLAIN_EVERY_S


@click.command(name="stream", help=__doc__)
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", "source_text", required=True, metavar="SOURCE",
              help="karabo://tcp://HOST:PORT, zmq://tcp://HOST:PORT or replay:FILE.cxi[?rate=HZ] (rate in shots/s; "
                   "without it the file is read as fast as it is classified, nothing dropped).")
@click.option("--support", "supports", required=True, multiple=True, metavar="FILE[,labels=L][,k=K][,seed=S]",
              help="Labelled support file (repeatable; the classes are the union), each with its own label file "
                   "(default: labels inside FILE), supports per class (default: -k, else every labelled shot) and "
                   "seed of their draw (default: --seed), as in spi classify.")
@click.option("--support-labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Label file of the one --support file (CSV index,label or HDF5); with several, use FILE,labels=L.")
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="Supports per class, for every --support that sets no k. [default: every labelled shot]")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the support draw, for every --support that sets none.")
@click.option("--label", "label_mode", type=click.Choice(["hit_type", "structure_hit_type"]), default=None,
              help="Class names from simulated labels. [default: the model's]")
@click.option("--geometry", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CXI/HDF5 file whose detector (frame shape, pixel positions, mask) the stream has. "
                   "[default: the replayed file, else the first support file]")
@click.option("--rule", type=click.Choice(["mean", "prototype", "nearest", "knn"]), default="mean", show_default=True,
              help="Few-shot rule (as in spi classify).")
@click.option("--min-ratio", type=click.FloatRange(min=1.0), default=None,
              help="Ratio test: 'unknown' unless the second-nearest class is at least this many times as far "
                   "(squared distance) as the nearest. [default: none]")
@click.option("--unknown-threshold", type=float, default=None,
              help="Squared embedding distance above which a shot is 'unknown'. [default: none]")
@click.option("--karabo-source", default=None, metavar="NAME",
              help="Karabo source of the detector data. [default: the only source that has --karabo-key]")
@click.option("--karabo-key", default="image.data", show_default=True, metavar="KEY",
              help="Key of the detector data in the Karabo source.")
@click.option("--socket", "socket_type", type=click.Choice(["REQ", "SUB", "PULL"], case_sensitive=False), default=None,
              help="ZeroMQ socket: REQ (Karabo bridge REP server), SUB (PUB server) or PULL (PUSH server). "
                   "[default: REQ for karabo://, SUB for zmq://]")
@click.option("--reconnect-after", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds without data after which the connection is remade.")
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most shots classified together.")
@click.option("--max-latency", type=click.FloatRange(min=0.1), default=100.0, show_default=True,
              help="Latency target, ms from a shot's arrival to its result: a batch is cut when its oldest shot "
                   "would miss it.")
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most shots waiting for the classifier; more are dropped, oldest first (memory: this many frames).")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, cuda, cuda:N or auto (the GPU when torch sees one; torch runtime).")
@click.option("--runtime", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="torch (CPU or GPU) or onnx (ONNX Runtime on the CPU; the model is exported at start).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of the classifier. [default: torch's / ONNX Runtime's]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Label log CSV, one row per shot; an existing log is resumed (its shots skipped).")
@click.option("--overwrite", is_flag=True, help="Start the log and the veto list afresh instead of resuming them.")
@click.option("--veto-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV of the shots classified as single hits: index,train_id,pulse_id (appended).")
@click.option("--publish", default=None, metavar="ADDRESS",
              help="Publish each batch's results on a ZeroMQ PUB socket bound here, e.g. tcp://*:5560.")
@click.option("--fsync-every", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Longest time between syncs of the log and the veto list to disk, s.")
@click.option("--status-every", type=click.FloatRange(min=0.1), default=PLAIN_EVERY_S, show_default=True,
              help="Seconds between plain status lines when stderr is not a terminal (a terminal gets a live "
                   "line every second).")
@click.option("--max-shots", type=click.IntRange(min=1), default=None,
              help="Stop after classifying this many shots. [default: no limit]")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Stop after this many seconds. [default: no limit]")
@click.option("-q", "--quiet", is_flag=True, help="No status lines (the summary is still printed).")
def command(model: Path, source_text: str, supports: tuple[str, ...], support_labels: Path | None, k: int | None,
            seed: int, label_mode: str | None, geometry: Path | None, rule: str, min_ratio: float | None,
            unknown_threshold: float | None, karabo_source: str | None, karabo_key: str, socket_type: str | None,
            reconnect_after: float, max_batch: int, max_latency: float, queue_size: int, device: str, runtime: str,
            threads: int | None, output: Path | None, overwrite: bool, veto_out: Path | None, publish: str | None,
            fsync_every: float, status_every: float, max_shots: int | None, duration: float | None,
            quiet: bool) -> None:
    import torch

    from spinet.checkpoint import ModelBundle
    from spinet.inference import SupportSpec, build_supports
    from spinet.labelspace import class_counts_text
    from spinet.stream import (
        FrameClassifier,
        Geometry,
        Publisher,
        ResultLog,
        StreamOptions,
        StreamRunner,
        VetoList,
        parse_source,
    )
    from spinet.stream.sources import ReplaySource
    from spinet.stream.stats import StatusPrinter, format_status
    from spisim.backend import resolve_device

    if support_labels is not None and len(supports) != 1:
        raise click.UsageError("--support-labels goes with exactly one --support; with several, use FILE,labels=L")
    device = resolve_device(device, library="torch")
    if threads is not None:
        torch.set_num_threads(threads)
    specs = [SupportSpec.parse(s, support_labels, k, seed) for s in supports]
    bundle = ModelBundle.load(model, device=device)
    mode = label_mode or bundle.config.data.label
    source = parse_source(source_text, karabo_source=karabo_source, karabo_key=karabo_key, socket=socket_type,
                          reconnect_s=reconnect_after, label_mode=mode)
    if geometry is None:
        geometry = source.path if isinstance(source, ReplaySource) else specs[0].path
    geo = Geometry.from_file(geometry)
    printer = StatusPrinter(sys.stderr, plain_every_s=status_every, quiet=quiet)
    sup = build_supports(bundle, specs, label_mode=mode)
    for part in sup.parts:
        printer.say(f"support from {part['path']}: {class_counts_text(part['counts'])}")
    clf = FrameClassifier(bundle, sup, geo, rule=rule, threshold=unknown_threshold, min_ratio=min_ratio,
                          runtime=runtime, threads=threads)
    log = veto = pub = None
    try:
        if output is not None:
            log = ResultLog(output, clf.output_names, overwrite=overwrite, fsync_every_s=fsync_every)
            if log.done:
                printer.say(f"resuming {output}: {len(log.done)} shots already logged are skipped")
        if veto_out is not None:
            veto = VetoList(veto_out, overwrite=overwrite, fsync_every_s=fsync_every)
        if publish is not None:
            pub = Publisher(publish, clf.output_names)
            printer.say(f"publishing results on {pub.endpoint}")
    except BaseException:
        for sink in (log, veto, pub):
            if sink is not None:
                sink.close()
        raise
    runner = StreamRunner(
        source, clf,
        StreamOptions(max_batch=max_batch, max_latency_ms=max_latency, queue_size=queue_size,
                      max_shots=max_shots, max_seconds=duration, status_every_s=min(1.0, status_every)),
        log=log, veto=veto, publisher=pub,
        on_status=lambda snap: printer.show(format_status(snap)),
        on_message=printer.say,
    )
    printer.say(f"classifying {source.description} on {device} ({runtime}), {geo.frame_shape} frames, "
                f"classes {', '.join(clf.output_names)}")

    def on_signal(signum: int, frame: object) -> None:
        runner.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C ends at once

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = runner.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        printer.end()
    click.echo(f"stream ended ({summary['stopped_by']}) after {summary['elapsed_s']:.1f} s: "
               + format_status(summary).split(", ", 1)[1])
    if output is not None:
        click.echo(f"log: {output}")
