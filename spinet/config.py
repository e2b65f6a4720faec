"""Configuration of a spinet run: preprocessing, augmentation, model, loss, data and training.

A config is a tree of dataclasses that reads from and writes to plain dicts (YAML). Unknown keys and
impossible values raise :class:`spisim.errors.ConfigError` with the dotted key, so a typo in a YAML file
is reported, never silently ignored. ``docs/spinet.md`` lists every key with its default and unit.

Example::

    cfg = load_config("train.yaml")          # or Config() for all defaults
    cfg = cfg.with_overrides({"train.epochs": 5, "model.arch": "residual"})
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spisim.errors import ConfigError

from .fewshot import RULES


@dataclass
class PreprocessConfig:
    """From a detector frame to the network's input image (the same at training and inference).

    Attributes:
        assemble: ``auto`` (``geometry`` when the file has pixel positions, else ``stack``), ``geometry``
            (project pixel centres onto a plane normal to the beam and bin to the nearest pixel) or
            ``stack`` (panels placed one below the other as stored, no geometry needed).
        pixel_size: m, the assembled image's pixel pitch; None: estimated from the geometry (median
            distance of neighbouring pixels).
        centre: (row, column) of the beam in the assembled image, in assembled pixels relative to the
            beam axis (geometry) or the image centre (stack); None: (0, 0).
        bin: integer binning of assembled pixels (mean of the valid pixels in each bin).
        input_size: side of the square network input, pixels after binning (centre crop).
        scale: ``log`` (log(1 + x)), ``sqrt`` or ``none``, applied to photons (negative values clipped).
        photon_scale: frame values are divided by this first (ADU per photon; 1 for photon data).
        standardize: per-image z-score over valid pixels; invalid pixels become 0.
    """

    assemble: str = "auto"
    pixel_size: float | None = None
    centre: list[float] | None = None
    bin: int = 1
    input_size: int = 96
    scale: str = "log"
    photon_scale: float = 1.0
    standardize: bool = True

    def validate(self, prefix: str = "preprocess") -> None:
        _choice(f"{prefix}.assemble", self.assemble, ("auto", "geometry", "stack"))
        _choice(f"{prefix}.scale", self.scale, ("log", "sqrt", "none"))
        _positive_int(f"{prefix}.bin", self.bin)
        _positive_int(f"{prefix}.input_size", self.input_size)
        if self.input_size < 16:
            raise ConfigError(f"{prefix}.input_size must be at least 16 pixels, got {self.input_size}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ConfigError(f"{prefix}.pixel_size must be > 0 m, got {self.pixel_size}")
        if not self.photon_scale > 0:
            raise ConfigError(f"{prefix}.photon_scale must be > 0, got {self.photon_scale}")
        if self.centre is not None and len(self.centre) != 2:
            raise ConfigError(f"{prefix}.centre must be [row, column], got {self.centre}")


@dataclass
class AugmentConfig:
    """Training-only random changes to each shot; every one can be switched off (0, false or null).

    Attributes:
        enabled: master switch.
        rotation: degrees, in-plane rotation drawn uniformly in ±rotation.
        flip: random horizontal and vertical flips.
        shift: centre shift, fraction of the input size, uniform in ±shift along each axis.
        zoom: relative zoom, uniform in [1 - zoom, 1 + zoom].
        occlusion_patches: number of square patches blanked (treated as masked).
        occlusion_size: side of each patch, input pixels.
        missing_panels: probability that a shot loses one randomly chosen panel (multi-panel detectors).
        missing_region: probability that a shot loses a quarter, half or three quarters of the detector
            (an angular sector about the beam).
        fluence_scale: [low, high]: expected photons are multiplied by a log-uniform factor in this range
            and Poisson-resampled (null: off). Applies to photon data (after ``photon_scale``).
        gaussian_noise: photons, standard deviation of Gaussian noise added to each pixel.
    """

    enabled: bool = True
    rotation: float = 180.0
    flip: bool = True
    shift: float = 0.03
    zoom: float = 0.05
    occlusion_patches: int = 0
    occlusion_size: int = 12
    missing_panels: float = 0.0
    missing_region: float = 0.0
    fluence_scale: list[float] | None = None
    gaussian_noise: float = 0.0

    def validate(self, prefix: str = "augment") -> None:
        for name in ("rotation", "shift", "zoom", "missing_panels", "missing_region", "gaussian_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(self, name)}")
        if self.zoom >= 1:
            raise ConfigError(f"{prefix}.zoom must be < 1, got {self.zoom}")
        if self.shift >= 0.5:
            raise ConfigError(f"{prefix}.shift must be < 0.5 (a fraction of the input size), got {self.shift}")
        for name in ("missing_panels", "missing_region"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{prefix}.{name} is a probability, got {getattr(self, name)}")
        if self.occlusion_patches < 0 or self.occlusion_size < 1:
            raise ConfigError(f"{prefix}.occlusion_patches must be >= 0 and occlusion_size >= 1")
        if self.fluence_scale is not None:
            lo_hi = list(self.fluence_scale)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"{prefix}.fluence_scale must be [low, high] with 0 < low <= high, got {lo_hi}")

    @property
    def geometric(self) -> bool:
        """True when rotation, flip, shift or zoom is active."""
        return self.enabled and (self.rotation > 0 or self.flip or self.shift > 0 or self.zoom > 0)


@dataclass
class ModelConfig:
    """The embedding network.

    Attributes:
        arch: ``specklenn`` (two conv 5×5–BN–PReLU–maxpool blocks, FC 512, FC to the embedding; the
            paper's network), ``residual`` (a small ResNet with global average pooling) or ``compact`` (four
            conv layers and global average pooling, 60,836 + 65 × embedding_dim parameters: 64,086 with
            ``embedding_dim: 50``, the FPGA study's budget; for real-time streams, ``spi stream``).
        embedding_dim: size of the L2-normalised embedding.
        channels: conv channels of the two SpeckleNN blocks.
        hidden: width of the SpeckleNN hidden fully connected layer.
        width: residual: channels of the first stage (doubled at each later stage).
        blocks: residual: residual blocks per stage.
    """

    arch: str = "specklenn"
    embedding_dim: int = 128
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 512
    width: int = 32
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])

    def validate(self, prefix: str = "model") -> None:
        _choice(f"{prefix}.arch", self.arch, ("specklenn", "residual", "compact"))
        _positive_int(f"{prefix}.embedding_dim", self.embedding_dim)
        _positive_int(f"{prefix}.hidden", self.hidden)
        _positive_int(f"{prefix}.width", self.width)
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ConfigError(f"{prefix}.channels must be two positive integers, got {self.channels}")
        if not self.blocks or min(self.blocks) < 1:
            raise ConfigError(f"{prefix}.blocks must be positive integers, got {self.blocks}")


@dataclass
class LossConfig:
    """Triplet loss on squared L2 distance, with online mining.

    Attributes:
        margin: in squared embedding distance (embeddings are unit vectors, so distances lie in [0, 4]).
        miner: ``random_semihard`` (paper: random positive, random semi-hard negative, else a random
            negative; one triplet per anchor), ``batch_hard`` (hardest positive and negative per anchor)
            or ``batch_all`` (every valid triplet).
        reduction: ``mean`` over mined triplets or ``mean_nonzero`` over those with positive loss;
            null: ``mean_nonzero`` for batch_all, ``mean`` otherwise.
    """

    margin: float = 0.2
    miner: str = "random_semihard"
    reduction: str | None = None

    def validate(self, prefix: str = "loss") -> None:
        if not self.margin > 0:
            raise ConfigError(f"{prefix}.margin must be > 0, got {self.margin}")
        _choice(f"{prefix}.miner", self.miner, ("random_semihard", "batch_hard", "batch_all"))
        if self.reduction is not None:
            _choice(f"{prefix}.reduction", self.reduction, ("mean", "mean_nonzero"))


@dataclass
class SourceConfig:
    """One source of labelled shots.

    Attributes:
        path: a CXI/HDF5 file (simulated, with labels inside, or real with ``labels``).
        labels: label file for ``path`` (CSV ``index,label[,time]`` or HDF5); null: labels in the file.
        simulate: a simulation manifest: shots are simulated live, no file in between (instead of path).
        weight: sampling weight of this source relative to the others (per class).
        max_shots: use at most this many labelled shots of the file (the first ones); null: all.
        binary: relabel the file's shots single / not_single (every class but single becomes not_single), e.g.
            a simulated 4-class file trained beside a real run labelled single vs rest (files only).
    """

    path: str | None = None
    labels: str | None = None
    simulate: str | None = None
    weight: float = 1.0
    max_shots: int | None = None
    binary: bool = False

    def validate(self, prefix: str = "source") -> None:
        if (self.path is None) == (self.simulate is None):
            raise ConfigError(f"{prefix}: give exactly one of path (a file) or simulate (a manifest)")
        if self.simulate is not None and self.labels is not None:
            raise ConfigError(f"{prefix}: labels apply to files, not to simulate")
        if not self.weight > 0:
            raise ConfigError(f"{prefix}.weight must be > 0, got {self.weight}")
        if self.max_shots is not None and self.max_shots < 1:
            raise ConfigError(f"{prefix}.max_shots must be >= 1, got {self.max_shots}")
        if self.binary and self.simulate is not None:
            raise ConfigError(f"{prefix}.binary applies to files, not to simulate")


@dataclass
class UnlabelledConfig:
    """A file of unlabelled frames (e.g. the real run itself) for the adaptation terms (:mod:`spinet.adapt`).

    Attributes:
        path: a CXI/HDF5 file (in photons; labels, if any, are ignored).
        indices: a text or CSV file of shot indices to use (one per line, or the first column; a header is
            skipped); null: every shot of the file.
        max_shots: use at most this many of them (the first ones); null: all.
    """

    path: str = ""
    indices: str | None = None
    max_shots: int | None = None

    def validate(self, prefix: str = "unlabelled") -> None:
        if not self.path:
            raise ConfigError(f"{prefix}.path: give the file of unlabelled frames")
        if self.max_shots is not None and self.max_shots < 1:
            raise ConfigError(f"{prefix}.max_shots must be >= 1, got {self.max_shots}")


@dataclass
class DataConfig:
    """Where shots come from and how batches are drawn.

    Attributes:
        sources: training sources (files and/or live simulation), mixed by their weights.
        validation: validation sources; empty: ``val_fraction`` of each training file is held out.
        val_fraction: fraction of each training file's labelled shots held out for validation.
        label: ``hit_type`` or ``structure_hit_type`` (class ``<structure>/<hit type>``; ``no_hit`` alone).
        classes: class names in order (label files may also use these names); null: every class found (known
            hit types first, then the rest sorted, not_single last).
        m_per_class: shots of each class in a batch (batch size = m_per_class × classes per batch).
        classes_per_batch: classes in each batch; null: all.
        batches_per_epoch: null: one pass over the training shots' worth of batches.
        num_workers: DataLoader worker processes.
        support_k: supports per class (from the training set) for the validation few-shot accuracy.
        max_val_shots: validation shots evaluated each epoch (a fixed random subset).
        stream_shots_per_epoch: a live-simulation source alone: epochs of this many shots' worth of batches
            (stream_shots_per_epoch / batch size); shots of over-represented classes beyond what the batches
            take are simulated too and dropped.
        unlabelled: files of unlabelled frames (the run to adapt to) for the ``adapt`` loss terms; empty: none.
    """

    sources: list[SourceConfig] = field(default_factory=list)
    validation: list[SourceConfig] = field(default_factory=list)
    val_fraction: float = 0.15
    label: str = "hit_type"
    classes: list[str] | None = None
    m_per_class: int = 5
    classes_per_batch: int | None = None
    batches_per_epoch: int | None = None
    num_workers: int = 0
    support_k: int = 5
    max_val_shots: int = 1000
    stream_shots_per_epoch: int = 2000
    unlabelled: list[UnlabelledConfig] = field(default_factory=list)

    def validate(self, prefix: str = "data") -> None:
        for i, s in enumerate(self.sources):
            s.validate(f"{prefix}.sources[{i}]")
        for i, u in enumerate(self.unlabelled):
            u.validate(f"{prefix}.unlabelled[{i}]")
        for i, s in enumerate(self.validation):
            s.validate(f"{prefix}.validation[{i}]")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"{prefix}.val_fraction must be in [0, 1), got {self.val_fraction}")
        _choice(f"{prefix}.label", self.label, ("hit_type", "structure_hit_type"))
        if self.m_per_class < 2:
            raise ConfigError(f"{prefix}.m_per_class must be >= 2 (triplets need a positive), got {self.m_per_class}")
        if self.classes_per_batch is not None and self.classes_per_batch < 2:
            raise ConfigError(f"{prefix}.classes_per_batch must be >= 2 (triplets need a negative)")
        if self.batches_per_epoch is not None:
            _positive_int(f"{prefix}.batches_per_epoch", self.batches_per_epoch)
        if self.num_workers < 0:
            raise ConfigError(f"{prefix}.num_workers must be >= 0")
        _positive_int(f"{prefix}.support_k", self.support_k)
        _positive_int(f"{prefix}.max_val_shots", self.max_val_shots)
        _positive_int(f"{prefix}.stream_shots_per_epoch", self.stream_shots_per_epoch)
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{prefix}.classes has duplicates: {self.classes}")


@dataclass
class TrainConfig:
    """The optimisation loop.

    Attributes:
        out: run folder (checkpoints, logs, config).
        epochs: maximum number of epochs.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seeds model initialisation, sampling, augmentation and mining.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        patience: stop after this many epochs without a better validation accuracy; 0: never.
        rule: few-shot rule of the validation accuracy: ``mean`` (mean distance, the paper's),
            ``prototype``, ``nearest`` or ``knn`` (see :mod:`spinet.fewshot`).
        deterministic: ``torch.use_deterministic_algorithms`` (identical results for identical seeds).
        tensorboard: write TensorBoard event files beside the CSV log.
        progress: show a progress bar.
        export: formats written beside the best checkpoint at the end: ``torchscript``, ``onnx``.
        init: a spinet checkpoint whose network weights start the run (fine-tuning, e.g. on simulated shots
            plus a few real labelled ones); the architecture and input size must be this run's; null: random.
        keep_every: also keep the network of every N-th epoch and of the last one in ``epochs/epoch-NNN.pt``
            (for choosing a checkpoint with real labelled shots, :mod:`spinet.selection`); 0: none.
    """

    out: str = "runs/spinet"
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    patience: int = 5
    rule: str = "mean"
    deterministic: bool = True
    tensorboard: bool = True
    progress: bool = True
    export: list[str] = field(default_factory=list)
    init: str | None = None
    keep_every: int = 0

    def validate(self, prefix: str = "train") -> None:
        _positive_int(f"{prefix}.epochs", self.epochs)
        if self.keep_every < 0:
            raise ConfigError(f"{prefix}.keep_every must be >= 0 (0: keep no per-epoch checkpoints), got "
                              f"{self.keep_every}")
        if not self.lr > 0:
            raise ConfigError(f"{prefix}.lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ConfigError(f"{prefix}.patience must be >= 0, got {self.patience}")
        _choice(f"{prefix}.rule", self.rule, RULES)
        for fmt in self.export:
            _choice(f"{prefix}.export", fmt, ("torchscript", "onnx"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{prefix}.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class AdaptConfig:
    """Training terms on unlabelled frames of the run to adapt to (``data.unlabelled``; :mod:`spinet.adapt`).

    Each step draws ``batch`` unlabelled frames, two augmented views of each, and adds to the triplet loss:

    Attributes:
        consistency: weight of the consistency term: the mean squared embedding distance between the two
            views of a frame (squared L2, in [0, 4]); 0: off.
        align: weight of the domain-alignment term: the maximum mean discrepancy (Gaussian kernels) between
            the embeddings of the labelled batch and those of the unlabelled frames; 0: off.
        batch: unlabelled frames per step.
        bandwidths: squared-distance scales of the alignment kernels exp(-d / b).
    """

    consistency: float = 0.0
    align: float = 0.0
    batch: int = 20
    bandwidths: list[float] = field(default_factory=lambda: [0.1, 0.5, 2.0])

    def validate(self, prefix: str = "adapt") -> None:
        for name in ("consistency", "align"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{prefix}.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch < 2:
            raise ConfigError(f"{prefix}.batch must be >= 2, got {self.batch}")
        if not self.bandwidths or min(self.bandwidths) <= 0:
            raise ConfigError(f"{prefix}.bandwidths must be positive numbers, got {self.bandwidths}")

    @property
    def active(self) -> bool:
        """True when some term has a positive weight."""
        return self.consistency > 0 or self.align > 0


@dataclass
class Config:
    """A whole spinet run."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def validate(self) -> Config:
        """Check every value; returns self. Raises ConfigError naming the key."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        if self.adapt.active and not self.data.unlabelled:
            raise ConfigError("adapt.consistency / adapt.align need unlabelled frames: give data.unlabelled "
                              "(spi train --unlabelled FILE)")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        """Build from a nested dict; unknown keys raise ConfigError."""
        return _from_dict(cls, d or {}, "").validate()

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"train.epochs": 3, "augment.rotation": 0}``."""
        d = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"unknown config key {key!r}")
                node = node[p]
            if not isinstance(node, dict) or parts[-1] not in node:
                raise ConfigError(f"unknown config key {key!r}")
            node[parts[-1]] = value
        return Config.from_dict(d)


def load_config(path: str | Path) -> Config:
    """Read a YAML config file (UTF-8; missing sections take their defaults)."""
    from spisim.schema import read_yaml

    path = Path(path)
    d = read_yaml(path, "config file")
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (preprocess, model, data, train ...)")
    return Config.from_dict(d)


def save_config(config: Config, path: str | Path) -> None:
    """Write a config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------------------------- helpers


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _positive_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def _from_dict(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{where}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in d.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(hints[name], value, key)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type (dataclasses, lists of them, numbers), or raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value
