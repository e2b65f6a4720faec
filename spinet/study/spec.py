"""The study, validated: datasets, training sources, tests, models, human baselines and how runs are made.

These dataclasses are what :mod:`spinet.study.parse` resolves a study file into (files found, parts and names
linked) and what the runner reads; the keys as written, their defaults and meanings, are declared in
:mod:`spinet.study.sections` (and tabled in ``docs/evaluation.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spisim.errors import ConfigError
from spisim.schema import key

from ..config import AugmentConfig, PreprocessConfig
from ..records import Perturbation

SWEEP_KEYS = ("fluence_scale", "missing_fraction")
"""Robustness sweeps of a test set: incident fluence × scale; fraction of the detector area lost."""

PARTS = ("all", "train", "test")
"""Parts of a dataset: all its labelled shots, or the train / test side of its split."""

ProgressFn = Callable[[str, int], None]
"""Progress callback: (what is being done, steps finished since the last call)."""



@dataclass(frozen=True)
class PartRef:
    """A part of a dataset: ``NAME`` (all its labelled shots), ``NAME:train`` or ``NAME:test``."""

    dataset: str
    part: str = "all"

    def __str__(self) -> str:
        return self.dataset if self.part == "all" else f"{self.dataset}:{self.part}"


@dataclass
class DatasetSpec:
    """``datasets.NAME``: labelled shots from a file or from a simulation.

    Attributes:
        name: the key.
        path: CXI/HDF5 file (absolute after loading), or None.
        labels: label file for ``path`` (CSV ``index,label``, the log of ``spi label`` or HDF5), or None.
        manifest: the simulation manifest text (YAML), or None.
        manifest_source: where the manifest came from (file path or ``study:datasets.NAME``).
        manifest_dir: folder for the manifest's relative paths.
        overrides: manifest keys set over it (``shots``, ``seed`` and ``overrides`` of the study).
        test_fraction: fraction of each class held out as ``NAME:test`` (0: no split).
        split_seed: seed of that split.
        max_shots: use only the first labelled shots.
        rename: label names of the file → class names of the study (None drops the label), e.g.
            ``{multiple: multi, background: no_hit, unsure: null}``.
        binary: relabel single / not_single: ``single`` stays, every other class becomes ``not_single``
            (after ``rename``), e.g. a simulated 4-class dataset trained beside a real run labelled so.
    """

    name: str
    path: Path | None = None
    labels: Path | None = None
    manifest: str | None = None
    manifest_source: str = ""
    manifest_dir: Path | None = None
    overrides: dict = field(default_factory=dict)
    test_fraction: float = 0.0
    split_seed: int = 0
    max_shots: int | None = None
    rename: dict[str, str | None] = field(default_factory=dict)
    binary: bool = False

    @property
    def simulated(self) -> bool:
        return self.manifest is not None


@dataclass(frozen=True)
class Component:
    """One part of a training source: ``per_class`` None (all shots), an int, or ``"k"`` (each k-shot value)."""

    part: PartRef
    per_class: int | str | None = None
    weight: float = 1.0


@dataclass
class SourceSpec:
    """``sources.NAME``: the training data of a model, a weighted list of dataset parts."""

    name: str
    components: list[Component]

    @property
    def k_dependent(self) -> bool:
        """True when a component takes k shots per class (then a model is trained for every k)."""
        return any(c.per_class == "k" for c in self.components)


@dataclass
class TestSpec:
    """``tests.NAME``: the shots scored, where few-shot supports come from, and an optional sweep."""

    name: str
    data: PartRef
    support: PartRef | None = None
    sweep_key: str | None = None
    sweep_values: list[float] = field(default_factory=list)




@dataclass(frozen=True)
class TestVariant:
    """A test set as scored: the spec and one perturbation of its sweep (or none)."""

    spec: TestSpec
    perturb: Perturbation

    @property
    def name(self) -> str:
        return self.spec.name if self.perturb.key is None else f"{self.spec.name} [{self.perturb}]"


@dataclass
class ModelSpec:
    """``models[i]``: a named model.

    Attributes:
        name: shown in the report (unique).
        kind: ``siamese``, ``cnn``, ``resnet`` or ``classical``.
        config: kind-specific settings (validated): siamese: spinet config sections ``model``, ``loss``,
            ``train`` and ``data`` (batch settings); cnn/resnet: :class:`spinet.baselines.SupervisedConfig`
            keys; classical: ``method``, ``n_rings``, ``thresholds``.
        rule: siamese: ``mean`` (mean distance to each class's supports, the paper's), ``prototype``,
            ``nearest`` or ``knn`` (see :mod:`spinet.fewshot`).
        augment: overrides of the study's ``augment`` for this model (siamese, cnn, resnet).
        sources: names of the training sources this model is trained on; None: all.
        embedding: siamese: name of an earlier siamese model whose trained networks this one scores with its
            own rule (nothing is trained; sources, config and augmentation are that model's); None: its own.
        min_ratio: siamese: the ratio test (≥ 1): a shot is answered "unknown" unless its second-nearest class
            is at least this many times as far (squared distance) as the nearest; ``auto``: chosen from the
            supports (:func:`spinet.selection.ratio_from_supports`); None: no test.
        adapt_bn: siamese: batch-norm statistics re-estimated on the frames of the test's dataset (all its
            shots, labels unused) before scoring (AdaBN, :func:`spinet.adapt.adapt_batchnorm`).
        unlabelled: siamese: a dataset part whose frames (labels unused) feed the ``adapt`` loss terms of
            training (``config.adapt``); None: none.
        init: siamese: the name of an earlier siamese model whose network (same seed, trained on its first
            training source) starts this model's training (fine-tuning); None: random initialisation.
        select: siamese: ``loo``: the checkpoint (the kept epochs and the best) and, with ``rule: auto``, the
            rule are chosen per seed, test and k by leave-one-out over the supports
            (:mod:`spinet.selection`), and the estimated accuracy is recorded; None: the best checkpoint.
    """

    name: str
    kind: str
    config: dict = field(default_factory=dict)
    rule: str = "mean"
    augment: dict = field(default_factory=dict)
    sources: list[str] | None = None
    embedding: str | None = None
    min_ratio: float | str | None = None
    adapt_bn: bool = False
    unlabelled: PartRef | None = None
    init: str | None = None
    select: str | None = None



@dataclass
class HumanSpec:
    """``human[i]``: the scores of a person who played ``spi label --game``, shown beside the models.

    Attributes:
        name: shown in the report's model column (unique among models and human baselines).
        path: the ``LABELS.results.json`` file written by the game (absolute).
        test: name of the study test set the person's shots stand for.
        class_names: the C class names of the game, in code order.
        confusion: (C, C) int counts; ``confusion[t, p]``: shots of true class t labelled p.
    """

    name: str
    path: Path
    test: str
    class_names: list[str]
    confusion: np.ndarray

    @property
    def n_shots(self) -> int:
        return int(self.confusion.sum())


@dataclass
class EvaluationSpec:
    """``evaluation``: how runs are made and scored (declared and validated with :mod:`spisim.schema`)."""

    device: str = key("auto", kind="str", doc="`auto`, `cpu`, `cuda` or `cuda:N` (training, inference and simulation)")
    workers: int = key(1, kind="int", minimum=1, doc="processes simulating datasets")
    batch_size: int = key(256, kind="int", minimum=1, unit="shots", doc="shots per inference batch")
    throughput_shots: int = key(256, kind="int", minimum=0, unit="shots",
                                doc="shots timed per model for the throughput table (0: off)")
    max_test_shots: int | None = key(None, kind="int", nullable=True, minimum=1, unit="shots",
                                     doc="score at most this many shots of a test set (a fixed random subset); null: "
                                         "all")
    val_fraction: float = key(0.15, kind="float", minimum=0.0,
                              doc="fraction of each bulk training part held out for early stopping (< 1)")
    num_workers: int = key(0, kind="int", minimum=0,
                           doc="DataLoader processes reading and augmenting training shots (CNN baselines, and "
                               "Siamese models unless their config sets `data.num_workers`)")
    plot_k: int | None = key(None, kind="int", nullable=True, minimum=1,
                             doc="k of the confusion matrices, precision–recall curves and embedding plots (one of "
                                 "`k_shots`); null: the largest k ≤ 20 (else the smallest)")
    projection: str = key("pca", kind="choice", choices=("pca", "tsne"), doc="embedding projection")

    def check(self, where: str, raw: Any) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{where}.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.val_fraction >= 1:
            raise ConfigError(f"{where}.val_fraction must lie in [0, 1), got {self.val_fraction}")


@dataclass
class Study:
    """A validated study (see the module docstring and ``docs/evaluation.md``)."""

    name: str
    description: str
    source: str
    base_dir: Path
    parameters: dict[str, Any]
    seeds: list[int]
    k_shots: list[int]
    label: str
    classes: list[str] | None
    preprocess: PreprocessConfig
    augment: AugmentConfig
    datasets: dict[str, DatasetSpec]
    sources: dict[str, SourceSpec]
    tests: dict[str, TestSpec]
    models: list[ModelSpec]
    evaluation: EvaluationSpec
    raw: dict
    human: list[HumanSpec] = field(default_factory=list)

    @property
    def plot_k(self) -> int:
        """The k shown in single-k plots."""
        if self.evaluation.plot_k is not None:
            return self.evaluation.plot_k
        small = [k for k in self.k_shots if k <= 20]
        return max(small) if small else min(self.k_shots)

    def plain_variants(self) -> list[TestVariant]:
        """One unperturbed variant per test: the test itself, or the neutral point of its sweep (fluence × 1,
        nothing missing) where the sweep has one. What confusion matrices and per-class tables show."""
        out = []
        for t in self.tests.values():
            neutral = [v for v in self.variants() if v.spec is t and v.perturb.neutral]
            out += neutral[:1]
        return out

    def variants(self) -> list[TestVariant]:
        """Every test set as scored, sweeps expanded."""
        out = []
        for t in self.tests.values():
            if t.sweep_key is None:
                out.append(TestVariant(t, Perturbation()))
            else:
                out += [TestVariant(t, Perturbation(t.sweep_key, v)) for v in t.sweep_values]
        return out


