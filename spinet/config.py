"""Configuration of a spinet run: preprocessing, augmentation, model, loss, data and training.

A config is a tree of dataclasses whose keys are declared with :func:`spisim.schema.key` (kind, default, unit,
meaning) and validated by :func:`spisim.schema.build`, the engine the simulation manifests use: an unknown key
(with a did-you-mean), a wrong type or an impossible value raises :class:`spisim.errors.ConfigError` in one line
naming the key path, e.g. ``train.epochs: expected a whole number, got 2.5``. The key tables of
``docs/spinet.md`` are generated from the same declarations (:func:`reference_markdown`; a test keeps them equal).

Example::

    cfg = load_config("train.yaml")          # or Config() for all defaults
    cfg = cfg.with_overrides({"train.epochs": 5, "model.arch": "residual"})
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from spisim.atomic import write_text_atomic
from spisim.errors import ConfigError
from spisim.schema import build, key, reference_table

from .fewshot import RULES

DEVICE_NAMES = ("auto", "cpu", "cuda")
"""``train.device`` (also ``cuda:N``), resolved by :func:`spisim.backend.resolve_device`."""


def _device(value: str, where: str) -> None:
    if not (value in DEVICE_NAMES or (value.startswith("cuda:") and value[5:].isdigit())):
        raise ConfigError(f"{where} must be auto, cpu, cuda or cuda:N, got {value!r}")


@dataclass
class PreprocessConfig:
    """From a detector frame to the network's input image (the same at training and inference)."""

    assemble: str = key("auto", kind="choice", choices=("auto", "geometry", "stack"),
                        doc="`auto` (`geometry` when the file has pixel positions, else `stack`), `geometry` (project "
                            "pixel centres onto a plane normal to the beam and bin to the nearest pixel) or `stack` "
                            "(panels one below the other as stored, no geometry needed)")
    pixel_size: float | None = key(None, kind="float", unit="m", nullable=True, minimum=0.0, exclusive=True,
                                   doc="the assembled image's pixel pitch; null: estimated from the geometry (median "
                                       "distance of neighbouring pixels)")
    centre: list[float] | None = key(None, kind="list", item="float", length=2, nullable=True,
                                     doc="[row, column] of the beam in the assembled image, assembled pixels relative "
                                         "to the beam axis (geometry) or the image centre (stack); null: [0, 0]")
    bin: int = key(1, kind="int", minimum=1,
                   doc="integer binning of assembled pixels (mean of the valid pixels in each bin)")
    input_size: int = key(96, kind="int", minimum=16,
                          doc="side of the square network input, pixels after binning (centre crop); at least 16")
    scale: str = key("log", kind="choice", choices=("log", "sqrt", "none"),
                     doc="`log` (log(1 + x)), `sqrt` or `none`, applied to photons (negative values clipped)")
    photon_scale: float = key(1.0, kind="float", minimum=0.0, exclusive=True,
                              doc="frame values are divided by this first (ADU per photon; 1 for photon data)")
    standardize: bool = key(True, kind="bool", doc="per-image z-score over valid pixels; invalid pixels become 0")


@dataclass
class AugmentConfig:
    """Training-only random changes to each shot; every one can be switched off (0, false or null)."""

    enabled: bool = key(True, kind="bool", doc="master switch")
    rotation: float = key(180.0, kind="float", unit="degrees", minimum=0.0,
                          doc="in-plane rotation uniform in ±rotation")
    flip: bool = key(True, kind="bool", doc="random horizontal and vertical flips")
    shift: float = key(0.03, kind="float", minimum=0.0,
                       doc="centre shift, fraction of the input size, uniform in ±shift along each axis (< 0.5)")
    zoom: float = key(0.05, kind="float", minimum=0.0, doc="relative zoom, uniform in [1 − zoom, 1 + zoom] (< 1)")
    occlusion_patches: int = key(0, kind="int", minimum=0, doc="number of square patches blanked (treated as masked)")
    occlusion_size: int = key(12, kind="int", minimum=1, unit="pixels", doc="side of each patch, input pixels")
    missing_panels: float = key(0.0, kind="float", minimum=0.0, maximum=1.0,
                                doc="probability that a shot loses one randomly chosen panel (multi-panel detectors)")
    missing_region: float = key(0.0, kind="float", minimum=0.0, maximum=1.0,
                                doc="probability that a shot loses a quarter, half or three quarters of the detector")
    fluence_scale: list[float] | None = key(None, kind="list", item="float", length=2, nullable=True,
                                            doc="[low, high]: expected photons × a log-uniform factor in this range, "
                                                "Poisson-resampled (after `photon_scale`); null: off")
    gaussian_noise: float = key(0.0, kind="float", unit="photons", minimum=0.0,
                                doc="standard deviation of Gaussian noise added to each pixel")

    def check(self, where: str, raw: Any) -> None:
        """Limits across keys: zoom < 1, shift < 0.5, 0 < low <= high for the fluence scale."""
        if self.zoom >= 1:
            raise ConfigError(f"{where}.zoom must be < 1, got {self.zoom}")
        if self.shift >= 0.5:
            raise ConfigError(f"{where}.shift must be < 0.5 (a fraction of the input size), got {self.shift}")
        if self.fluence_scale is not None:
            lo_hi = list(self.fluence_scale)
            if not 0 < lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"{where}.fluence_scale must be [low, high] with 0 < low <= high, got {lo_hi}")

    @property
    def geometric(self) -> bool:
        """True when rotation, flip, shift or zoom is active."""
        return self.enabled and (self.rotation > 0 or self.flip or self.shift > 0 or self.zoom > 0)


