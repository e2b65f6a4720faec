"""Play a simulated beamline: shots of a manifest (or of a file), with their true labels, served through a
real Karabo bridge server at a given rate, for spi stream and any Karabo bridge client.

The shots are simulated into memory first (MANIFEST, or the built-in default without it; or --from FILE.cxi
serves a file), then sent --pulses per train at --rate shots/s, train ids counting up from --first-train.
Each train has, under --source-name: image.data (pulses, modules, ss, fs) in --dtype, image.trainId,
image.pulseId, spi.index (the shot's index) and spi.label (its true class), docs/stream.md. Like a facility
bridge the server never waits for a slow client: at most --buffer trains wait, older ones are dropped.

\b
Example usage:
    spi serve --port 4545 --rate 500 --shots 2000                          # built-in default manifest
    spi serve data_manifests/pr772_pnccd.yaml --port 4545 --rate 120 --shots 500 --dtype uint16 --repeat 0
    spi serve --from run42.cxi --port 4545 --rate 1000 --pulses 10 --socket PUB
"""

from __future__ import annotations

import signal
from pathlib import Path

import click


@click.command(name="serve", help=__doc__)
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(min=0, max=65535), required=True,
              help="TCP port to serve on (0: a free one, printed).")
@click.option("--host", default="*", show_default=True, help="Interface to bind (* = all).")
@click.option("--rate", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Shots per second. [default: as fast as the client takes them]")
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="Shots to simulate (or to read with --from). [default: the manifest's; the whole file]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Simulation seed. [default: the manifest's]")
@click.option("--from", "from_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Serve the shots of this CXI/HDF5 file instead of simulating.")
@click.option("--pulses", type=click.IntRange(min=1), default=1, show_default=True, help="Shots per train.")
@click.option("--repeat", type=click.IntRange(min=0), default=1, show_default=True,
              help="Times the shots are played (0: for ever, new train ids each time).")
@click.option("--socket", "socket_type", type=click.Choice(["REP", "PUB", "PUSH"], case_sensitive=False),
              default="REP", show_default=True,
              help="Server socket: REP (clients ask with REQ, the Karabo bridge default), PUB or PUSH.")
@click.option("--source-name", default="SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED", show_default=True,
              help="Karabo source name of the frames.")
@click.option("--key", default="image.data", show_default=True, help="Karabo key of the frames.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint16", "int32"]), default=None,
              help="Send frames in this type (integers rounded and clipped). [default: as simulated]")
@click.option("--first-train", type=click.IntRange(min=0), default=1_000_000, show_default=True,
              help="Train id of the first train.")
@click.option("--buffer", "buffer_trains", type=click.IntRange(min=1), default=10, show_default=True,
              help="Trains the bridge keeps for a slow client; older ones are dropped.")
@click.option("--label", "label_mode", type=click.Choice(["hit_type", "structure_hit_type"]), default="hit_type",
              show_default=True, help="Class names of the true labels.")
@click.option("--no-labels", is_flag=True, help="Do not send the true labels (like a facility stream).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def command(manifest: Path | None, port: int, host: str, rate: float | None, shots: int | None, seed: int | None,
            from_file: Path | None, pulses: int, repeat: int, socket_type: str, source_name: str, key: str,
            dtype: str | None, first_train: int, buffer_trains: int, label_mode: str, no_labels: bool,
            quiet: bool) -> None:
    from cli.progress import Progress
    from spinet.stream import BeamlineServer, file_buffer, simulate_buffer

    if from_file is not None and manifest is not None:
        raise click.UsageError("give a MANIFEST or --from FILE, not both")
    if from_file is not None:
        buffer = file_buffer(from_file, shots, label_mode=label_mode)
    else:
        from spisim.manifest import load_manifest

        m = load_manifest(manifest, overrides={"shots": shots, "seed": seed})  # bad input fails before any display
        with Progress("simulating", m.spec.shots, quiet=quiet) as progress:
            buffer = simulate_buffer(m, label_mode=label_mode, progress=progress.advance)
    server = BeamlineServer(buffer, f"tcp://{host}:{port}", rate=rate, pulses=pulses, socket=socket_type,
                            source=source_name, key=key, first_train=first_train, dtype=dtype, repeat=repeat,
                            buffer_trains=buffer_trains, with_labels=not no_labels)

    def on_signal(signum: int, frame: object) -> None:
        server.stop()
        signal.signal(signum, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    total = None if repeat == 0 else len(buffer) * repeat
    try:
        with Progress("serving", total, quiet=quiet) as progress:
            import threading

            ready = threading.Event()
            announce = threading.Thread(target=_announce, args=(server, ready, buffer, rate, progress.say),
                                        daemon=True)
            announce.start()
            result = server.run(on_train=progress.advance, ready=ready)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    click.echo(f"served {result.shots} shots in {result.trains} trains in {result.seconds:.1f} s"
               + (f"; {result.dropped_trains} trains dropped (no client kept up)" if result.dropped_trains else ""))


def _announce(server, ready, buffer, rate, say) -> None:  # noqa: ANN001
    """Say the bound address as soon as it is known (scripts wait for this line)."""
    ready.wait()
    speed = f"{rate:g} shots/s" if rate else "as fast as the client takes them"
    say(f"serving {len(buffer)} shots of {buffer.source} on {server.bound_endpoint} ({server.socket}), {speed}")
