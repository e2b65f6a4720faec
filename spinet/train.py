"""Training loop: class-balanced batches, triplet loss, few-shot validation, checkpoints, resume, DDP.

Run folder (``train.out``)::

    config.yaml        the resolved config
    last.pt            checkpoint after the latest finished epoch (what --resume continues from)
    best.pt            checkpoint with the best validation accuracy so far
    epochs/epoch-NNN.pt   the network of every train.keep_every-th epoch and of the last (optional)
    log.csv            one row per epoch: epoch, steps, train_loss, triplets, val_accuracy, lr, seconds
    tensorboard/       the same as TensorBoard scalars (loss per step, accuracy per epoch)
    best.ts.pt, best.onnx   exports, when train.export asks for them

Reproducibility: the model is initialised from ``train.seed``; batches, per-shot augmentation seeds and
the random miner are drawn from (seed, epoch, rank), so an epoch replays exactly and ``--resume``
continues as if never stopped (checkpoints are written at epoch ends). With
``train.deterministic`` torch's deterministic algorithms are switched on for the run.

With ``data.unlabelled`` and a positive ``adapt.consistency`` or ``adapt.align``, every step also draws a batch
of unlabelled frames (two augmented views each) and adds the terms of :class:`spinet.adapt.UnlabelledLoss`;
``train.init`` starts from the weights of another run (fine-tuning).

Several processes (``torchrun --standalone --nproc_per_node N -m cli train ...`` or any launcher setting
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) train one model with DistributedDataParallel (NCCL on GPUs,
gloo on CPUs); each rank draws its own batches; rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

from .augment import ShotTransform
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, SourceConfig, save_config
from .data import (
    ClassBalancedBatchSampler,
    EvalSet,
    FileShots,
    ShotDataset,
    SimulatedShotStream,
    StreamBatcher,
    as_shot_source,
    collect_stream,
    file_labels,
    label_names_for,
    open_simulator,
    order_classes,
    pick_per_class,
    simulator_geometry,
    stack_images,
    stratified_split,
)
from .fewshot import fewshot_accuracy
from .losses import TripletCriterion
from .models import build_model, count_parameters
from .preprocess import Preprocessor, geometry_key

STREAM_EPOCH_STRIDE = 1 << 30
"""Live simulation: epoch e trains on shot indices from e × STREAM_EPOCH_STRIDE on."""
STREAM_VAL_BASE = 1 << 40
"""Live simulation: validation shots are indices from here on (never used for training)."""
STREAM_SUPPORT_BASE = 1 << 41
"""Live simulation: support shots for validation are indices from here on."""

RESUME_OVERRIDABLE = (
    "train.epochs",
    "train.patience",
    "train.progress",
    "train.tensorboard",
    "train.device",
    "train.export",
    "data.num_workers",
)
"""Config keys that ``--resume`` takes from the new config; everything else comes from the checkpoint."""


# ------------------------------------------------------------------------------------------ environment


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a distributed run (world 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device, bool]:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (torchrun), join the process group, pick the device.

    Returns:
        (this process's place, its device, whether this call created the process group).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank, world, local)
    want_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {device_name!r} but no CUDA device is available")
    if want_cuda:
        device = torch.device(device_name if ":" in device_name else f"cuda:{local if info.active else 0}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    created = False
    if info.active and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if want_cuda else "gloo")
        created = True
    return info, device, created


class _Determinism:
    """Context manager switching deterministic algorithms on for the run and back afterwards."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.prev = torch.are_deterministic_algorithms_enabled()
        self.prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        self.prev_bench = torch.backends.cudnn.benchmark
        if self.on:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.prev, warn_only=self.prev_warn)
        torch.backends.cudnn.benchmark = self.prev_bench


# ------------------------------------------------------------------------------------------------- data


@dataclass
class StreamSource:
    """A live-simulation training source."""

    simulator: Any
    train_transform: ShotTransform
    eval_transform: ShotTransform
    weight: float