@dataclass
class ModelConfig:
    """The embedding network."""

    arch: str = key("specklenn", kind="choice", choices=("specklenn", "residual", "compact"),
                    doc="`specklenn` (two conv 5×5–BN–PReLU–maxpool blocks, FC 512, FC to the embedding; the paper's "
                        "network), `residual` (a small ResNet with global average pooling) or `compact` (four conv "
                        "layers and global average pooling, 60,836 + 65 × embedding_dim parameters: 64,086 with "
                        "`embedding_dim: 50`, the FPGA study's budget; for real-time streams, `spi stream`)")
    embedding_dim: int = key(128, kind="int", minimum=1, doc="size of the L2-normalised embedding")
    channels: list[int] = key([32, 64], kind="list", item="int", length=2, minimum=1,
                              doc="specklenn: conv channels of the two blocks")
    hidden: int = key(512, kind="int", minimum=1, doc="specklenn: width of the hidden fully connected layer")
    width: int = key(32, kind="int", minimum=1,
                     doc="residual: channels of the first stage (doubled at each later stage)")
    blocks: list[int] = key([1, 1, 1], kind="list", item="int", minimum=1, doc="residual: residual blocks per stage")

    def check(self, where: str, raw: Any) -> None:
        if not self.blocks:
            raise ConfigError(f"{where}.blocks must be positive integers, got {self.blocks}")


@dataclass
class LossConfig:
    """Triplet loss on squared L2 distance, with online mining."""

    margin: float = key(0.2, kind="float", minimum=0.0, exclusive=True,
                        doc="squared embedding distance (embeddings are unit vectors: distances lie in [0, 4])")
    miner: str = key("random_semihard", kind="choice", choices=("random_semihard", "batch_hard", "batch_all"),
                     doc="`random_semihard` (the paper's: random positive, random semi-hard negative, else a random "
                         "negative; one triplet per anchor), `batch_hard` (hardest positive and negative per anchor) "
                         "or `batch_all` (every valid triplet)")
    reduction: str | None = key(None, kind="choice", choices=("mean", "mean_nonzero"), nullable=True,
                                doc="`mean` over mined triplets or `mean_nonzero` over those with positive loss; null: "
                                    "`mean_nonzero` for batch_all, `mean` otherwise")


@dataclass
class SourceConfig:
    """One source of labelled shots: a file (``path``) or a live simulation (``simulate``)."""

    path: str | None = key(None, kind="str", nullable=True,
                           doc="a CXI/HDF5 file (simulated, with labels inside, or real with `labels`)")
    labels: str | None = key(None, kind="str", nullable=True,
                             doc="label file for `path` (CSV `index,label[,time]` or HDF5); null: labels in the file")
    simulate: str | None = key(None, kind="str", nullable=True,
                               doc="a simulation manifest (or `default`): shots simulated live, no file in between")
    weight: float = key(1.0, kind="float", minimum=0.0, exclusive=True,
                        doc="sampling weight of this source relative to the others (per class)")
    max_shots: int | None = key(None, kind="int", nullable=True, minimum=1,
                                doc="use at most this many labelled shots of the file (the first ones); null: all")
    binary: bool = key(False, kind="bool",
                       doc="relabel the file's shots single / not_single (every class but single becomes not_single), "
                           "e.g. a simulated 4-class file trained beside a real run labelled single vs rest (files)")

    def check(self, where: str, raw: Any) -> None:
        if (self.path is None) == (self.simulate is None):
            raise ConfigError(f"{where}: give exactly one of path (a file) or simulate (a manifest)")
        if self.simulate is not None and self.labels is not None:
            raise ConfigError(f"{where}: labels apply to files, not to simulate")
        if self.binary and self.simulate is not None:
            raise ConfigError(f"{where}.binary applies to files, not to simulate")

    def validate(self, prefix: str = "source") -> None:
        """Check a source made in code (ConfigError naming ``prefix``)."""
        build(SourceConfig, dataclasses.asdict(self), prefix)


