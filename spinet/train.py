"""Training loop: class-balanced batches, triplet loss, few-shot validation, checkpoints, resume, DDP.

Run folder (``train.out``)::

    config.yaml        the resolved config
    last.pt            checkpoint after the latest finished epoch (what --resume continues from)
    best.pt            checkpoint with the best validation accuracy so far
    epochs/epoch-NNN.pt   the network of every train.keep_every-th epoch and of the last (optional)
    log.csv            one row per epoch: epoch, steps, train_loss, triplets, val_accuracy, lr, seconds
    tensorboard/       the same as TensorBoard scalars (loss per step, accuracy per epoch)
    best.ts.pt, best.onnx   exports, when train.export asks for them

The training data are prepared by :mod:`spinet.prepare` (:func:`prepare_data`), where a process runs by
:mod:`spinet.distributed`.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from spisim.errors import ConfigError, InputFileError

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, save_config
from .data import ClassBalancedBatchSampler, SimulatedShotStream, StreamBatcher
from .distributed import Determinism, DistInfo, check_in_sync, setup_distributed
from .fewshot import fewshot_accuracy
from .losses import TripletCriterion
from .models import build_model, count_parameters
from .prepare import STREAM_EPOCH_STRIDE, PreparedData, prepare_data

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
        file_iter = _one_line_errors(iter(DataLoader(data.train, batch_sampler=sampler, num_workers=d.num_workers)))
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


def _one_line_errors(batches: Iterator) -> Iterator:
    """``batches``, with an InputFileError raised in a DataLoader worker (torch re-raises it with the worker's
    traceback in its message) cut back to its own one line."""
    try:
        yield from batches
    except InputFileError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) < 2:
            raise
        raise InputFileError(lines[-1].partition("InputFileError: ")[2] or lines[-1]) from None


def _write_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def _resolve_resume(out: Path, overrides: dict[str, Any]) -> tuple[Config, dict]:
    """The saved config of the run in ``out`` with ``overrides`` (only :data:`RESUME_OVERRIDABLE` keys), and its
    ``last.pt`` checkpoint."""
    last = out / "last.pt"
    fixed = sorted(k for k in overrides if k not in RESUME_OVERRIDABLE)
    if fixed:
        raise ConfigError(
            f"cannot change {', '.join(fixed)} when resuming; may change: {', '.join(RESUME_OVERRIDABLE)}"
        )
    if not last.is_file():
        raise InputFileError(f"nothing to resume: {last} does not exist")
    doc = load_checkpoint(last)
    return Config.from_dict(doc["config"]).with_overrides({**overrides, "train.out": str(out)}), doc


Say = Callable[[str], None]
"""A message sink: one line of text (warnings start with ``warning:``)."""


def _console_say(console: Any = None) -> Say:
    """Messages to a ``rich.console.Console`` (default: a new one on stderr), warnings in yellow."""
    from rich.console import Console

    console = console or Console(stderr=True)

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, style="yellow" if text.startswith("warning") else None)

    return say


def train(
    cfg: Config,
    *,
    resume: bool = False,
    console: Any = None,
    simulator: Any = None,
    say: Say | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train an embedding network as ``cfg`` says; see the module docstring for what is written.

    The training data are opened and checked, and the network built, before the run folder is made: bad data
    leave no folder behind.

    Args:
        cfg: the run config.
        resume: continue from ``<train.out>/last.pt`` (config from the checkpoint except
            :data:`RESUME_OVERRIDABLE` keys, taken from ``cfg``).
        console: a ``rich.console.Console`` for messages when ``say`` is not given (default: a new one on stderr).
        simulator: a shot source (``simulate_shot``, ``frame_shape``) for the ``simulate`` source instead of
            its manifest (tests, notebooks).
        say: where messages go, one line each (default: ``console``).
        progress: called with 1 after each training step (with ``train.progress``, on rank 0).
        on_start: called once, when the data are checked and the steps begin, with the most training steps the
            run will take (epochs left × batches per epoch; with ``train.progress``, on rank 0).
    """
    doc = None
    if resume:
        new = cfg.to_dict()
        cfg, doc = _resolve_resume(Path(cfg.train.out), {k: new[k.split(".")[0]][k.split(".")[1]]
                                                         for k in RESUME_OVERRIDABLE})
    return _run(cfg, doc, simulator, say or _console_say(console), progress, on_start)


