"""Measure classifier inference speed: shots per second and latency per batch size.

Times the whole inference path, raw frames in and embeddings out (preprocessing on the model's
detector geometry, then the network), for the runtimes asked (torch eager, TorchScript, ONNX Runtime)
on the CPU with --threads threads and on the GPU when one is present. Frames are random Poisson
frames already in memory (reading files is not timed). Reports whether one CPU thread keeps up with
LCLS-I (120 shots/s).

MODEL is a checkpoint from spi train; --default times an untrained network with default settings on a
pnCCD-like detector (two 512 × 1024 panels; --frame-shape to change).

\b
Example usage:
    spi bench --default
    spi bench runs/sim/best.pt --runtime torch,onnx --batch-sizes 1,16,64 --threads 1
    spi bench --default --device all --json bench.json
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="bench", help=__doc__)
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--default", "use_default", is_flag=True, help="Time an untrained default network.")
@click.option("--batch-sizes", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--runtime", default="torch", show_default=True, help="Comma-separated: torch, torchscript, onnx.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "all"]),
    default="all",
    show_default=True,
    help="all: the CPU, and the GPU when present.",
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads.")
@click.option("--frame-shape", default="2,512,1024", show_default=True, help="M,SS,FS of --default's detector.")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True, help="Timed calls at least.")
@click.option("--min-seconds", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Timed seconds (s) at least per setting (0: --repeats calls only).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the rows as JSON (an existing file needs --overwrite).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
def command(
    model: Path | None,
    use_default: bool,
    batch_sizes: str,
    runtime: str,
    device: str,
    threads: int,
    frame_shape: str,
    repeats: int,
    min_seconds: float,
    json_path: Path | None,
    overwrite: bool,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from spinet.speed import bench_devices, parse_frame_shape, parse_positive_ints, parse_runtimes, run_bench
    from spisim.errors import OutputFileError
    from spisim.generate import check_writable_folder

    if (model is None) == (not use_default):
        raise click.UsageError("give a MODEL checkpoint or --default (not both)")
    runtimes = parse_runtimes(runtime)
    devices = bench_devices(device)
    if json_path is not None:
        check_writable_folder(json_path.parent)  # fail before minutes of timing, not after
        if json_path.exists() and not overwrite:
            raise OutputFileError(f"{json_path} exists: use --overwrite to replace it")
    shape = parse_frame_shape(frame_shape) if model is None else (2, 512, 1024)
    sizes = parse_positive_ints(batch_sizes, "--batch-sizes")
    console = Console()

    def on_start(bundle) -> None:  # noqa: ANN001
        import torch

        pre = bundle.preprocessor
        console.print(f"model {bundle.config.model.arch}, input {pre.size}², frames {pre.frame_shape}, "
                      f"torch {torch.__version__}")

    report = run_bench(
        None if model is None else str(model), frame_shape=shape, batch_sizes=sizes, runtimes=runtimes,
        devices=devices, threads=threads, repeats=repeats, min_seconds=min_seconds, on_start=on_start,
        on_row=lambda r: console.print(f"  {r.runtime} {r.device} batch {r.batch}: {r.shots_per_s:.0f} shots/s",
                                       highlight=False),
    )
    table = Table(title="inference: frames in, embeddings out")
    for col in ("runtime", "device", "threads", "batch", "latency ms", "p95 ms", "shots/s"):
        table.add_column(col, justify="right")
    for r in report.rows:
        table.add_row(r.runtime, r.device, str(r.threads), str(r.batch), f"{r.latency_ms:.2f}", f"{r.p95_ms:.2f}",
                      f"{r.shots_per_s:.0f}")
    console.print(table)
    verdict = report.verdict()
    if verdict is not None:
        click.echo(verdict)
    if json_path is not None:
        _write_atomically(json_path, json.dumps(report.as_dict(), indent=2))
        click.echo(f"rows: {json_path}")


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file in the same folder (never a half-written file)."""
    from spisim.atomic import write_text_atomic
    from spisim.errors import OutputFileError, os_error_message

    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {os_error_message(exc)}") from None