@dataclass
class UnlabelledConfig:
    """A file of unlabelled frames (e.g. the real run itself) for the adaptation terms (:mod:`spinet.adapt`)."""

    path: str = key("", kind="str", doc="a CXI/HDF5 file (in photons; labels, if any, are ignored); required")
    indices: str | None = key(None, kind="str", nullable=True,
                              doc="a text or CSV file of shot indices to use (one per line, or the first column; a "
                                  "header is skipped); null: every shot of the file")
    max_shots: int | None = key(None, kind="int", nullable=True, minimum=1,
                                doc="use at most this many of them (the first ones); null: all")

    def check(self, where: str, raw: Any) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: give the file of unlabelled frames")


@dataclass
class DataConfig:
    """Where shots come from and how batches are drawn."""

    sources: list[SourceConfig] = key([], kind="section_list", cls=SourceConfig,
                                      doc="training sources (files and/or live simulation), mixed by their weights")
    validation: list[SourceConfig] = key([], kind="section_list", cls=SourceConfig,
                                         doc="validation files; empty: `val_fraction` of each training file is held "
                                             "out")
    val_fraction: float = key(0.15, kind="float", minimum=0.0,
                              doc="fraction of each training file's labelled shots held out for validation (per "
                                  "class; < 1)")
    label: str = key("hit_type", kind="choice", choices=("hit_type", "structure_hit_type"),
                     doc="`hit_type` or `structure_hit_type` (class `<structure>/<hit type>`; `no_hit` alone)")
    classes: list[str] | None = key(None, kind="list", item="str", nullable=True,
                                    doc="class names in order (label files may use these names besides the hit types "
                                        "and `not_single`); null: every class found (known hit types first, then the "
                                        "rest sorted, `not_single` last)")
    m_per_class: int = key(5, kind="int", minimum=2,
                           doc="shots of each class in a batch (batch = m_per_class × classes per batch; the paper's "
                               "batch 20 = 5 × 4); at least 2 (triplets need a positive)")
    classes_per_batch: int | None = key(None, kind="int", nullable=True, minimum=2,
                                        doc="classes in each batch (at least 2: triplets need a negative); null: all")
    batches_per_epoch: int | None = key(None, kind="int", nullable=True, minimum=1,
                                        doc="null: one pass over the training shots' worth of batches")
    num_workers: int = key(0, kind="int", minimum=0,
                           doc="DataLoader worker processes (each opens its own HDF5 handle)")
    support_k: int = key(5, kind="int", minimum=1,
                         doc="supports per class (from the training set) for the validation accuracy")
    max_val_shots: int = key(1000, kind="int", minimum=1,
                             doc="validation shots evaluated each epoch (a fixed random subset)")
    stream_shots_per_epoch: int = key(2000, kind="int", minimum=1,
                                      doc="live simulation alone: epochs of this many shots' worth of batches (shots / "
                                          "batch size)")
    unlabelled: list[UnlabelledConfig] = key([], kind="section_list", cls=UnlabelledConfig,
                                             doc="files of unlabelled frames of the run to adapt to, for the `adapt` "
                                                 "terms; empty: none")

    def check(self, where: str, raw: Any) -> None:
        self.sources, self.validation, self.unlabelled = (list(self.sources), list(self.validation),
                                                          list(self.unlabelled))  # lists, as code appends to them
        if self.val_fraction >= 1:
            raise ConfigError(f"{where}.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{where}.classes has duplicates: {self.classes}")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    out: str = key("runs/spinet", kind="str", doc="run folder (checkpoints, logs, config)")
    epochs: int = key(30, kind="int", minimum=1, doc="maximum number of epochs")
    lr: float = key(1e-3, kind="float", minimum=0.0, exclusive=True, doc="Adam learning rate (the paper's)")
    weight_decay: float = key(0.0, kind="float", minimum=0.0, doc="Adam weight decay")
    seed: int = key(0, kind="int", doc="seeds initialisation, sampling, augmentation and mining")
    device: str = key("auto", kind="str", doc="`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`")
    patience: int = key(5, kind="int", minimum=0,
                        doc="stop after this many epochs without a better validation accuracy; 0: never")
    rule: str = key("mean", kind="choice", choices=RULES,
                    doc="few-shot rule of the validation accuracy: `mean` (mean distance, the paper's), `prototype`, "
                        "`nearest` or `knn` (see `spinet.fewshot`)")
    deterministic: bool = key(True, kind="bool",
                              doc="deterministic torch algorithms (identical results for identical seeds)")
    tensorboard: bool = key(True, kind="bool", doc="TensorBoard event files in `tensorboard/`, beside the CSV log")
    progress: bool = key(True, kind="bool", doc="progress bar")
    export: list[str] = key([], kind="list", item="str", choices=("torchscript", "onnx"),
                            doc="formats written beside `best.pt` at the end: `torchscript`, `onnx`")
    init: str | None = key(None, kind="str", nullable=True,
                           doc="a spinet checkpoint whose network weights start the run (fine-tuning); its `model` "
                               "section and input size must be this run's; null: random")
    keep_every: int = key(0, kind="int", minimum=0,
                          doc="also keep the network (no optimizer state) of every N-th epoch and of the last in "
                              "`epochs/epoch-NNN.pt`, for choosing a checkpoint with labelled real shots (`spi "
                              "classify --select`); 0: none")

    def check(self, where: str, raw: Any) -> None:
        _device(self.device, f"{where}.device")