def run_training(
    config: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    say: Say | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> TrainResult:
    """What ``spi train`` does: the config (a YAML file, then ``overrides``), checked, then :func:`train`.

    Args:
        config: a YAML config file (None: the defaults); none with ``resume``.
        overrides: dotted config keys → values (``{"train.epochs": 20, "data.sources": [...]}``); with ``resume``
            only :data:`RESUME_OVERRIDABLE` keys and ``train.out``.
        resume: continue the run in ``train.out`` from its ``last.pt``.
        overwrite: start afresh in a ``train.out`` that already holds a run.
        say, progress, on_start: as in :func:`train`.

    Raises:
        ConfigError: no training data, a run already in ``train.out`` (without ``overwrite``), a config file with
            ``resume``, a key that may not change on resume; InputFileError: bad data (before any output).
    """
    from .config import load_config

    overrides = dict(overrides or {})
    if resume:
        if config is not None:
            raise ConfigError("--resume continues a run with its own config: give no CONFIG file")
        out = Path(overrides.pop("train.out", Config().train.out))
        cfg, doc = _resolve_resume(out, overrides)
    else:
        cfg = (load_config(config) if config is not None else Config()).with_overrides(overrides)
        doc = None
        if not cfg.data.sources:
            raise ConfigError("no training data: give --data PATH, --simulate MANIFEST or a CONFIG with data.sources")
        if not overwrite and (Path(cfg.train.out) / "last.pt").is_file():
            raise ConfigError(f"{cfg.train.out} already holds a run: continue it with --resume, choose another "
                              "--out, or --overwrite")
    return _run(cfg, doc, None, say or _console_say(), progress, on_start)


def _run(cfg: Config, doc: dict | None, simulator: Any, say: Say, progress: Callable[[int], None] | None,
         on_start: Callable[[int], None] | None) -> TrainResult:
    dist, device, created = setup_distributed(cfg.train.device)
    if not dist.is_main:
        say, progress, on_start = (lambda text: None), None, None
    elif not cfg.train.progress:
        progress, on_start = None, None
    try:
        with Determinism(cfg.train.deterministic):
            return _train(cfg, doc, dist, device, simulator, say, progress, on_start)
    finally:
        if created:
            torch.distributed.destroy_process_group()


@dataclass
class _State:
    """Where training stands: epochs finished, the best validation accuracy and its epoch, epochs without
    improvement, the per-epoch log, training steps taken."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = -1
    bad: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, doc: dict) -> _State:
        return cls(int(doc["epoch"]), float(doc["best_metric"]), int(doc["best_epoch"]), int(doc["bad_epochs"]),
                   list(doc["history"]))

    @property
    def steps(self) -> int:
        return sum(int(h["steps"]) for h in self.history)

    def record(self, epoch: int, acc: float, row: dict) -> bool:
        """Log epoch ``epoch`` (0-based) with validation accuracy ``acc``; True when it is the best so far."""
        improved = not math.isnan(acc) and acc > self.best
        if improved or (math.isnan(acc) and self.best == -math.inf):
            self.best, self.best_epoch, self.bad = (acc if not math.isnan(acc) else -math.inf), epoch + 1, 0
        else:
            self.bad += 1
        self.epoch = epoch + 1
        self.history.append(row)
        return improved

    def checkpoint(self, optimizer: torch.optim.Optimizer) -> dict:
        return {"epoch": self.epoch, "optimizer_state": optimizer.state_dict(), "best_metric": self.best,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad, "history": self.history}


@dataclass
class _Run:
    """A run being trained: its config, data, network (``net``; ``model`` is its DDP wrapper where distributed),
    optimizer, loss and batch plan."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    out: Path
    data: PreparedData
    net: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    criterion: TripletCriterion
    sampler: ClassBalancedBatchSampler | None
    n_batches: int
    m_file: int
    m_stream: int
    unlabelled: list = field(default_factory=list)
    adapt_loss: Any = None
    tb: Any = None
    step: int = 0

    @property
    def class_index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.data.class_names)}


