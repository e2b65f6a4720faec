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
import os
from pathlib import Path

import click

from spisim.errors import ConfigError


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} takes positive integers, got {text!r}")
    return values


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
    import torch
    from rich.console import Console
    from rich.table import Table

    from spinet.checkpoint import ModelBundle
    from spinet.speed import LCLS_I_HZ, RUNTIMES, benchmark, default_bundle
    from spisim.generate import check_writable_folder

    if (model is None) == (not use_default):
        raise click.UsageError("give a MODEL checkpoint or --default (not both)")
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise ConfigError(f"--runtime takes {', '.join(RUNTIMES)}, got {runtime!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    devices = (
        ["cpu", "cuda"] if device == "all" and torch.cuda.is_available() else (["cpu"] if device == "all" else [device])
    )
    if json_path is not None:
        check_writable_folder(json_path.parent)  # fail before minutes of timing, not after
        if json_path.exists() and not overwrite:
            from spisim.errors import OutputFileError

            raise OutputFileError(f"{json_path} exists: use --overwrite to replace it")
    if model is not None:
        bundle = ModelBundle.load(model)
    else:
        shape = _ints(frame_shape, "--frame-shape")
        if len(shape) != 3:
            raise ConfigError(f"--frame-shape takes M,SS,FS, got {frame_shape!r}")
        bundle = default_bundle(frame_shape=tuple(shape))  # type: ignore[arg-type]
    console = Console()
    pre = bundle.preprocessor
    console.print(
        f"model {bundle.config.model.arch}, input {pre.size}², frames {pre.frame_shape}, torch {torch.__version__}"
    )
    table = Table(title="inference: frames in, embeddings out")
    for col in ("runtime", "device", "threads", "batch", "latency ms", "p95 ms", "shots/s"):
        table.add_column(col, justify="right")
    rows = benchmark(
        bundle,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        runtimes=runtimes,
        devices=devices,
        threads=threads,
        repeats=repeats,
        min_seconds=min_seconds,
        on_row=lambda r: console.print(
            f"  {r.runtime} {r.device} batch {r.batch}: {r.shots_per_s:.0f} shots/s", highlight=False
        ),
    )
    for r in rows:
        table.add_row(
            r.runtime,
            r.device,
            str(r.threads),
            str(r.batch),
            f"{r.latency_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.shots_per_s:.0f}",
        )
    console.print(table)
    cpu = [r for r in rows if r.device == "cpu"]
    if cpu:
        best = max(cpu, key=lambda r: r.shots_per_s)
        verdict = "keeps up with" if best.shots_per_s >= LCLS_I_HZ else "does NOT keep up with"
        click.echo(
            f"CPU, {threads} thread{'s' if threads > 1 else ''}: best {best.shots_per_s:.0f} shots/s "
            f"({best.runtime}, batch {best.batch}): {verdict} LCLS-I ({LCLS_I_HZ:.0f} Hz)"
        )
    if json_path is not None:
        text = json.dumps(
            {
                "frame_shape": list(pre.frame_shape),
                "input_size": pre.size,
                "torch": torch.__version__,
                "rows": [r.as_dict() for r in rows],
            },
            indent=2,
        )
        _write_atomically(json_path, text)
        click.echo(f"rows: {json_path}")


def _write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file in the same folder (never a half-written file)."""
    from spisim.errors import OutputFileError, os_error_message

    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {os_error_message(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