@dataclass
class AdaptConfig:
    """Training terms on unlabelled frames of the run to adapt to (``data.unlabelled``; :mod:`spinet.adapt`)."""

    consistency: float = key(0.0, kind="float", minimum=0.0,
                             doc="weight of the consistency term: the mean squared embedding distance between the two "
                                 "views of a frame (squared L2, in [0, 4]); 0: off")
    align: float = key(0.0, kind="float", minimum=0.0,
                       doc="weight of the alignment term (domain confusion without an adversary): the squared maximum "
                           "mean discrepancy between the labelled batch's embeddings and the unlabelled views', "
                           "Gaussian kernels exp(−d / b) on squared distances d, averaged over `bandwidths`; 0: off")
    batch: int = key(20, kind="int", minimum=2, doc="unlabelled frames per step (≥ 2)")
    bandwidths: list[float] = key([0.1, 0.5, 2.0], kind="list", item="float", minimum=0.0, exclusive=True,
                                  doc="squared-distance scales b of the alignment kernels")

    def check(self, where: str, raw: Any) -> None:
        if not self.bandwidths:
            raise ConfigError(f"{where}.bandwidths must be positive numbers, got {self.bandwidths}")

    @property
    def active(self) -> bool:
        """True when some term has a positive weight."""
        return self.consistency > 0 or self.align > 0


SECTIONS: dict[str, type] = {"preprocess": PreprocessConfig, "augment": AugmentConfig, "model": ModelConfig,
                             "loss": LossConfig, "data": DataConfig, "train": TrainConfig, "adapt": AdaptConfig}
"""The sections of a config, in the order of ``docs/spinet.md``."""


@dataclass
class Config:
    """A whole spinet run."""

    preprocess: PreprocessConfig = key(kind="section", cls=PreprocessConfig, doc="preprocessing")
    augment: AugmentConfig = key(kind="section", cls=AugmentConfig, doc="augmentation")
    model: ModelConfig = key(kind="section", cls=ModelConfig, doc="the network")
    loss: LossConfig = key(kind="section", cls=LossConfig, doc="the triplet loss")
    data: DataConfig = key(kind="section", cls=DataConfig, doc="data and batches")
    train: TrainConfig = key(kind="section", cls=TrainConfig, doc="the training loop")
    adapt: AdaptConfig = key(kind="section", cls=AdaptConfig, doc="adaptation terms")

    def check(self, where: str, raw: Any) -> None:
        if self.adapt.active and not self.data.unlabelled:
            raise ConfigError("adapt.consistency / adapt.align need unlabelled frames: give data.unlabelled "
                              "(spi train --unlabelled FILE)")

    def validate(self) -> Config:
        """Check every value (after changes made in code); returns self. Raises ConfigError naming the key."""
        build(Config, self.to_dict(), "")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        """Build from a nested dict; unknown keys and bad values raise ConfigError naming the key."""
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping, got {type(d).__name__}")
        return build(cls, d or {}, "")

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"train.epochs": 3, "augment.rotation": 0}``."""
        d = self.to_dict()
        for name, value in overrides.items():
            parts = name.split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"unknown config key {name!r}")
                node = node[p]
            if not isinstance(node, dict) or parts[-1] not in node:
                raise ConfigError(f"unknown config key {name!r}")
            node[parts[-1]] = value
        return Config.from_dict(d)


def reference_markdown(section: str) -> str:
    """The key table of one config section for ``docs/spinet.md`` (kept equal to the declarations by a test)."""
    return reference_table(SECTIONS[section])


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
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


if __name__ == "__main__":  # python -m spinet.config: the key tables of docs/spinet.md
    for _name in SECTIONS:
        print(f"### `{_name}`\n\n{reference_markdown(_name)}")