@dataclass
class PreparedData:
    """Everything the loop needs: classes, training shots, validation and support images."""

    class_names: list[str]
    train: ShotDataset | None
    stream: StreamSource | None
    val: EvalSet | None
    support: EvalSet | None
    preprocessor: Preprocessor
    geometry: str
    summary: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_val(self) -> int:
        """Validation shots (0 without validation)."""
        return 0 if self.val is None else len(self.val)


def _file_source(cfg: Config, src: SourceConfig) -> tuple[CXIReader, np.ndarray, list[str]]:
    reader = CXIReader(src.path)
    idx, names = file_labels(reader, cfg.data.label, src.labels, class_names=label_names_for(
        cfg.data.label, cfg.data.classes or ()))
    if src.max_shots is not None:
        idx, names = idx[: src.max_shots], names[: src.max_shots]
    if src.binary:
        from spisim.cxi import NOT_SINGLE

        from .metrics import is_single_class

        names = ["single" if is_single_class(n) else NOT_SINGLE for n in names]
    return reader, idx, names


def _transforms(cfg: Config, frame_shape, pixel_position, mask) -> tuple[ShotTransform, ShotTransform]:
    pre = Preprocessor.from_geometry(cfg.preprocess, frame_shape, pixel_position, mask)
    train_t = ShotTransform(cfg.preprocess, cfg.augment, frame_shape, pixel_position, mask, preprocessor=pre)
    eval_t = ShotTransform(cfg.preprocess, None, frame_shape, pixel_position, mask, preprocessor=pre)
    return train_t, eval_t


