"""Train a Siamese embedding network with a triplet loss (the few-shot hit classifier).

Settings come from a YAML config (every key with its default: docs/spinet.md), then from the options
below, then from --set KEY=VALUE (any config key, the value read as YAML). The run folder (--out) gets
config.yaml, last.pt, best.pt (the model for spi classify), log.csv and tensorboard/. Each epoch ends
with the few-shot validation accuracy and the number of validation shots it was measured on (supports
from the training set); training stops early when it has not improved for train.patience epochs. A class
with fewer than 2 training shots gets a warning (a triplet needs two shots of a class). --resume continues
an interrupted run exactly.

A training source is a CXI/HDF5 file, given as PATH[,labels=LABELS][,weight=W][,max_shots=N][,binary=1]:
simulated files carry their labels (binary=1 relabels them single / not_single, to train beside a real run
labelled so); real data need a label file (CSV index,label or HDF5) whose names are the four hit
types, not_single (a run labelled single vs rest) or those of data.classes. Several sources mix by
their weights, e.g. a large simulated set and a few real labelled shots. --simulate MANIFEST[,weight=W]
streams freshly simulated shots instead of (or besides) files.

Unlabelled frames of the run to adapt to (--unlabelled FILE, e.g. the real run itself; labels ignored) add
training terms with --consistency W (two augmented views of a frame must embed alike) and --align W (the
embeddings of the labelled and the unlabelled frames must not be told apart, maximum mean discrepancy).
--init CKPT starts from another run's network (fine-tuning, e.g. on simulated shots plus a few real labelled
ones); --keep-every N keeps the network of every N-th epoch in epochs/ (choose one later with real labelled
shots: spi classify --select).

Several GPUs or processes: torchrun --standalone --nproc_per_node N -m cli train CONFIG.yaml

\b
Example usage:
    spi train run.yaml
    spi train --data sim.h5 --out runs/sim --epochs 20 --input-size 96 --bin 1
    spi train --data sim.h5 --data real.cxi,labels=real.csv,weight=0.5 --set augment.fluence_scale=[0.3,3]
    spi train --resume --out runs/sim --epochs 40
    spi train --data sim.h5 --unlabelled run.cxi --consistency 1 --align 1 --keep-every 2 --out runs/adapted
    spi train --init runs/sim/best.pt --data sim.h5 --data run.cxi,labels=run.labels.csv,weight=0.5 --epochs 3
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import yaml

from spisim.errors import ConfigError

SOURCE_KEYS = {"labels": str, "weight": float, "max_shots": int, "binary": lambda v: _flag(v)}
UNLABELLED_KEYS = {"indices": str, "max_shots": int}


def parse_unlabelled(text: str) -> dict[str, Any]:
    """``PATH[,indices=FILE][,max_shots=N]`` → an unlabelled-source dict."""
    head, *rest = text.split(",")
    if not head:
        raise ConfigError(f"--unlabelled: empty path in {text!r}")
    src: dict[str, Any] = {"path": head}
    for part in rest:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in UNLABELLED_KEYS:
            raise ConfigError(f"--unlabelled {text!r}: bad option {part!r}; use PATH[,indices=FILE][,max_shots=N]")
        try:
            src[key] = UNLABELLED_KEYS[key](value)
        except ValueError:
            raise ConfigError(f"--unlabelled {text!r}: bad value for {key}") from None
    return src


def _flag(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes"):
        return True
    if value.strip().lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


def parse_source(text: str, kind: str = "path") -> dict[str, Any]:
    """``PATH[,key=value]...`` → a source dict (keys labels, weight, max_shots, binary)."""
    head, *rest = text.split(",")
    if not head:
        raise ConfigError(f"empty path in {text!r}")
    src: dict[str, Any] = {kind: head}
    for part in rest:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SOURCE_KEYS or (kind == "simulate" and key != "weight"):
            allowed = "weight" if kind == "simulate" else ", ".join(SOURCE_KEYS)
            raise ConfigError(f"bad source option {part!r} in {text!r}: use key=value with key one of {allowed}")
        try:
            src[key] = SOURCE_KEYS[key](value)
        except ValueError:
            raise ConfigError(f"bad value for {key} in {text!r}") from None
    return src


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings → {dotted key: YAML-parsed value}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read {value!r} as a value") from None
    return out


@click.command(name="train", help=__doc__)
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="PATH[,labels=L][,weight=W][,binary=1]",
    help="Training file (repeatable); replaces data.sources of the config.",
)
@click.option(
    "--simulate",
    metavar="MANIFEST[,weight=W]",
    default=None,
    help="Stream freshly simulated shots from this manifest (besides any --data).",
)
@click.option(
    "--val",
    "val",
    multiple=True,
    metavar="PATH[,labels=L]",
    help="Validation file (repeatable); default: data.val_fraction of each training file.",
)
@click.option(
    "--unlabelled",
    "unlabelled",
    multiple=True,
    metavar="PATH[,indices=F][,max_shots=N]",
    help="Unlabelled frames of the run to adapt to (repeatable; labels ignored); replaces data.unlabelled.",
)
@click.option("--consistency", type=click.FloatRange(min=0), default=None,
              help="Weight of the consistency term on unlabelled frames (adapt.consistency). [default: 0]")
@click.option("--align", type=click.FloatRange(min=0), default=None,
              help="Weight of the domain-alignment (MMD) term on unlabelled frames (adapt.align). [default: 0]")
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint's network (fine-tuning; same architecture and input size).")
@click.option("--keep-every", type=click.IntRange(min=0), default=None,
              help="Keep the network of every N-th epoch (and the last) in epochs/; 0: none. [default: 0]")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder. [default: runs/spinet]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs. [default: 30]")
@click.option("--lr", type=float, default=None, help="Adam learning rate. [default: 0.001]")
@click.option("--seed", type=int, default=None, help="Seed of initialisation, sampling, augmentation. [default: 0]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N. [default: auto]")
@click.option(
    "--arch",
    type=click.Choice(["specklenn", "residual", "compact"]),
    default=None,
    help="Network: specklenn (the paper's), residual (a small ResNet) or compact (64 K weights, for an FPGA). "
    "[default: specklenn]",
)
@click.option(
    "--input-size", type=click.IntRange(min=16), default=None, help="Network input side, pixels. [default: 96]"
)
@click.option("--bin", "bin_", type=click.IntRange(min=1), default=None, help="Detector pixel binning. [default: 1]")
@click.option(
    "--scale", type=click.Choice(["log", "sqrt", "none"]), default=None, help="Intensity scaling. [default: log]"
)
@click.option("--margin", type=float, default=None, help="Triplet margin, squared distance. [default: 0.2]")
@click.option(
    "--miner",
    type=click.Choice(["random_semihard", "batch_hard", "batch_all"]),
    default=None,
    help="Triplet mining. [default: random_semihard]",
)
@click.option(
    "--m-per-class", type=click.IntRange(min=2), default=None, help="Shots per class in a batch. [default: 5]"
)
@click.option(
    "--label",
    type=click.Choice(["hit_type", "structure_hit_type"]),
    default=None,
    help="Classes: hit type, or (structure, hit type). [default: hit_type]",
)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader worker processes. [default: 0]")
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=None,
    help="Early-stopping patience, epochs; 0 never. [default: 5]",
)
@click.option(
    "--export",
    "export",
    multiple=True,
    type=click.Choice(["torchscript", "onnx"]),
    help="Also export the best model (repeatable).",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, e.g. augment.rotation=0.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start afresh in an --out that already holds a run.")
@click.option("--no-progress", is_flag=True, help="No progress bar (one line per epoch only).")
def command(
    config: Path | None,
    data: tuple[str, ...],
    simulate: str | None,
    val: tuple[str, ...],
    unlabelled: tuple[str, ...],
    consistency: float | None,
    align: float | None,
    init: str | None,
    keep_every: int | None,
    out: str | None,
    epochs: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
    arch: str | None,
    input_size: int | None,
    bin_: int | None,
    scale: str | None,
    margin: float | None,
    miner: str | None,
    m_per_class: int | None,
    label: str | None,
    workers: int | None,
    patience: int | None,
    export: tuple[str, ...],
    sets: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    no_progress: bool,
) -> None:
    from cli.progress import Progress
    from spinet.train import run_training
    from spisim.backend import resolve_device

    if device is not None:
        resolve_device(device, library="torch")  # an unknown device or a missing GPU: one line, before any work
    overrides: dict[str, Any] = {}
    sources = [parse_source(s) for s in data]
    if simulate:
        sources.append(parse_source(simulate, "simulate"))
    if sources:
        overrides["data.sources"] = sources
    if val:
        overrides["data.validation"] = [parse_source(s) for s in val]
    if unlabelled:
        overrides["data.unlabelled"] = [parse_unlabelled(s) for s in unlabelled]
    options = {
        "train.out": out,
        "train.epochs": epochs,
        "train.lr": lr,
        "train.seed": seed,
        "train.device": device,
        "model.arch": arch,
        "preprocess.input_size": input_size,
        "preprocess.bin": bin_,
        "preprocess.scale": scale,
        "loss.margin": margin,
        "loss.miner": miner,
        "data.m_per_class": m_per_class,
        "data.label": label,
        "data.num_workers": workers,
        "train.patience": patience,
        "train.export": list(export) or None,
        "adapt.consistency": consistency,
        "adapt.align": align,
        "train.init": init,
        "train.keep_every": keep_every,
    }
    overrides.update({k: v for k, v in options.items() if v is not None})
    if no_progress:
        overrides["train.progress"] = False
    overrides.update(parse_set(sets))
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with ExitStack() as stack:
        bar: list[Progress] = []  # the bar starts with the training steps (after the data are checked)

        def on_start(total: int) -> None:
            bar.append(stack.enter_context(Progress("training", total, unit="steps")))

        def say(text: str) -> None:
            if bar:
                bar[0].say(text)
            else:
                click.echo(text, err=True)

        result = run_training(config, overrides, resume=resume, overwrite=overwrite, say=say,
                              progress=lambda n: bar[0].advance(n) if bar else None,
                              on_start=on_start if (main_rank and not no_progress) else None)
    if not main_rank:
        return
    if result.best_epoch < 0 or result.best_accuracy == float("-inf") or result.n_val == 0:
        best = "best validation accuracy n/a (no validation shots)"
    else:
        best = f"best validation accuracy {result.best_accuracy:.3f} (n = {result.n_val}, epoch {result.best_epoch})"
    click.echo(
        f"spi train: {result.epochs_run} epochs in {result.out}; {best}"
        f"{'; stopped early' if result.stopped_early else ''}"
    )
    click.echo(f"model: {result.out / 'best.pt'}")