def _network(cfg: Config, doc: dict | None, device: torch.device, say: Say) -> torch.nn.Module:
    """The network, initialised from ``train.seed`` (or from ``train.init`` when not resuming)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model, cfg.preprocess.input_size).to(device)
    if tc.init and doc is None:
        _load_init(model, cfg)
        say(f"network initialised from {tc.init}")
    return model


def _adaptation(cfg: Config, say: Say) -> tuple[list, Any]:
    """The unlabelled frames and the loss of their adaptation terms (none unless asked for)."""
    d = cfg.data
    if d.unlabelled and cfg.adapt.active:
        from .adapt import UnlabelledLoss, open_unlabelled

        unlabelled = open_unlabelled(cfg, d.unlabelled)
        terms = [f"{n} × {w:g}" for n, w in (("consistency", cfg.adapt.consistency), ("align", cfg.adapt.align)) if w]
        say(f"unlabelled frames: {sum(len(u) for u in unlabelled)} from {len(unlabelled)} file(s); "
            f"adaptation terms {', '.join(terms)}, {cfg.adapt.batch} frames per step")
        return unlabelled, UnlabelledLoss(cfg.adapt)
    if d.unlabelled:
        say("warning: data.unlabelled is given but adapt.consistency and adapt.align are 0: not used")
    return [], None


def _batch_plan(cfg: Config, data: PreparedData, dist: DistInfo) -> tuple[ClassBalancedBatchSampler | None, int,
                                                                            int, int]:
    """(the file sampler or None, batches per epoch, shots per class from the files, from live simulation)."""
    d = cfg.data
    n_classes = len(data.class_names)
    cpb = n_classes if d.classes_per_batch is None else min(d.classes_per_batch, n_classes)
    m_file = m_stream = d.m_per_class
    if data.train is not None and data.stream is not None:
        w_file = float(np.mean([s.weight for s in data.train.sources]))
        m_file, m_stream = _split_m(d.m_per_class, w_file, data.stream.weight)
    n_batches = d.batches_per_epoch
    if data.train is None:
        if n_batches is None:  # live simulation only: a fixed number of batches per epoch
            n_batches = max(1, math.ceil(d.stream_shots_per_epoch / (d.m_per_class * cpb * dist.world)))
        return None, n_batches, m_file, m_stream
    if n_batches is None:
        n_batches = max(1, math.ceil(len(data.train) / (d.m_per_class * cpb * dist.world)))
    sampler = ClassBalancedBatchSampler(data.train.labels, m_file, n_batches, classes_per_batch=d.classes_per_batch,
                                        weights=data.train.sample_weights(), seed=cfg.train.seed, rank=dist.rank)
    return sampler, n_batches, m_file, m_stream


def _train(cfg: Config, doc: dict | None, dist: DistInfo, device: torch.device, simulator: Any, say: Say,
           progress: Callable[[int], None] | None, on_start: Callable[[int], None] | None) -> TrainResult:
    tc = cfg.train
    out = Path(tc.out)
    torch.manual_seed(tc.seed)
    data = prepare_data(cfg, dist, simulator)  # opened and checked before the run folder is made
    for line in data.summary:
        say(line)
    for line in data.warnings:
        say(f"warning: {line}")
    if data.val is None and dist.is_main:
        say("warning: no validation shots (val_fraction 0 and no data.validation): no early stopping")
    net = _network(cfg, doc, device, say)
    unlabelled, adapt_loss = _adaptation(cfg, say)
    say(f"model {cfg.model.arch}: {count_parameters(net):,} parameters, input {cfg.preprocess.input_size}², "
        f"device {device}" + (f", {dist.world} processes" if dist.active else ""))
    optimizer = torch.optim.Adam(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    criterion = TripletCriterion(cfg.loss.margin, cfg.loss.miner, cfg.loss.reduction, tc.seed)
    state = _State()
    if doc is not None:
        if doc["class_names"] != data.class_names:
            raise ConfigError(f"cannot resume: classes changed from {doc['class_names']} to {data.class_names}")
        net.load_state_dict(doc["model_state"])
        optimizer.load_state_dict(doc["optimizer_state"])
        state = _State.from_checkpoint(doc)
        say(f"resuming {out} after epoch {state.epoch}")
    model = net
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    run = _Run(cfg, dist, device, out, data, net, model, optimizer, criterion, *_batch_plan(cfg, data, dist),
               unlabelled, adapt_loss, step=state.steps)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            run.tb = SummaryWriter(str(out / "tensorboard"), purge_step=state.steps or None)
    if on_start is not None:
        on_start(max(0, tc.epochs - state.epoch) * run.n_batches)
    stopped = False
    try:
        for epoch in range(state.epoch, tc.epochs):
            t0 = time.perf_counter()
            row = _train_epoch(run, epoch, progress)
            acc = _validate(net, data, cfg, device, dist)
            row = {"epoch": epoch + 1, "steps": row["steps"], "train_loss": row["train_loss"],
                   "triplets": row["triplets"], "val_accuracy": acc, "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - t0, 3), **row["extra"]}
            improved = state.record(epoch, acc, row)
            if dist.is_main:
                _end_epoch(run, state, acc, improved)
                say(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, {row['triplets']} triplets, "
                    + val_text(acc, data.n_val) + (" (best)" if improved else ""))
            if tc.patience and state.bad >= tc.patience and not math.isnan(acc):
                stopped = True
                say(f"early stop: no better validation accuracy for {state.bad} epochs "
                    f"(best {state.best:.3f} (n = {data.n_val}) at epoch {state.best_epoch})")
                break
    finally:
        if run.tb is not None:
            run.tb.close()
    if dist.active:
        check_in_sync(net, device)
        torch.distributed.barrier()
    if dist.is_main and tc.export and (out / "best.pt").is_file():
        from .export import export_model

        for fmt in tc.export:
            say(f"exported {fmt}: {export_model(out / 'best.pt', fmt)}")
    return TrainResult(out, state.best, state.best_epoch, len(state.history), stopped, state.history, data.n_val)


def _train_epoch(run: _Run, epoch: int, progress: Callable[[int], None] | None) -> dict:
    """One epoch of training steps: {steps, train_loss (mean), triplets, extra (adapt_loss where adapting)}."""
    cfg, dist = run.cfg, run.dist
    run.criterion.reseed(int(np.random.default_rng([cfg.train.seed, epoch, dist.rank, 0x3119]).integers(2**62)))
    run.model.train()
    losses, triplets, adapt_terms = [], 0, []
    u_iter = None
    if run.adapt_loss is not None:
        from .adapt import unlabelled_batches

        u_iter = unlabelled_batches(run.unlabelled, cfg, epoch * max(dist.world, 1) + dist.rank, run.n_batches or 1)
    for x, y in _epoch_batches(cfg, run.data, epoch, run.sampler, run.class_index, run.m_file, run.m_stream,
                               run.n_batches):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device)
        u = next(u_iter, None) if u_iter is not None else None
        loss = _loss(run, x, y, u, adapt_terms)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        losses.append(float(loss.detach()))
        triplets += run.criterion.last_n_triplets
        run.step += 1
        if run.tb is not None:
            run.tb.add_scalar("train/loss", losses[-1], run.step)
        if progress is not None:
            progress(1)
    if not losses:
        raise ConfigError("an epoch produced no batch: too few shots per class for data.m_per_class "
                          "(or a class never appears in the simulation)")
    extra = {}
    if run.adapt_loss is not None:
        extra["adapt_loss"] = float(np.mean(adapt_terms)) if adapt_terms else float("nan")
    return {"steps": len(losses), "train_loss": float(np.mean(losses)), "triplets": triplets, "extra": extra}


def _loss(run: _Run, x: torch.Tensor, y: torch.Tensor, u: tuple[torch.Tensor, torch.Tensor] | None,
          adapt_terms: list[float]) -> torch.Tensor:
    """The triplet loss of a batch, plus the adaptation terms on unlabelled views ``u`` (appended to
    ``adapt_terms``)."""
    if u is None:
        return run.criterion(run.model(x), y)
    # one pass: batch-norm statistics of the labelled and unlabelled frames together
    u1, u2 = u[0].to(run.device), u[1].to(run.device)
    both = run.model(torch.cat([x, u1, u2]))
    emb, e1, e2 = both[: len(x)], both[len(x) : len(x) + len(u1)], both[len(x) + len(u1) :]
    extra = run.adapt_loss(emb, e1, e2)
    adapt_terms.append(float(extra.detach()))
    return run.criterion(emb, y) + extra


def _end_epoch(run: _Run, state: _State, acc: float, improved: bool) -> None:
    """Rank 0 after an epoch: last.pt (with the optimizer state, for --resume), best.pt and kept epochs (without
    it), log.csv, TensorBoard scalars."""
    tc, out = run.cfg.train, run.out
    ck = dict(config=run.cfg, class_names=run.data.class_names, model=run.net, preprocessor=run.data.preprocessor,
              geometry=run.data.geometry, **state.checkpoint(run.optimizer))
    save_checkpoint(out / "last.pt", **ck)
    if improved or math.isnan(acc):
        save_checkpoint(out / "best.pt", **ck, optimizer=False)
    if tc.keep_every and (state.epoch % tc.keep_every == 0 or state.epoch == tc.epochs):
        (out / "epochs").mkdir(exist_ok=True)
        save_checkpoint(out / "epochs" / f"epoch-{state.epoch:03d}.pt", **ck, optimizer=False)
    _write_csv(out / "log.csv", state.history)
    if run.tb is not None:
        run.tb.add_scalar("val/accuracy", acc, state.epoch)
        run.tb.add_scalar("train/epoch_loss", state.history[-1]["train_loss"], state.epoch)
        run.tb.flush()


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