def prepare_data(cfg: Config, dist: DistInfo | None = None, simulator: Any = None) -> PreparedData:
    """Open the sources, fix the class list, split off validation, load validation and support images.

    ``simulator``: a shot source used for the ``simulate`` source instead of opening its manifest.
    """
    dist = dist or DistInfo()
    d = cfg.data
    if not d.sources:
        raise ConfigError("no training data: give data.sources (files or a simulation manifest)")
    file_srcs = [s for s in d.sources if s.path is not None]
    sim_srcs = [s for s in d.sources if s.simulate is not None]
    if len(sim_srcs) > 1:
        raise ConfigError("at most one live-simulation source per run (mix several structures in one manifest)")
    opened = [(s, *_file_source(cfg, s)) for s in file_srcs]
    val_opened = [(s, *_file_source(cfg, s)) for s in d.validation if s.path is not None]
    if any(s.simulate is not None for s in d.validation):
        raise ConfigError("data.validation takes files; live-simulation validation comes from the training manifest")
    names_seen = [n for _, _, _, names in opened + val_opened for n in names]
    if not sim_srcs:
        simulator = None
    else:
        simulator = as_shot_source(simulator) if simulator is not None else open_simulator(sim_srcs[0].simulate)
        if d.classes is None and d.label == "hit_type":
            names_seen += list(getattr(simulator, "class_names", None) or ["no_hit", "single", "multi", "unintended"])
        elif d.classes is None:
            raise ConfigError("with live simulation and label structure_hit_type, list data.classes")
    classes = list(d.classes) if d.classes is not None else order_classes(names_seen)
    class_index = {n: i for i, n in enumerate(classes)}
    summary = [f"classes: {', '.join(classes)}"]

    train_files, eval_files, val_files = [], [], []
    first_pre: tuple[Preprocessor, str] | None = None
    for src, reader, idx, names in opened:
        keep = np.array([n in class_index for n in names], dtype=bool)
        idx = idx[keep]
        cls = np.array([class_index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)
        if len(idx) == 0:
            raise InputFileError(f"{src.path}: no labelled shot of the classes {', '.join(classes)}")
        pos, mask = reader.pixel_position, reader.mask
        train_t, eval_t = _transforms(cfg, reader.frame_shape, pos, mask)
        if first_pre is None:
            first_pre = (train_t.final, geometry_key(reader.frame_shape, pos, mask))
        shots = FileShots(src.path, idx, cls, train_t, src.weight)
        if d.validation or d.val_fraction == 0:
            tr, held = np.arange(len(idx)), np.zeros(0, np.int64)
        else:
            tr, held = stratified_split(cls, d.val_fraction, cfg.train.seed)
        train_files.append(shots.subset(tr))
        eval_files.append(FileShots(src.path, idx[tr], cls[tr], eval_t, src.weight))
        if len(held):
            val_files.append(FileShots(src.path, idx[held], cls[held], eval_t))
        counts = np.bincount(cls[tr], minlength=len(classes))
        summary.append(
            f"{src.path}: {len(tr)} training shots "
            f"({', '.join(f'{classes[c]} {n}' for c, n in enumerate(counts) if n)}), "
            f"{len(held)} held out"
        )
        reader.close()
    for src, reader, idx, names in val_opened:
        keep = np.array([n in class_index for n in names], dtype=bool)
        cls = np.array([class_index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)
        _, eval_t = _transforms(cfg, reader.frame_shape, reader.pixel_position, reader.mask)
        val_files.append(FileShots(src.path, idx[keep], cls, eval_t))
        summary.append(f"{src.path}: {int(keep.sum())} validation shots")
        reader.close()

    stream = None
    if simulator is not None:
        frame_shape = tuple(int(v) for v in simulator.frame_shape)
        pos, mask = simulator_geometry(simulator)
        train_t, eval_t = _transforms(cfg, frame_shape, pos, mask)
        if first_pre is None:
            first_pre = (train_t.final, geometry_key(frame_shape, pos, mask))
        stream = StreamSource(simulator, train_t, eval_t, sim_srcs[0].weight)
        summary.append(f"live simulation from {sim_srcs[0].simulate}: about {d.stream_shots_per_epoch} shots per epoch")
    assert first_pre is not None

    train_ds = ShotDataset(train_files) if train_files else None
    warnings = [] if stream is not None else few_shot_warnings(
        classes, np.bincount(train_ds.labels, minlength=len(classes)) if train_ds is not None else None)
    val = support = None
    if dist.is_main:
        val_parts, sup_parts = [], []
        if val_files:
            vds = ShotDataset(val_files)
            rng = np.random.default_rng([cfg.train.seed, 0x7A1])
            n = min(len(vds), d.max_val_shots)
            sel = np.sort(rng.choice(len(vds), n, replace=False))
            val_parts.append(stack_images(vds, sel))
        if eval_files:
            eds = ShotDataset(eval_files)
            sup_parts.append(stack_images(eds, pick_per_class(eds.labels, d.support_k, cfg.train.seed)))
        if stream is not None:

            def mk(start: int) -> SimulatedShotStream:
                return SimulatedShotStream(
                    stream.simulator, stream.eval_transform, class_index, start=start, augment_seed=None, label=d.label
                )

            if not val_files:
                val_parts.append(collect_stream(mk(STREAM_VAL_BASE), None, d.max_val_shots, 50 * d.max_val_shots))
            have = set(sup_parts[0][1].tolist()) if sup_parts else set()
            if len(have) < len(classes):
                xs, ys = collect_stream(mk(STREAM_SUPPORT_BASE), d.support_k, None, 1000 * d.support_k * len(classes))
                sel = torch.tensor([int(y) not in have for y in ys])
                sup_parts.append((xs[sel], ys[sel]))
        if val_parts:
            val = EvalSet(torch.cat([v[0] for v in val_parts]), torch.cat([v[1] for v in val_parts]))
        if sup_parts:
            support = EvalSet(torch.cat([s[0] for s in sup_parts]), torch.cat([s[1] for s in sup_parts]))
        if val is not None and support is not None:
            missing = sorted(set(val.classes.tolist()) - set(support.classes.tolist()))
            if missing:
                raise ConfigError(f"no training shots of class {classes[missing[0]]} to serve as support")
    return PreparedData(classes, train_ds, stream, val, support, first_pre[0], first_pre[1], summary, warnings)


def few_shot_warnings(classes: list[str], counts: np.ndarray | None) -> list[str]:
    """Warnings for classes with fewer than 2 training shots: a triplet needs an anchor and a positive of the
    same class, so such a class is never an anchor (0 shots: never seen at all).

    Args:
        classes: the C class names.
        counts: (C,) training shots per class (after the validation split), or None.
    """
    if counts is None:
        return []
    out = []
    for name, n in zip(classes, counts.tolist(), strict=True):
        if n == 0:
            out.append(f"class {name} has no training shots: the network never sees it")
        elif n < 2:
            out.append(f"class {name} has only {n} training shot: triplets need 2 shots of a class (an anchor and "
                       "a positive), so it is never an anchor; label more shots of it")
    return out


# ------------------------------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict]
    n_val: int = 0
    """Validation shots each accuracy was measured on."""


def _split_m(m: int, w_file: float, w_stream: float) -> tuple[int, int]:
    mf = int(round(m * w_file / (w_file + w_stream)))
    mf = min(max(mf, 1), m - 1)
    return mf, m - mf


def _epoch_batches(
    cfg: Config,
    data: PreparedData,
    epoch: int,
    sampler: ClassBalancedBatchSampler | None,
    class_index: dict[str, int],
    m_file: int,
    m_stream: int,
    n_batches: int | None,
) -> Iterator:
    """(images, class ids) batches of one epoch (files, live simulation or both mixed per class)."""
    d = cfg.data
    file_iter = stream_iter = None
    if sampler is not None and data.train is not None:
        sampler.set_epoch(epoch)
        file_iter = iter(DataLoader(data.train, batch_sampler=sampler, num_workers=d.num_workers))
    if data.stream is not None:
        start = epoch * STREAM_EPOCH_STRIDE
        ds = SimulatedShotStream(
            data.stream.simulator,
            data.stream.train_transform,
            class_index,
            start=start,
            stop=None,
            augment_seed=cfg.train.seed,
            label=d.label,
        )
        loader = DataLoader(ds, batch_size=None, num_workers=d.num_workers)
        stream_iter = iter(StreamBatcher(loader, len(data.class_names), m_stream, d.classes_per_batch))
    count = 0
    while n_batches is None or count < n_batches:
        try:
            if file_iter is not None and stream_iter is not None:
                xf, yf = next(file_iter)
                xs, ys = next(stream_iter)
                yield torch.cat([xf, xs]), torch.cat([yf, ys])
            elif file_iter is not None:
                yield next(file_iter)
            else:
                assert stream_iter is not None
                yield next(stream_iter)
        except StopIteration:
            return
        count += 1


def _write_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def _resolve_resume(cfg: Config, out: Path) -> tuple[Config, dict | None]:
    last = out / "last.pt"
    if not last.is_file():
        raise InputFileError(f"nothing to resume: {last} does not exist")
    doc = load_checkpoint(last)
    saved = Config.from_dict(doc["config"])
    new = cfg.to_dict()
    overrides = {}
    for key in RESUME_OVERRIDABLE:
        section, name = key.split(".")
        overrides[key] = new[section][name]
    overrides["train.out"] = str(out)
    return saved.with_overrides(overrides), doc


def train(cfg: Config, *, resume: bool = False, console: Any = None, simulator: Any = None) -> TrainResult:
    """Train an embedding network as ``cfg`` says; see the module docstring for what is written.

    Args:
        cfg: the run config.
        resume: continue from ``<train.out>/last.pt`` (config from the checkpoint except
            :data:`RESUME_OVERRIDABLE` keys).
        console: a ``rich.console.Console`` for messages (default: a new one on stderr).
        simulator: a shot source (``simulate_shot``, ``frame_shape``) for the ``simulate`` source instead of
            its manifest (tests, notebooks).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    out = Path(cfg.train.out)
    doc = None
    if resume:
        cfg, doc = _resolve_resume(cfg, out)
    dist, device, created = setup_distributed(cfg.train.device)
    say = console.print if dist.is_main else (lambda *a, **k: None)
    try:
        with _Determinism(cfg.train.deterministic):
            return _train(cfg, doc, dist, device, out, console, say, simulator)
    finally:
        if created:
            torch.distributed.destroy_process_group()


def _train(
    cfg: Config,
    doc: dict | None,
    dist: DistInfo,
    device: torch.device,
    out: Path,
    console: Any,
    say: Any,
    simulator: Any = None,
) -> TrainResult:
    tc, d = cfg.train, cfg.data
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    torch.manual_seed(tc.seed)
    data = prepare_data(cfg, dist, simulator)
    class_index = {n: i for i, n in enumerate(data.class_names)}
    for line in data.summary:
        say(line)
    for line in data.warnings:
        say(f"[yellow]warning: {line}[/]")
    if data.val is None and dist.is_main:
        say("[yellow]no validation shots (val_fraction 0 and no data.validation): no early stopping[/]")

    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.preprocess.input_size).to(device)
    if tc.init and doc is None:
        _load_init(model, cfg)
        say(f"network initialised from {tc.init}")
    unlabelled, adapt_loss = [], None
    if d.unlabelled and cfg.adapt.active:
        from .adapt import UnlabelledLoss, open_unlabelled

        unlabelled = open_unlabelled(cfg, d.unlabelled)
        adapt_loss = UnlabelledLoss(cfg.adapt)
        terms = [f"{n} × {w:g}" for n, w in (("consistency", cfg.adapt.consistency), ("align", cfg.adapt.align)) if w]
        say(f"unlabelled frames: {sum(len(u) for u in unlabelled)} from {len(unlabelled)} file(s); "
            f"adaptation terms {', '.join(terms)}, {cfg.adapt.batch} frames per step")
    elif d.unlabelled:
        say("[yellow]data.unlabelled is given but adapt.consistency and adapt.align are 0: not used[/]")
    say(
        f"model {cfg.model.arch}: {count_parameters(model):,} parameters, input {cfg.preprocess.input_size}², "
        f"device {device}" + (f", {dist.world} processes" if dist.active else "")
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    criterion = TripletCriterion(cfg.loss.margin, cfg.loss.miner, cfg.loss.reduction, tc.seed)
    start_epoch, best, best_epoch, bad, history = 0, -math.inf, -1, 0, []
    if doc is not None:
        if doc["class_names"] != data.class_names:
            raise ConfigError(f"cannot resume: classes changed from {doc['class_names']} to {data.class_names}")
        model.load_state_dict(doc["model_state"])
        optimizer.load_state_dict(doc["optimizer_state"])
        start_epoch, best, best_epoch = int(doc["epoch"]), float(doc["best_metric"]), int(doc["best_epoch"])
        bad, history = int(doc["bad_epochs"]), list(doc["history"])
        say(f"resuming {out} after epoch {start_epoch}")
    net = model
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    n_classes = len(data.class_names)
    cpb = n_classes if d.classes_per_batch is None else min(d.classes_per_batch, n_classes)
    m_file = m_stream = d.m_per_class
    if data.train is not None and data.stream is not None:
        w_file = float(np.mean([s.weight for s in data.train.sources]))
        m_file, m_stream = _split_m(d.m_per_class, w_file, data.stream.weight)
    sampler = None
    n_batches = d.batches_per_epoch
    if data.train is None and n_batches is None:  # live simulation only: a fixed number of batches per epoch
        n_batches = max(1, math.ceil(d.stream_shots_per_epoch / (d.m_per_class * cpb * dist.world)))
    if data.train is not None:
        if n_batches is None:
            n_batches = max(1, math.ceil(len(data.train) / (d.m_per_class * cpb * dist.world)))
        sampler = ClassBalancedBatchSampler(
            data.train.labels,
            m_file,
            n_batches,
            classes_per_batch=d.classes_per_batch,
            weights=data.train.sample_weights(),
            seed=tc.seed,
            rank=dist.rank,
        )
    tb = None
    if dist.is_main and tc.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tensorboard"), purge_step=sum(int(h["steps"]) for h in history) or None)
    step = sum(int(h["steps"]) for h in history)
    stopped = False
    progress = _progress(console) if (tc.progress and dist.is_main) else None
    try:
        with progress or nullcontext():
            for epoch in range(start_epoch, tc.epochs):
                t0 = time.perf_counter()
                criterion.reseed(int(np.random.default_rng([tc.seed, epoch, dist.rank, 0x3119]).integers(2**62)))
                model.train()
                task = (
                    progress.add_task(f"epoch {epoch + 1}/{tc.epochs}", total=n_batches, loss=float("nan"))
                    if progress
                    else None
                )
                losses, triplets, steps, adapt_terms = [], 0, 0, []
                u_iter = None
                if adapt_loss is not None:
                    from .adapt import unlabelled_batches

                    u_iter = unlabelled_batches(unlabelled, cfg, epoch * max(dist.world, 1) + dist.rank,
                                                n_batches or 1)
                for x, y in _epoch_batches(cfg, data, epoch, sampler, class_index, m_file, m_stream, n_batches):
                    x, y = x.to(device, non_blocking=True), y.to(device)
                    u = next(u_iter, None) if u_iter is not None else None
                    if u is None:
                        emb = model(x)
                        loss = criterion(emb, y)
                    else:  # one pass: batch-norm statistics of the labelled and unlabelled frames together
                        u1, u2 = u[0].to(device), u[1].to(device)
                        both = model(torch.cat([x, u1, u2]))
                        emb, e1, e2 = both[: len(x)], both[len(x) : len(x) + len(u1)], both[len(x) + len(u1) :]
                        extra = adapt_loss(emb, e1, e2)
                        adapt_terms.append(float(extra.detach()))
                        loss = criterion(emb, y) + extra
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    triplets += criterion.last_n_triplets
                    steps += 1
                    step += 1
                    if tb is not None:
                        tb.add_scalar("train/loss", losses[-1], step)
                    if progress is not None:
                        progress.update(task, advance=1, loss=losses[-1])
                if steps == 0:
                    raise ConfigError(
                        "an epoch produced no batch: too few shots per class for data.m_per_class "
                        "(or a class never appears in the simulation)"
                    )
                acc = _validate(net, data, cfg, device, dist)
                improved = not math.isnan(acc) and acc > best
                if improved or (math.isnan(acc) and best == -math.inf):
                    best, best_epoch, bad = (acc if not math.isnan(acc) else -math.inf), epoch + 1, 0
                else:
                    bad += 1
                row = {
                    "epoch": epoch + 1,
                    "steps": steps,
                    "train_loss": float(np.mean(losses)),
                    "triplets": triplets,
                    "val_accuracy": acc,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.perf_counter() - t0, 3),
                }
                if adapt_loss is not None:
                    row["adapt_loss"] = float(np.mean(adapt_terms)) if adapt_terms else float("nan")
                history.append(row)
                if dist.is_main:
                    state = {
                        "epoch": epoch + 1,
                        "optimizer_state": optimizer.state_dict(),
                        "best_metric": best,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad,
                        "history": history,
                    }
                    ck = dict(
                        config=cfg,
                        class_names=data.class_names,
                        model=net,
                        preprocessor=data.preprocessor,
                        geometry=data.geometry,
                        **state,
                    )
                    save_checkpoint(out / "last.pt", **ck)
                    if improved or math.isnan(acc):
                        save_checkpoint(out / "best.pt", **ck)
                    if tc.keep_every and ((epoch + 1) % tc.keep_every == 0 or epoch + 1 == tc.epochs):
                        (out / "epochs").mkdir(exist_ok=True)
                        keep = {k: v for k, v in ck.items() if k != "optimizer_state"}
                        save_checkpoint(out / "epochs" / f"epoch-{epoch + 1:03d}.pt", **keep)
                    _write_csv(out / "log.csv", history)
                    if tb is not None:
                        tb.add_scalar("val/accuracy", acc, epoch + 1)
                        tb.add_scalar("train/epoch_loss", row["train_loss"], epoch + 1)
                        tb.flush()
                    say(
                        f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, {triplets} triplets, "
                        + val_text(acc, data.n_val) + (" (best)" if improved else "")
                    )
                if progress is not None and task is not None:
                    progress.remove_task(task)
                if tc.patience and bad >= tc.patience and not math.isnan(acc):
                    stopped = True
                    say(
                        f"early stop: no better validation accuracy for {bad} epochs "
                        f"(best {best:.3f} (n = {data.n_val}) at epoch {best_epoch})"
                    )
                    break
    finally:
        if tb is not None:
            tb.close()
    if dist.active:
        _check_in_sync(net, device)
        torch.distributed.barrier()
    if dist.is_main and tc.export and (out / "best.pt").is_file():
        from .export import export_model

        for fmt in tc.export:
            path = export_model(out / "best.pt", fmt)
            say(f"exported {fmt}: {path}")
    return TrainResult(out, best, best_epoch, len(history), stopped, history, data.n_val)


def _load_init(model: torch.nn.Module, cfg: Config) -> None:
    """Load the network weights of ``train.init`` into ``model`` (ConfigError when the networks differ)."""
    doc = load_checkpoint(cfg.train.init)
    saved = Config.from_dict(doc["config"])
    if saved.model != cfg.model or saved.preprocess.input_size != cfg.preprocess.input_size:
        raise ConfigError(f"train.init {cfg.train.init}: its network ({saved.model.arch}, input "
                          f"{saved.preprocess.input_size}) differs from this run's ({cfg.model.arch}, input "
                          f"{cfg.preprocess.input_size}); model and input size must be the same")
    model.load_state_dict(doc["model_state"])


def val_text(acc: float, n: int) -> str:
    """``validation accuracy 0.857 (n = 7)``, or ``no validation accuracy`` (NaN)."""
    if math.isnan(acc) or n == 0:
        return "no validation accuracy"
    return f"validation accuracy {acc:.3f} (n = {n})"


def _check_in_sync(net: torch.nn.Module, device: torch.device) -> None:
    """Raise when the ranks' weights differ (DDP keeps them equal; anything else is a bug)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in net.parameters()])
        probe = torch.stack(
            [flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64, device=flat.device)).sum()]
        )
        probe = probe.to(device if device.type == "cuda" else "cpu")
        gathered = [torch.zeros_like(probe) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, probe)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("distributed ranks ended with different weights")


def _validate(net: torch.nn.Module, data: PreparedData, cfg: Config, device: torch.device, dist: DistInfo) -> float:
    """Few-shot accuracy on the validation images (rank 0 computes, all ranks receive it)."""
    acc = float("nan")
    if dist.is_main and data.val is not None and data.support is not None:
        acc = fewshot_accuracy(
            net,
            (data.support.images, data.support.classes),
            (data.val.images, data.val.classes),
            data.class_names,
            cfg.train.rule,
            device,
        )
    if dist.active:
        t = torch.tensor([acc], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
        torch.distributed.broadcast(t, src=0)
        acc = float(t.item())
    return acc


def _progress(console: Any):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
