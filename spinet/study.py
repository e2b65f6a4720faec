"""Evaluation studies: which models, trained on which data, tested on which shots, with how many supports.

A study is a YAML file (schema in ``docs/evaluation.md``; :func:`load_study` validates it and every
mistake raises :class:`spisim.errors.ConfigError` naming the key). :class:`StudyRunner` runs it:

1. **datasets** are simulated into ``REPORT_DIR/cache/data`` (from a manifest file or an inline manifest,
   reused when already there) or read from CXI/HDF5 files with labels inside or in a label file; each
   can be split once (stratified, fixed seed) into ``NAME:train`` and ``NAME:test``;
2. every **model** is trained on every **training source** (a weighted list of dataset parts, where a
   part can be cut to ``per_class: k`` shots of each class — the k-shot values of the study) for each
   **seed**, and cached in ``REPORT_DIR/cache/models``;
3. every trained model is scored on every **test set** (with a few-shot support set of k shots per
   class drawn from the test set's ``support`` part for the Siamese models), including the variants of
   a robustness ``sweep`` (fluence scale, missing detector area). Scores are in the label space of the test
   labels (single / not_single for a test labelled so, :mod:`spinet.labelspace`); support shots and frames
   without a finite pixel are never scored; a k beyond what a pool's smallest class holds is drawn as that
   class allows, recorded as the k really drawn (``RunRecord.k_asked`` keeps the asked values) and noted;
4. human baselines (``human``: the results files of ``spi label --game``) become records of kind ``human``;
5. the records go to :mod:`spinet.report`.

Seeds vary model initialisation, batches, augmentation and the choice of the k shots; dataset splits and
simulated datasets are the same for every seed, so the spread measures the training and support choice.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
import os
import pickle
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from spisim.cxi import NOT_SINGLE, CXIReader
from spisim.errors import ConfigError, InputFileError

from .config import AugmentConfig, Config, PreprocessConfig
from .data import file_labels, label_names_for, order_classes, pick_per_class, stratified_split
from .fewshot import RULES
from .labelspace import BINARY_CLASSES, LabelSpace, class_counts_text, is_binary_names
from .metrics import ClassificationMetrics, classification_metrics, confusion_by_group, is_single_class

MODEL_KINDS = ("siamese", "cnn", "resnet", "classical", "photons")
"""Model kinds of a study: the Siamese few-shot classifier and the baselines (``photons``: a photon-count
threshold or band fitted on the supports, :class:`spinet.baselines.PhotonCountRule`)."""

SUPPORT_SOURCE = "supports"
"""Training source shown for a model fitted on the supports alone (the photon-count baseline)."""

SELECT_METHODS = ("loo",)
"""``models[].select``: how a Siamese model chooses its checkpoint (and rule) with the supports."""

HUMAN_KIND = "human"
"""Kind of the records of a human baseline (``human`` key of a study)."""

HUMAN_SOURCE = "—"
"""Training source shown for a human baseline."""

SWEEP_KEYS = ("fluence_scale", "missing_fraction")
"""Robustness sweeps of a test set: incident fluence × scale; fraction of the detector area lost."""

PARTS = ("all", "train", "test")

ProgressFn = Callable[[str, int], None]
"""Progress callback: (what is being done, steps finished since the last call)."""


# ============================================================================================ schema


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


NEUTRAL_SWEEP_VALUES = {"fluence_scale": 1.0, "missing_fraction": 0.0}
"""Sweep values that leave the test data as they are."""


@dataclass(frozen=True)
class Perturbation:
    """A change applied to test (and support) shots: ``fluence_scale`` or ``missing_fraction``, or none."""

    key: str | None = None
    value: float | None = None

    @property
    def neutral(self) -> bool:
        """True when the test shots are left as they are (no change, fluence × 1, nothing missing)."""
        return self.key is None or float(self.value) == NEUTRAL_SWEEP_VALUES.get(self.key, float("nan"))

    def __str__(self) -> str:
        if self.key is None:
            return ""
        if self.key == "fluence_scale":
            return f"fluence ×{self.value:g}"
        return f"missing {self.value:g}"


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

    @property
    def fewshot(self) -> bool:
        """True for the models that use supports (Siamese, and the photon-count baseline fitted on them)."""
        return self.kind in ("siamese", "photons")

    @property
    def trains(self) -> bool:
        """True when the model trains networks of its own (not ``embedding``, not the photon baseline)."""
        return self.embedding is None and self.kind != "photons"


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
    """``evaluation``: how runs are made and scored.

    Attributes:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (training, inference and simulation).
        workers: processes simulating datasets.
        batch_size: shots per inference batch.
        throughput_shots: shots timed per model for the throughput table (0: off).
        max_test_shots: score at most this many shots of a test set (a fixed random subset); null: all.
        val_fraction: fraction of each bulk training part held out for early stopping.
        num_workers: DataLoader processes reading and augmenting training shots (CNN baselines, and Siamese
            models unless their config sets ``data.num_workers``).
        plot_k: k of the confusion matrices, precision–recall curves and embedding plots; null: the largest
            k ≤ 20 (else the smallest).
        projection: embedding projection: ``pca`` or ``tsne``.
    """

    device: str = "auto"
    workers: int = 1
    batch_size: int = 256
    throughput_shots: int = 256
    max_test_shots: int | None = None
    val_fraction: float = 0.15
    num_workers: int = 0
    plot_k: int | None = None
    projection: str = "pca"


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


# ---------------------------------------------------------------------------------- parsing helpers

_TOP_KEYS = ("name", "description", "parameters", "seeds", "k_shots", "label", "classes", "preprocess", "augment",
             "datasets", "sources", "tests", "models", "evaluation", "human")
_DATASET_KEYS = ("path", "labels", "simulate", "shots", "seed", "overrides", "test_fraction", "split_seed",
                 "max_shots", "rename", "binary")
_COMPONENT_KEYS = ("data", "per_class", "weight")
_TEST_KEYS = ("data", "support", "sweep")
_MODEL_KEYS = ("name", "kind", "config", "rule", "augment", "sources", "embedding", "min_ratio", "adapt_bn",
               "unlabelled", "init", "select")
_HUMAN_KEYS = ("name", "results", "test")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(d: Any, allowed: Sequence[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{_did_you_mean(str(k), allowed)}; "
                              f"known: {', '.join(allowed)}")
    return d


def _int(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value!r}")
    return int(value)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def _name(value: Any, where: str) -> str:
    s = _str(value, where)
    if not _NAME.match(s):
        raise ConfigError(f"{where}: name {s!r} may hold only letters, digits and _ . + -")
    return s


def _resolve(name: str, base_dir: Path, where: str) -> Path:
    """An existing file: absolute, or relative to the study's folder, then to the current directory."""
    p = Path(name).expanduser()
    tried = [p] if p.is_absolute() else [base_dir / p, Path.cwd() / p]
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    raise InputFileError(f"{where}: no such file {name!r} (looked in {', '.join(str(t.parent) for t in tried)})")


def _substitute(obj: Any, params: dict[str, Any], used: set[str], where: str) -> Any:
    """Replace ``${name}`` in strings; a string that is exactly ``${name}`` takes the parameter's value as is."""
    if isinstance(obj, dict):
        return {k: _substitute(v, params, used, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, params, used, f"{where}[{i}]") for i, v in enumerate(obj)]
    if not isinstance(obj, str) or "${" not in obj:
        return obj

    def value(name: str) -> Any:
        if name not in params:
            raise ConfigError(f"{where}: unknown parameter ${{{name}}}; declare it under parameters")
        if params[name] is None:
            raise ConfigError(f"parameter {name} is not set (used by {where}): pass --param {name}=VALUE")
        used.add(name)
        return params[name]

    whole = _PARAM.fullmatch(obj.strip())
    if whole:
        return value(whole.group(1))
    return _PARAM.sub(lambda m: str(value(m.group(1))), obj)


def _parse_part(value: Any, datasets: dict[str, DatasetSpec], where: str) -> PartRef:
    s = _str(value, where)
    name, _, part = s.partition(":")
    part = part or "all"
    if name not in datasets:
        raise ConfigError(f"{where}: no dataset {name!r}{_did_you_mean(name, list(datasets))}; "
                          f"datasets: {', '.join(datasets)}")
    if part not in PARTS:
        raise ConfigError(f"{where}: part {part!r} of {name} must be train, test or nothing (all shots)")
    if part != "all" and datasets[name].test_fraction == 0:
        raise ConfigError(f"{where}: {s} needs datasets.{name}.test_fraction > 0 (the dataset is not split)")
    return PartRef(name, part)


def _parse_dataset(name: str, d: Any, base_dir: Path, where: str) -> DatasetSpec:
    _check_keys(d, _DATASET_KEYS, where)
    has_path, has_sim = d.get("path") is not None, d.get("simulate") is not None
    if has_path == has_sim:
        raise ConfigError(f"{where}: give exactly one of path (a CXI/HDF5 file) and simulate (a manifest)")
    spec = DatasetSpec(name)
    if has_path:
        spec.path = _resolve(_str(d["path"], f"{where}.path"), base_dir, f"{where}.path")
        if d.get("labels") is not None:
            spec.labels = _resolve(_str(d["labels"], f"{where}.labels"), base_dir, f"{where}.labels")
        for k in ("shots", "seed", "overrides"):
            if d.get(k) is not None:
                raise ConfigError(f"{where}.{k} applies to simulated datasets only")
    else:
        if d.get("labels") is not None:
            raise ConfigError(f"{where}.labels applies to files; a simulated dataset has its labels inside")
        sim = d["simulate"]
        if isinstance(sim, dict):
            spec.manifest = yaml.safe_dump(sim, sort_keys=False)
            spec.manifest_source = f"study:{where}.simulate"
            spec.manifest_dir = base_dir
        else:
            path = _resolve(_str(sim, f"{where}.simulate"), base_dir, f"{where}.simulate")
            spec.manifest = path.read_text(encoding="utf-8")
            spec.manifest_source = str(path)
            spec.manifest_dir = path.parent
        over = d.get("overrides") or {}
        if not isinstance(over, dict):
            raise ConfigError(f"{where}.overrides must be a mapping of manifest keys")
        over = dict(over)
        if d.get("shots") is not None:
            over["shots"] = _int(d["shots"], f"{where}.shots", 1)
        if d.get("seed") is not None:
            over["seed"] = _int(d["seed"], f"{where}.seed", 0)
        spec.overrides = over
        from spisim.manifest import parse_manifest

        parse_manifest(spec.manifest, source=spec.manifest_source, base_dir=spec.manifest_dir, overrides=over)
    if d.get("test_fraction") is not None:
        spec.test_fraction = _float(d["test_fraction"], f"{where}.test_fraction")
        if not 0 <= spec.test_fraction < 1:
            raise ConfigError(f"{where}.test_fraction must lie in [0, 1), got {spec.test_fraction}")
    if d.get("split_seed") is not None:
        spec.split_seed = _int(d["split_seed"], f"{where}.split_seed", 0)
    if d.get("max_shots") is not None:
        spec.max_shots = _int(d["max_shots"], f"{where}.max_shots", 1)
    rename = d.get("rename") or {}
    if not isinstance(rename, dict):
        raise ConfigError(f"{where}.rename must map label names to class names (null drops a label)")
    spec.rename = {str(k): (None if v is None else _str(v, f"{where}.rename.{k}")) for k, v in rename.items()}
    if d.get("binary") is not None:
        if not isinstance(d["binary"], bool):
            raise ConfigError(f"{where}.binary must be true or false, got {d['binary']!r}")
        spec.binary = d["binary"]
    return spec


def _parse_component(c: Any, datasets: dict[str, DatasetSpec], where: str) -> Component:
    if isinstance(c, str):
        return Component(_parse_part(c, datasets, where))
    _check_keys(c, _COMPONENT_KEYS, where)
    if "data" not in c:
        raise ConfigError(f"{where}.data: missing (a dataset part such as sim or real:train)")
    per = c.get("per_class")
    if per is not None and per != "k":
        per = _int(per, f"{where}.per_class", 1)
    weight = _float(c.get("weight", 1.0), f"{where}.weight")
    if not weight > 0:
        raise ConfigError(f"{where}.weight must be > 0, got {weight}")
    return Component(_parse_part(c["data"], datasets, where + ".data"), per, weight)


def _parse_test(name: str, d: Any, datasets: dict[str, DatasetSpec], where: str) -> TestSpec:
    if isinstance(d, str):
        return TestSpec(name, _parse_part(d, datasets, where))
    _check_keys(d, _TEST_KEYS, where)
    if "data" not in d:
        raise ConfigError(f"{where}.data: missing (the dataset part scored, e.g. heldout:test)")
    t = TestSpec(name, _parse_part(d["data"], datasets, where + ".data"))
    if d.get("support") is not None:
        t.support = _parse_part(d["support"], datasets, where + ".support")
        if t.support == t.data or (t.support.dataset == t.data.dataset and "all" in (t.support.part, t.data.part)):
            raise ConfigError(f"{where}: support and data overlap ({t.support} and {t.data}): "
                              "split the dataset (test_fraction) and use NAME:train and NAME:test")
    sweep = d.get("sweep")
    if sweep is not None:
        _check_keys(sweep, SWEEP_KEYS, where + ".sweep")
        if len(sweep) != 1:
            raise ConfigError(f"{where}.sweep: give one of {', '.join(SWEEP_KEYS)} with a list of values")
        (key, values), = sweep.items()
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.sweep.{key} must be a non-empty list of values")
        vals = [_float(v, f"{where}.sweep.{key}[{i}]") for i, v in enumerate(values)]
        if key == "fluence_scale" and min(vals) <= 0:
            raise ConfigError(f"{where}.sweep.fluence_scale values must be > 0")
        if key == "missing_fraction" and not all(0 <= v < 1 for v in vals):
            raise ConfigError(f"{where}.sweep.missing_fraction values must lie in [0, 1)")
        t.sweep_key, t.sweep_values = key, vals
    return t


def _parse_model(d: Any, preprocess: PreprocessConfig, where: str,
                 datasets: dict[str, DatasetSpec] | None = None) -> ModelSpec:
    _check_keys(d, _MODEL_KEYS, where)
    kind = _str(d.get("kind"), f"{where}.kind")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}"
                          f"{_did_you_mean(kind, MODEL_KINDS)}")
    m = ModelSpec(_name(d.get("name", kind), f"{where}.name"), kind)
    cfg = d.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}.config must be a mapping")
    m.config = dict(cfg)
    m.augment = dict(d.get("augment") or {})
    if m.augment and kind == "classical":
        raise ConfigError(f"{where}.augment: the classical baseline is trained without augmentation")
    siamese_only = ("embedding", "adapt_bn", "unlabelled", "init", "select")
    for key in siamese_only:
        if d.get(key) not in (None, False) and kind != "siamese":
            raise ConfigError(f"{where}.{key} applies to siamese models only")
    if d.get("embedding") is not None:
        for key in ("config", "augment", "sources", "unlabelled", "init"):
            if d.get(key):
                raise ConfigError(f"{where}.{key}: a model with embedding takes the {key} of that model")
        m.embedding = _name(d["embedding"], f"{where}.embedding")
    if kind == "siamese":
        if d.get("select") is not None:
            m.select = _str(d["select"], f"{where}.select")
            if m.select not in SELECT_METHODS:
                raise ConfigError(f"{where}.select must be one of {', '.join(SELECT_METHODS)}, got {m.select!r}")
        m.rule = _str(d.get("rule", "mean"), f"{where}.rule")
        if m.rule not in RULES and not (m.rule == "auto" and m.select is not None):
            raise ConfigError(f"{where}.rule must be one of {', '.join(RULES)} (or auto with select: loo), "
                              f"got {m.rule!r}")
        if d.get("min_ratio") is not None:
            if d["min_ratio"] == "auto":
                m.min_ratio = "auto"
            else:
                m.min_ratio = _float(d["min_ratio"], f"{where}.min_ratio")
                if not m.min_ratio >= 1.0:
                    raise ConfigError(f"{where}.min_ratio must be >= 1 (1: no ratio test) or auto, got "
                                      f"{m.min_ratio:g}")
        if d.get("adapt_bn") is not None:
            if not isinstance(d["adapt_bn"], bool):
                raise ConfigError(f"{where}.adapt_bn must be true or false, got {d['adapt_bn']!r}")
            m.adapt_bn = d["adapt_bn"]
        if d.get("unlabelled") is not None:
            m.unlabelled = _parse_part(d["unlabelled"], datasets or {}, f"{where}.unlabelled")
        if d.get("init") is not None:
            m.init = _name(d["init"], f"{where}.init")
        _check_keys(cfg, ("model", "loss", "train", "data", "adapt"), f"{where}.config")
        if (cfg.get("adapt") or {}) and any((cfg.get("adapt") or {}).get(k) for k in ("consistency", "align")) \
                and m.unlabelled is None:
            raise ConfigError(f"{where}.config.adapt: the adaptation terms need unlabelled: PART (the run's frames)")
        for key in ("sources", "validation", "classes", "label", "val_fraction", "unlabelled"):
            if key in (cfg.get("data") or {}):
                raise ConfigError(f"{where}.config.data.{key} is set by the study (sources, tests, classes, "
                                  "unlabelled)")
        for key in ("out", "seed", "device", "init"):
            if key in (cfg.get("train") or {}):
                raise ConfigError(f"{where}.config.train.{key} is set by the study")
        try:
            probe = {**cfg, "preprocess": preprocess.__dict__}
            if m.unlabelled is not None:
                probe["data"] = {**(cfg.get("data") or {}), "unlabelled": [{"path": "<unlabelled>"}]}
            Config.from_dict(probe)
        except ConfigError as exc:
            raise ConfigError(f"{where}.config: {exc}") from None
    else:
        for key in ("rule", "min_ratio"):
            if key in d:
                raise ConfigError(f"{where}.{key} applies to siamese models only")
        if kind == "photons":
            _check_keys(cfg, ("rule",), f"{where}.config")
            from .baselines import PhotonCountRule

            PhotonCountRule(cfg.get("rule", "band"))
            if m.augment:
                raise ConfigError(f"{where}.augment: the photon-count baseline is fitted without augmentation")
        elif kind in ("cnn", "resnet"):
            from .baselines import SupervisedConfig

            SupervisedConfig.from_dict(cfg, f"{where}.config")
        else:
            _check_keys(cfg, ("method", "n_rings", "thresholds"), f"{where}.config")
            from .baselines import ClassicalClassifier

            ClassicalClassifier(**_classical_kwargs(cfg, f"{where}.config"))
    if m.augment:
        _augment_config({}, m.augment, f"{where}.augment")
    return m


def _classical_kwargs(cfg: dict, where: str) -> dict:
    out: dict[str, Any] = {"method": cfg.get("method", "logistic")}
    if "n_rings" in cfg:
        out["n_rings"] = _int(cfg["n_rings"], f"{where}.n_rings", 1)
    if "thresholds" in cfg:
        th = cfg["thresholds"]
        if not isinstance(th, list) or not th:
            raise ConfigError(f"{where}.thresholds must be a non-empty list of photon counts")
        out["thresholds"] = [_float(t, f"{where}.thresholds[{i}]") for i, t in enumerate(th)]
    return out


def _augment_config(base: dict, over: dict, where: str) -> AugmentConfig:
    try:
        return Config.from_dict({"augment": {**base, **over}}).augment
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _parse_human(d: Any, base_dir: Path, tests: dict[str, TestSpec], where: str) -> HumanSpec:
    """One ``human`` entry: check the keys, find and read the game's results file (ConfigError for any fault)."""
    _check_keys(d, _HUMAN_KEYS, where)
    for key in _HUMAN_KEYS:
        if d.get(key) is None:
            raise ConfigError(f"{where}.{key}: missing (give name, results: LABELS.results.json and test: TEST)")
    name = _name(d["name"], f"{where}.name")
    test = _str(d["test"], f"{where}.test")
    if test not in tests:
        raise ConfigError(f"{where}.test: no test set {test!r}{_did_you_mean(test, list(tests))}; "
                          f"tests: {', '.join(tests)}")
    given = Path(_str(d["results"], f"{where}.results")).expanduser()
    path = given if given.is_absolute() else base_dir / given
    if not path.is_file():
        raise ConfigError(f"{where}.results: no such file {str(given)!r} (looked in {path.parent})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}.results: {path} is not valid JSON ({exc})") from None
    names = doc.get("class_names") if isinstance(doc, dict) else None
    conf = doc.get("confusion") if isinstance(doc, dict) else None
    if (not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names)
            or len(set(names)) != len(names)):
        raise ConfigError(f"{where}.results: {path} has no list of class_names (not a spi label --game results file)")
    try:
        cm = np.asarray(conf, dtype=np.float64)
    except (TypeError, ValueError):
        cm = np.zeros(0)
    c = len(names)
    if cm.shape != (c, c) or not np.all(cm >= 0) or not np.all(cm == np.round(cm)):
        raise ConfigError(f"{where}.results: {path} needs confusion, a {c}×{c} matrix of counts "
                          "(not a spi label --game results file)")
    if cm.sum() == 0:
        raise ConfigError(f"{where}.results: {path} scores no shots (the game was finished before any label)")
    return HumanSpec(name, path.resolve(), test, list(names), cm.astype(np.int64))


def human_records(study: Study, classes: Sequence[str]) -> list[RunRecord]:
    """Records of the study's human baselines, scored on the study's classes.

    Accuracy, macro F1, per-class and single-hit precision/recall are recomputed with
    :func:`spinet.metrics.classification_metrics` from the game's confusion matrix (one shot per count);
    k is None, one seed, no training.

    Args:
        study: the study (its ``human`` entries).
        classes: the study's class names (C,); every class the person saw or gave must be one of them.
    """
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, h in enumerate(study.human):
        used = h.confusion.sum(axis=1) + h.confusion.sum(axis=0)
        for c, name in enumerate(h.class_names):
            if used[c] and name not in index:
                raise ConfigError(f"human[{i}] ({h.name}): class {name!r} of {h.path.name} is not a class of the "
                                  f"study ({', '.join(classes)})")
        t_idx, p_idx = np.nonzero(h.confusion)
        counts = h.confusion[t_idx, p_idx]
        truth = np.repeat([index[h.class_names[t]] for t in t_idx], counts).astype(np.int64)
        guess = np.repeat([index[h.class_names[p]] for p in p_idx], counts).astype(np.int64)
        metrics = classification_metrics(truth, guess, list(classes))
        out.append(RunRecord(h.name, HUMAN_KIND, HUMAN_SOURCE, h.test, h.test, None, None, None, study.seeds[0],
                             metrics, 0, 0.0))
    return out


def _parse_evaluation(d: Any, where: str = "evaluation") -> EvaluationSpec:
    e = EvaluationSpec()
    _check_keys(d, tuple(e.__dataclass_fields__), where)
    if "device" in d:
        e.device = _str(d["device"], f"{where}.device")
        if not (e.device in ("auto", "cpu", "cuda") or e.device.startswith("cuda:")):
            raise ConfigError(f"{where}.device must be auto, cpu, cuda or cuda:N, got {e.device!r}")
    for key in ("workers", "batch_size"):
        if key in d:
            setattr(e, key, _int(d[key], f"{where}.{key}", 1))
    if "throughput_shots" in d:
        e.throughput_shots = _int(d["throughput_shots"], f"{where}.throughput_shots", 0)
    if "num_workers" in d:
        e.num_workers = _int(d["num_workers"], f"{where}.num_workers", 0)
    if d.get("max_test_shots") is not None:
        e.max_test_shots = _int(d["max_test_shots"], f"{where}.max_test_shots", 1)
    if "val_fraction" in d:
        e.val_fraction = _float(d["val_fraction"], f"{where}.val_fraction")
        if not 0 <= e.val_fraction < 1:
            raise ConfigError(f"{where}.val_fraction must lie in [0, 1), got {e.val_fraction}")
    if d.get("plot_k") is not None:
        e.plot_k = _int(d["plot_k"], f"{where}.plot_k", 1)
    if "projection" in d:
        e.projection = _str(d["projection"], f"{where}.projection")
        if e.projection not in ("pca", "tsne"):
            raise ConfigError(f"{where}.projection must be pca or tsne, got {e.projection!r}")
    return e


def parse_study(raw: Any, *, base_dir: str | Path = ".", source: str = "<study>",
                params: dict[str, Any] | None = None) -> Study:
    """Validate a study given as a mapping (parsed YAML).

    Args:
        raw: the study.
        base_dir: folder against which relative file names are looked up first (then the current directory).
        source: where it came from (for messages and the report).
        params: values of the study's ``parameters`` (command line ``--param NAME=VALUE``).
    """
    base = Path(base_dir).resolve()
    raw = _check_keys(raw, _TOP_KEYS, "study")
    declared = raw.get("parameters") or {}
    if not isinstance(declared, dict):
        raise ConfigError("parameters must be a mapping of name: default (null for none)")
    values = dict(declared)
    for key, value in (params or {}).items():
        if key not in declared:
            raise ConfigError(f"unknown parameter {key!r}{_did_you_mean(key, list(declared))}; this study takes: "
                              f"{', '.join(declared) or 'none'}")
        values[key] = value
    used: set[str] = set()
    body = {k: v for k, v in raw.items() if k != "parameters"}
    body = _substitute(body, values, used, "")

    name = _str(body.get("name", Path(source).stem), "name")
    seeds_raw = body.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds = list(range(_int(seeds_raw, "seeds", 1)))
    elif isinstance(seeds_raw, list) and seeds_raw:
        seeds = [_int(s, f"seeds[{i}]", 0) for i, s in enumerate(seeds_raw)]
    else:
        raise ConfigError("seeds must be a number of seeds or a non-empty list of seeds")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds has duplicates: {seeds}")
    k_raw = body.get("k_shots", [1, 5, 10, 20])
    if not isinstance(k_raw, list) or not k_raw:
        raise ConfigError("k_shots must be a non-empty list of shots per class, e.g. [1, 5, 10, 20]")
    k_shots = sorted({_int(k, f"k_shots[{i}]", 1) for i, k in enumerate(k_raw)})
    label = body.get("label", "hit_type")
    if label not in ("hit_type", "structure_hit_type"):
        raise ConfigError(f"label must be hit_type or structure_hit_type, got {label!r}")
    classes = body.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or len(classes) < 2:
            raise ConfigError("classes must be a list of at least two class names")
        classes = [_str(c, f"classes[{i}]") for i, c in enumerate(classes)]
        if len(set(classes)) != len(classes):
            raise ConfigError(f"classes has duplicates: {classes}")
    try:
        base_cfg = Config.from_dict({"preprocess": body.get("preprocess") or {}, "augment": body.get("augment") or {}})
    except ConfigError as exc:
        raise ConfigError(f"study {exc}") from None

    ds_raw = body.get("datasets")
    if not isinstance(ds_raw, dict) or not ds_raw:
        raise ConfigError("datasets: give at least one named dataset (path: FILE or simulate: MANIFEST)")
    datasets = {}
    for n, d in ds_raw.items():
        datasets[_name(n, "datasets")] = _parse_dataset(str(n), d, base, f"datasets.{n}")

    src_raw = body.get("sources")
    if not isinstance(src_raw, dict) or not src_raw:
        raise ConfigError("sources: give at least one named training source (a list of dataset parts)")
    sources = {}
    for n, comps in src_raw.items():
        where = f"sources.{n}"
        comps = [comps] if isinstance(comps, str | dict) else comps
        if not isinstance(comps, list) or not comps:
            raise ConfigError(f"{where} must be a dataset part or a list of them")
        sources[_name(n, "sources")] = SourceSpec(str(n), [_parse_component(c, datasets, f"{where}[{i}]")
                                                           for i, c in enumerate(comps)])

    test_raw = body.get("tests")
    if not isinstance(test_raw, dict) or not test_raw:
        raise ConfigError("tests: give at least one named test set (data: PART, support: PART)")
    tests = {_name(n, "tests"): _parse_test(str(n), d, datasets, f"tests.{n}") for n, d in test_raw.items()}

    models_raw = body.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError("models: give a list of models (kind: siamese, cnn, resnet or classical)")
    models = [_parse_model(m, base_cfg.preprocess, f"models[{i}]", datasets) for i, m in enumerate(models_raw)]
    for i, (m, m_raw) in enumerate(zip(models, models_raw, strict=True)):
        if m_raw.get("sources") is not None:
            names_ = m_raw["sources"]
            if not isinstance(names_, list) or not names_:
                raise ConfigError(f"models[{i}].sources must be a non-empty list of training source names")
            for n in names_:
                if n not in sources:
                    raise ConfigError(f"models[{i}].sources: no training source {n!r}"
                                      f"{_did_you_mean(str(n), list(sources))}")
            m.sources = [str(n) for n in names_]
    names = [m.name for m in models]
    for i, m in enumerate(models):
        if m.embedding is None:
            continue
        earlier = {x.name: x for x in models[:i]}
        ref = earlier.get(m.embedding)
        if ref is None or ref.kind != "siamese" or ref.embedding is not None:
            raise ConfigError(f"models[{i}].embedding: no earlier siamese model {m.embedding!r} that trains its own "
                              f"network{_did_you_mean(m.embedding, [x.name for x in earlier.values()])}")
        m.config, m.augment, m.sources = ref.config, ref.augment, ref.sources
        m.unlabelled, m.init = ref.unlabelled, ref.init
    for i, m in enumerate(models):
        if m.init is None:
            continue
        earlier = {x.name: x for x in models[:i]}
        ref = earlier.get(m.init)
        if ref is None or ref.kind != "siamese" or not ref.trains:
            raise ConfigError(f"models[{i}].init: no earlier siamese model {m.init!r} that trains its own network"
                              f"{_did_you_mean(m.init, list(earlier))}")
        if ref.config.get("model", {}) != m.config.get("model", {}):
            raise ConfigError(f"models[{i}].init: {m.init}'s network (config.model) differs from this model's")
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names must be unique, got {names} (set name: on each)")
    if any(m.fewshot for m in models):
        for t in tests.values():
            if t.support is None:
                raise ConfigError(f"tests.{t.name}.support is required with few-shot (siamese) models: the part "
                                  "the k labelled support shots per class are drawn from")
    human_raw = body.get("human") or []
    if not isinstance(human_raw, list):
        raise ConfigError("human must be a list of {name, results: LABELS.results.json, test: TEST}")
    human = [_parse_human(h, base, tests, f"human[{i}]") for i, h in enumerate(human_raw)]
    all_names = names + [h.name for h in human]
    if len(set(all_names)) != len(all_names):
        raise ConfigError(f"human: names must differ from each other and from the models', got {all_names}")
    evaluation = _parse_evaluation(body.get("evaluation") or {})
    if evaluation.plot_k is not None and evaluation.plot_k not in k_shots:
        raise ConfigError(f"evaluation.plot_k {evaluation.plot_k} is not one of k_shots {k_shots}")
    return Study(name=name, description=str(body.get("description") or "").strip(), source=source, base_dir=base,
                 parameters={k: values[k] for k in declared}, seeds=seeds, k_shots=k_shots, label=label,
                 classes=classes, preprocess=base_cfg.preprocess, augment=base_cfg.augment, datasets=datasets,
                 sources=sources, tests=tests, models=models, evaluation=evaluation, raw=raw,
                 human=human)


def load_study(path: str | Path, params: dict[str, Any] | None = None) -> Study:
    """Read and validate a study YAML file (relative names inside are looked up beside it, then in the cwd).

    Args:
        path: the study file.
        params: values of its ``parameters``; strings are parsed as YAML scalars (``3`` → 3).
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"no such study file: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if raw is None or not isinstance(raw, dict):
        raise ConfigError(f"{p}: a study is a mapping (name, datasets, sources, tests, models ...)")
    return parse_study(raw, base_dir=p.resolve().parent, source=str(p), params=params)


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line → (name, value parsed as a YAML scalar)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--param takes NAME=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    if not isinstance(parsed, str | int | float | bool) and parsed is not None:
        parsed = value
    return name.strip(), parsed


# ============================================================================================ data


def _hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _file_id(path: Path, simulated: Path) -> list:
    """What identifies a data file in a model's cache key.

    A dataset the study simulated lives in the folder ``simulated`` under a name that holds the hash of its
    manifest, so its name and size suffice: a report folder that is moved or copied keeps its trained models.
    Any other file (real data) is identified by its path, size and modification time.
    """
    st = path.stat()
    if path.resolve().is_relative_to(simulated.resolve()):
        return [path.name, st.st_size]
    return [str(path), st.st_size, int(st.st_mtime)]


@dataclass
class Labelled:
    """The labelled shots of a dataset: file indices (n,), class ids (n,) into the study's classes, and
    positions (into these arrays) of each part."""

    indices: np.ndarray
    classes: np.ndarray
    parts: dict[str, np.ndarray]


@dataclass
class Geometry:
    """A file's detector: frame shape (M, SS, FS), pixel positions (M, SS, FS, 3) m or None, mask (bool, True = bad)."""

    frame_shape: tuple[int, int, int]
    pixel_position: np.ndarray | None
    mask: np.ndarray


class DataRegistry:
    """Datasets of a study: files (simulated on demand into ``cache``), labels, parts, images and features.

    Images (the network input, from the study's preprocessing) and classical features are computed once
    per (dataset, perturbation) and shot, and kept in memory.
    """

    def __init__(self, study: Study, cache: Path, device: str = "cpu", progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.study = study
        self.cache = cache
        self.folder = cache / "data"
        """Where simulated datasets are written, each named by the hash of what made it."""
        self.device = device
        self.progress = progress or (lambda what, n: None)
        self.say = say or (lambda msg: None)
        self._files: dict[tuple, Path] = {}
        self._labelled: dict[str, Labelled] = {}
        self._raw_labels: dict[str, tuple[np.ndarray, list[str]]] = {}
        self._structures: dict[str, np.ndarray | None] = {}
        self._geometry: dict[Path, Geometry] = {}
        self._images: dict[tuple, tuple[torch.Tensor, np.ndarray]] = {}
        self._has_data: dict[tuple, np.ndarray] = {}
        self._features: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.classes: list[str] = []

    # ------------------------------------------------------------------------------------ files

    def _scaled_overrides(self, spec: DatasetSpec, scale: float) -> dict:
        from spisim.manifest import parse_manifest

        m = parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                           overrides=spec.overrides)
        b = m.spec.beam
        beam: dict[str, Any]
        if b.pulse_energy is not None:
            beam = {"pulse_energy": f"{b.pulse_energy * scale!r} J"}
        elif b.photons_per_pulse is not None:
            beam = {"photons_per_pulse": b.photons_per_pulse * scale}
        else:
            beam = {"fluence": f"{b.fluence * scale!r} photons/m^2"}
        over = json.loads(json.dumps(spec.overrides))
        over["beam"] = {**(over.get("beam") or {}), **beam}
        return over

    def file(self, name: str, fluence_scale: float | None = None) -> Path:
        """The dataset's file; a simulated one is made (or found) in the cache, at ``fluence_scale`` × the
        manifest's pulse when given."""
        key = (name, fluence_scale)
        if key in self._files:
            return self._files[key]
        spec = self.study.datasets[name]
        if not spec.simulated:
            assert spec.path is not None
            self._files[key] = spec.path
            return spec.path
        over = spec.overrides if fluence_scale in (None, 1.0) else self._scaled_overrides(spec, float(fluence_scale))
        tag = _hash([spec.manifest, spec.manifest_source, over])
        suffix = "" if fluence_scale in (None, 1.0) else f"-x{fluence_scale:g}"
        # datasets simulated from the same manifest (e.g. one relabelled single / not_single) share one file
        owner = next((n for n, d in self.study.datasets.items() if d.simulated and
                      _hash([d.manifest, d.manifest_source, d.overrides]) == _hash([spec.manifest,
                                                                                   spec.manifest_source,
                                                                                   spec.overrides])), name)
        out = self.folder / f"{owner}{suffix}-{tag}.h5"
        if not out.is_file():
            self._simulate(spec, over, out)
        self._files[key] = out
        return out

    def _simulate(self, spec: DatasetSpec, overrides: dict, out: Path) -> None:
        from spisim.generate import generate, parts_dir
        from spisim.manifest import parse_manifest

        out.parent.mkdir(parents=True, exist_ok=True)
        manifest = parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                                  overrides=overrides)
        total = manifest.spec.shots
        self.say(f"simulating {total} shots of dataset {spec.name} into {out}")
        done = [0]

        def shots(n: int) -> None:
            done[0] += n
            self.progress(f"simulating {spec.name}: {done[0]}/{total} shots", 0)

        generate(manifest, out, workers=self.study.evaluation.workers,
                 device="auto" if self.device.startswith("cuda") else "cpu", resume=parts_dir(out).exists(),
                 progress=shots)

    def _chunk(self, path: Path) -> int:
        """Shots read at once: the inference batch, at most ~256 MB of frames."""
        n_pixels = int(np.prod(self.geometry(path).frame_shape))
        return max(1, min(self.study.evaluation.batch_size, (256 << 20) // (4 * n_pixels)))

    def geometry(self, path: Path) -> Geometry:
        if path not in self._geometry:
            with CXIReader(path) as r:
                self._geometry[path] = Geometry(r.frame_shape, r.pixel_position, r.mask)
        return self._geometry[path]

    # ------------------------------------------------------------------------------------ labels

    def raw_labels(self, name: str) -> tuple[np.ndarray, list[str]]:
        """(file indices, class names) of the labelled shots of a dataset, before the class filter."""
        if name not in self._raw_labels:
            spec = self.study.datasets[name]
            allowed = label_names_for(self.study.label, [*(self.study.classes or []), *spec.rename])
            with CXIReader(self.file(name)) as r:
                idx, names = file_labels(r, self.study.label, spec.labels, class_names=allowed)
            if spec.max_shots is not None:
                idx, names = idx[: spec.max_shots], names[: spec.max_shots]
            if spec.rename:
                new = [spec.rename.get(n, n) for n in names]
                keep = np.array([n is not None for n in new], dtype=bool)
                idx, names = idx[keep], [n for n in new if n is not None]
            if spec.binary:
                names = ["single" if is_single_class(n) else NOT_SINGLE for n in names]
            self._raw_labels[name] = (idx, list(names))
        return self._raw_labels[name]

    def structures(self, name: str) -> np.ndarray | None:
        """(n,) the particle of each labelled shot of a simulated dataset (its first particle's name; the
        unintended body's kind for unintended hits; "" for no hit), or None where the file names none."""
        if name not in self._structures:
            out = None
            with CXIReader(self.file(name)) as r:
                names = r.structure_names  # written together with the structure labels
                if names:
                    first = r.labels("structure")[:, 0]
                    table = np.array([*names, ""], dtype=object)  # index -1 → ""
                    idx = self._labelled[name].indices
                    out = table[np.where(first[idx] < 0, len(names), first[idx])]
            self._structures[name] = out
        return self._structures[name]

    def prepare(self) -> list[str]:
        """Make every dataset, fix the class list (the study's, or every class found) and split the parts."""
        found: list[str] = []
        for name in self.study.datasets:
            found += self.raw_labels(name)[1]
        self.classes = list(self.study.classes) if self.study.classes else order_classes(found)
        index = {c: i for i, c in enumerate(self.classes)}
        for name, spec in self.study.datasets.items():
            idx, names = self.raw_labels(name)
            keep = np.array([n in index for n in names], dtype=bool)
            idx = idx[keep]
            cls = np.array([index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)
            if len(idx) == 0:
                raise InputFileError(f"dataset {name}: no labelled shot of the classes {', '.join(self.classes)}")
            parts = {"all": np.arange(len(idx))}
            if spec.test_fraction > 0:
                tr, te = stratified_split(cls, spec.test_fraction, spec.split_seed)
                parts["train"], parts["test"] = tr, te
            self._labelled[name] = Labelled(idx, cls, parts)
        return self.classes

    def labelled(self, name: str) -> Labelled:
        return self._labelled[name]

    def label_space(self, name: str) -> LabelSpace:
        """The label space a dataset's truth labels are scored in: binary (single / not_single) when its labels
        are only single and not_single (a real run labelled single vs rest), else the study's classes."""
        lab = self._labelled[name]
        present = [self.classes[int(c)] for c in np.unique(lab.classes)]
        if is_binary_names(present):
            return LabelSpace.make_binary()
        return LabelSpace(tuple(self.classes), False)

    def pool_counts(self, ref: PartRef) -> dict[str, int]:
        """Shots per class (classes present only) of a dataset part: what a k-shot draw from it can take."""
        lab = self._labelled[ref.dataset]
        counts = np.bincount(lab.classes[self.part(ref)], minlength=len(self.classes))
        return {self.classes[i]: int(n) for i, n in enumerate(counts) if n}

    def key_indices(self, ref: PartRef) -> set[tuple[str, int]]:
        """(resolved file, shot index) of every shot of a part (to tell the same shot in two datasets)."""
        lab = self._labelled[ref.dataset]
        path = str(self.file(ref.dataset).resolve())
        return {(path, int(i)) for i in lab.indices[self.part(ref)]}

    def part(self, ref: PartRef) -> np.ndarray:
        """Positions (into the dataset's labelled shots) of a part."""
        return self._labelled[ref.dataset].parts[ref.part]

    def summary(self) -> list[dict]:
        """Per dataset and part: shots per class (for the report)."""
        rows = []
        for name, lab in self._labelled.items():
            spec = self.study.datasets[name]
            for part, pos in lab.parts.items():
                counts = np.bincount(lab.classes[pos], minlength=len(self.classes))
                rows.append({"dataset": name, "part": part, "file": str(self.file(name)),
                             "simulated": spec.simulated, "shots": int(len(pos)),
                             **{c: int(n) for c, n in zip(self.classes, counts, strict=True)}})
        return rows

    # ------------------------------------------------------------------------------------ frames

    def frames(self, name: str, positions: np.ndarray, perturb: Perturbation) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw frames (n, M, SS, FS) float32 of labelled shots ``positions``, perturbed, and per-pixel weights
        (n, M, SS, FS) (0 = lost detector area) or None."""
        lab = self._labelled[name]
        scale = perturb.value if perturb.key == "fluence_scale" else None
        simulated = self.study.datasets[name].simulated
        path = self.file(name, scale if simulated else None)
        file_idx = lab.indices[positions]
        with CXIReader(path) as r:
            frames = r.frames(file_idx)
        if scale is not None and not simulated and scale != 1.0:
            frames = resample_fluence(frames, scale, file_idx, self.study.preprocess.photon_scale)
        weight = None
        if perturb.key == "missing_fraction" and perturb.value:
            geo = self.geometry(path)
            weight = missing_area_weights(geo.frame_shape, geo.pixel_position, float(perturb.value), file_idx)
        return frames, weight

    def images(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> torch.Tensor:
        """Network inputs (n, 1, S, S) of labelled shots ``positions`` (computed once, then kept)."""
        from .preprocess import Preprocessor

        perturb = perturb or Perturbation()
        key = (name, perturb)
        lab = self._labelled[name]
        if key not in self._images:
            s = self.study.preprocess.input_size
            self._images[key] = (torch.zeros(len(lab.indices), 1, s, s), np.zeros(len(lab.indices), bool))
        store, done = self._images[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            pre = Preprocessor.from_geometry(self.study.preprocess, geo.frame_shape, geo.pixel_position, geo.mask)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                with torch.no_grad():
                    x = torch.from_numpy(frames)
                    if weight is None:
                        raw, valid = pre.assemble_valid(x)
                    else:
                        raw, valid = pre.assemble_weighted(x, torch.from_numpy(weight))
                    img = pre.normalise(raw, valid)
                store[torch.from_numpy(chunk)] = img
                self._has_data.setdefault(key, np.ones(len(lab.indices), bool))[chunk] = (
                    valid.flatten(1).any(dim=1).numpy())
                done[chunk] = True
        return store[torch.from_numpy(np.asarray(positions, dtype=np.int64))]

    def has_data(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> np.ndarray:
        """(n,) bool: the shot has a finite unmasked pixel where the network looks (else it is invalid: never
        given a class, never scored). Computed with the images."""
        perturb = perturb or Perturbation()
        self.images(name, positions, perturb)
        return self._has_data[(name, perturb)][np.asarray(positions, dtype=np.int64)]

    def photons(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> np.ndarray:
        """Photons per shot (n,) of labelled shots ``positions`` (:func:`spinet.baselines.shot_photons`: good,
        finite pixels, in photons after ``preprocess.photon_scale``; lost area left out)."""
        from .baselines import shot_photons

        perturb = perturb or Perturbation()
        key = ("photons", name, perturb)
        lab = self._labelled[name]
        if key not in self._features:
            self._features[key] = (np.full(len(lab.indices), np.nan), np.zeros(len(lab.indices), bool))
        store, done = self._features[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                store[chunk] = shot_photons(frames, geo.mask, self.study.preprocess.photon_scale, weight)
                done[chunk] = True
        return store[np.asarray(positions, dtype=np.int64)]

    def features(self, name: str, positions: np.ndarray, perturb: Perturbation, classifier: Any) -> np.ndarray:
        """Classical features (n, F) of labelled shots ``positions`` with ``classifier``'s ring edges."""
        key = (name, perturb, tuple(np.round(classifier.edges, 12)), classifier.thresholds)
        lab = self._labelled[name]
        if key not in self._features:
            self._features[key] = (np.full((len(lab.indices), 0), np.nan), np.zeros(len(lab.indices), bool))
        store, done = self._features[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            ext = classifier.extractor(geo.frame_shape, geo.pixel_position, geo.mask,
                                       self.study.preprocess.photon_scale)
            if store.shape[1] == 0:
                store = np.full((len(lab.indices), len(ext.names)), np.nan)
                self._features[key] = (store, done)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                store[chunk] = ext(frames, weight)
                done[chunk] = True
        return store[np.asarray(positions, dtype=np.int64)]


def resample_fluence(frames: np.ndarray, scale: float, file_indices: np.ndarray,
                     photon_scale: float = 1.0) -> np.ndarray:
    """Measured frames as if the fluence were ``scale`` × higher: photon counts binomially thinned (scale < 1,
    exact for Poisson data) or Poisson-resampled at ``scale`` × the counts (scale > 1, an approximation: the
    noise of the measured counts is kept and magnified). Each shot draws from ``(scale, file index)``.

    Args:
        frames: (n, M, SS, FS) in photons × ``photon_scale``.
        scale: > 0.
        file_indices: (n,) shot indices (seed the draws).
        photon_scale: frame units per photon.
    """
    out = np.empty_like(frames, dtype=np.float32)
    for i, (frame, idx) in enumerate(zip(frames, file_indices, strict=True)):
        rng = np.random.default_rng([int(idx), int(round(scale * 1e6)), 0xF1])
        photons = np.clip(np.rint(np.nan_to_num(frame / photon_scale)), 0, None).astype(np.int64)
        if scale <= 1:
            new = rng.binomial(photons, scale)
        else:
            new = rng.poisson(photons * scale)
        out[i] = new.astype(np.float32) * photon_scale
    return out


def missing_area_weights(frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None, fraction: float,
                         file_indices: np.ndarray) -> np.ndarray:
    """Per-shot pixel weights (n, M, SS, FS): 0 over an angular sector of ``fraction`` × 360° about the beam
    axis (a random start angle per shot, from its file index), 1 elsewhere.

    Without geometry the sector is taken about the centre of the stacked panels.
    """
    if pixel_position is not None:
        p = np.asarray(pixel_position).reshape(*frame_shape, 3)
        phi = np.arctan2(p[..., 1], p[..., 0])
    else:
        from .preprocess import stack_coordinates

        c = stack_coordinates(frame_shape)
        phi = np.arctan2(-c[..., 0], c[..., 1])
    out = np.ones((len(file_indices), *frame_shape), dtype=np.float32)
    for i, idx in enumerate(file_indices):
        start = np.random.default_rng([int(idx), 0x5EC7]).uniform(0, 2 * np.pi)
        rel = np.mod(phi - start, 2 * np.pi)
        out[i][rel < 2 * np.pi * fraction] = 0.0
    return out


# ============================================================================================ runs


@dataclass
class TrainJob:
    """One model trained on one source for one seed (and one k when the source takes k shots per class)."""

    model: ModelSpec
    source: SourceSpec
    seed: int
    k: int | None

    @property
    def label(self) -> str:
        kk = f", k={self.k}" if self.k is not None else ""
        return f"{self.model.name} on {self.source.name} (seed {self.seed}{kk})"


@dataclass
class RunRecord:
    """The scores of one trained model on one test variant with one k (None for models without supports).

    ``k`` is the number of shots per class really used (supports, or training shots of a ``per_class: k``
    source); ``k_asked`` the study's k values this record stands for, when they differ from ``k`` (a pool
    held fewer shots of a class than asked: the draws of those k values are the same shots). The metrics are
    in the label space of the test labels (``metrics.class_names``: the study's classes, or single /
    not_single for a test labelled single vs rest).
    """

    model: str
    kind: str
    source: str
    test: str
    test_base: str
    sweep_key: str | None
    sweep_value: float | None
    k: int | None
    seed: int
    metrics: ClassificationMetrics
    n_train: int
    train_seconds: float
    by_structure: dict[str, list[list[int]]] | None = None
    single_recall_at_98: float = float("nan")
    k_asked: list[int] = field(default_factory=list)
    estimate: dict[str, Any] | None = None
    """What the supports alone say (models that use supports): ``accuracy``, ``correct``, ``n``,
    ``interval_95`` (Wilson) of the leave-one-out reading of the supports, and what was chosen with them
    (``checkpoint``, ``rule``, ``min_ratio``, ``rule_text`` for the photon baseline)."""

    @property
    def asked(self) -> tuple[int, ...]:
        """The study's k values this record answers (``(k,)`` when nothing was capped; () without k)."""
        if self.k_asked:
            return tuple(self.k_asked)
        return () if self.k is None else (self.k,)

    def at_k(self, k: int) -> bool:
        """True for a record without k, or one that answers the study's k value ``k``."""
        return self.k is None or k in self.asked

    @property
    def label_space(self) -> str:
        """``binary`` (single / not_single) or ``N classes``."""
        return label_space_name(self.metrics.class_names)

    def row(self) -> dict[str, Any]:
        """A flat row for CSV and JSON."""
        m = self.metrics
        out = {"model": self.model, "kind": self.kind, "source": self.source, "test": self.test,
               "test_base": self.test_base, "sweep_key": self.sweep_key, "sweep_value": self.sweep_value,
               "k": self.k, "k_asked": list(self.asked) if self.k_asked else None, "seed": self.seed,
               "label_space": self.label_space, "n_test": m.n, "n_train": self.n_train,
               "train_seconds": round(self.train_seconds, 3), "accuracy": m.accuracy, "macro_f1": m.macro_f1,
               "single_precision": m.single_precision, "single_recall": m.single_recall,
               "single_recall_at_98": self.single_recall_at_98, "answered": m.answered}
        e = self.estimate or {}
        out.update({"est_accuracy": e.get("accuracy"), "est_n": e.get("n"),
                    "est_low": (e.get("interval_95") or [None, None])[0],
                    "est_high": (e.get("interval_95") or [None, None])[1],
                    "chosen_checkpoint": e.get("checkpoint"), "chosen_rule": e.get("rule"),
                    "chosen_min_ratio": e.get("min_ratio")})
        for c in m.class_names:
            out[f"precision[{c}]"] = m.precision[c]
            out[f"recall[{c}]"] = m.recall[c]
        return out


@dataclass
class Prediction:
    """Predictions kept for plots: truth, predicted ids, single-hit scores (n,), and for Siamese models the
    query and support embeddings (n, D) and support class ids."""

    truth: np.ndarray
    pred: np.ndarray
    single_score: np.ndarray | None
    embeddings: np.ndarray | None = None
    support_embeddings: np.ndarray | None = None
    support_classes: np.ndarray | None = None
    structure: np.ndarray | None = None
    class_names: list[str] | None = None
    """Names of the ids in truth, pred and support_classes (None: the study's classes)."""
    k: int | None = None
    """The k really used (supports or training shots per class), as in the record."""
    estimate: dict[str, Any] | None = None
    """The supports' own reading (leave-one-out) and what was chosen with them (see ``RunRecord.estimate``)."""


@dataclass
class ThroughputRecord:
    """Inference speed of one model (from raw frames in memory to predicted classes)."""

    model: str
    kind: str
    source: str
    device: str
    threads: int
    shots_per_s: float
    seconds_per_batch: float
    batch_size: int
    n_shots: int


@dataclass
class StudyResults:
    """Everything a report needs."""

    study: Study
    classes: list[str]
    records: list[RunRecord]
    predictions: dict[tuple, Prediction]
    throughput: list[ThroughputRecord]
    datasets: list[dict]
    train_logs: dict[str, list[dict]]
    seconds: float
    device: str
    created: str
    notes: list[str] = field(default_factory=list)
    """Warnings about the runs (k values a pool could not supply), shown in the report."""


def label_space_name(class_names: Sequence[str]) -> str:
    """``binary`` for single / not_single, else ``N classes``."""
    space = LabelSpace(tuple(class_names), tuple(class_names) == BINARY_CLASSES)
    return space.name


@dataclass
class Trained:
    """A trained model ready to score shots."""

    job: TrainJob
    kind: str
    obj: Any
    n_train: int
    seconds: float
    log: list[dict]
    folder: Path | None = None
    """Where the model is cached (a Siamese model's best.pt and kept epochs/ live there)."""


def resolve_device(name: str) -> str:
    """``cpu`` or a CUDA device for ``auto``/``cpu``/``cuda``/``cuda:N`` (ConfigError for CUDA without a GPU)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: no CUDA device is available (use cpu)")
    return name


class StudyRunner:
    """Run a study into ``out`` (cache under ``out/cache``); :meth:`run` returns :class:`StudyResults`.

    Args:
        study: a validated study.
        out: the report folder.
        device: overrides ``evaluation.device``.
        progress: called with (what, steps done) — :meth:`n_steps` steps in all.
        say: called with one-line messages.
        fresh: retrain models even when the cache holds them.
    """

    def __init__(self, study: Study, out: str | Path, *, device: str | None = None, progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None, fresh: bool = False) -> None:
        self.study = study
        self.out = Path(out)
        self.cache = self.out / "cache"
        self.device = resolve_device(device or study.evaluation.device)
        self.progress = progress or (lambda what, n: None)
        self.say = say or (lambda msg: None)
        self.fresh = fresh
        self.data = DataRegistry(study, self.cache, self.device, self.progress, self.say)
        self.invalid: dict[str, int] = {}
        """Test variant → shots left out of its scores because their frame has no finite pixel."""
        self._networks: dict[tuple, Trained] = {}
        """(model, source, seed, k) → trained networks that other models score (embedding) or start from (init)."""
        self._bundles: dict[Path, Any] = {}
        """Kept checkpoints loaded for selection."""

    # -------------------------------------------------------------------------------- the plan

    def jobs(self) -> list[TrainJob]:
        """Every training run, in order (seed, model, source, k)."""
        s = self.study
        out = []
        for seed in s.seeds:
            for m in s.models:
                if m.kind == "photons":  # fitted on each test's supports: no training source
                    out.append(TrainJob(m, SourceSpec(SUPPORT_SOURCE, []), seed, None))
                    continue
                for src in s.sources.values():
                    if m.sources is not None and src.name not in m.sources:
                        continue
                    for k in (s.k_shots if src.k_dependent else [None]):
                        out.append(TrainJob(m, src, seed, k))
        return out

    def evaluations(self, job: TrainJob) -> list[tuple[TestVariant, int | None]]:
        """(test variant, k) scored for a training run."""
        ks: list[int | None]
        if job.k is not None:
            ks = [job.k]
        elif job.model.fewshot:
            ks = list(self.study.k_shots)
        else:
            ks = [None]
        return [(v, k) for v in self.study.variants() for k in ks]

    def n_steps(self) -> int:
        """Progress steps of :meth:`run`: simulated datasets, trainings and evaluations."""
        sims = sum(1 for d in self.study.datasets.values() if d.simulated)
        sims += sum(len(t.sweep_values) for t in self.study.tests.values()
                    if t.sweep_key == "fluence_scale" and self.study.datasets[t.data.dataset].simulated)
        jobs = self.jobs()
        return sims + len(jobs) + sum(len(self.evaluations(j)) for j in jobs)

    def describe(self) -> list[str]:
        """The plan in words (``spi evaluate --dry-run``)."""
        s = self.study
        lines = [f"study {s.name}: {len(s.models)} models × {len(s.sources)} training sources × {len(s.seeds)} seeds; "
                 f"k = {', '.join(map(str, s.k_shots))}"]
        for d in s.datasets.values():
            if d.simulated:
                over = ", ".join(f"{k}={v}" if not isinstance(v, dict | list) else k for k, v in d.overrides.items())
                what = f"simulated from {d.manifest_source}" + (f" (set: {over})" if over else "")
            else:
                what = f"{d.path}" + (f" with labels {d.labels}" if d.labels else "")
            split = f", split {1 - d.test_fraction:g}/{d.test_fraction:g} train/test" if d.test_fraction else ""
            lines.append(f"dataset {d.name}: {what}{split}")
        for src in s.sources.values():
            comps = ", ".join(f"{c.part}" + (f" ({c.per_class} per class)" if c.per_class else "")
                              + (f" ×{c.weight:g}" if c.weight != 1 else "") for c in src.components)
            lines.append(f"source {src.name}: {comps}")
        for v in s.variants():
            support = f", supports from {v.spec.support}" if v.spec.support else ""
            lines.append(f"test {v.name}: {v.spec.data}{support}")
        for m in s.models:
            if m.embedding is not None:
                lines.append(f"model {m.name}: the networks of {m.embedding}, rule {m.rule}")
        jobs = self.jobs()
        n_train = sum(1 for j in jobs if j.model.trains)
        lines.append(f"{n_train} trainings, {sum(len(self.evaluations(j)) for j in jobs)} evaluations")
        return lines

    # -------------------------------------------------------------------------------- k and its pools

    def _pool_min(self, ref: PartRef) -> int:
        """The fewest shots any class present in a part holds (the largest k a balanced draw can take)."""
        return min(self.data.pool_counts(ref).values())

    def job_k(self, job: TrainJob) -> int | None:
        """Shots per class a ``per_class: k`` source really takes: the asked k, at most what the smallest class
        of each such part holds (every part takes the same k, so that k stays one number)."""
        if job.k is None:
            return None
        caps = [self._pool_min(c.part) for c in job.source.components if c.per_class == "k"]
        return min([job.k, *caps])

    def support_k(self, job: TrainJob, v: TestVariant, k: int | None) -> int | None:
        """Supports per class drawn for a Siamese evaluation at the study's ``k`` (None for other models): k
        (or the job's real k), at most what the smallest class of the test's support part holds."""
        if not job.model.fewshot or k is None:
            return None
        kk = self.job_k(job) if job.k is not None else k
        assert v.spec.support is not None and kk is not None
        return min(kk, self._pool_min(v.spec.support))

    def record_k(self, job: TrainJob, v: TestVariant, k: int | None) -> int | None:
        """The k a record states: the real training k of a ``per_class: k`` source, else the real support k."""
        if job.k is not None:
            return self.job_k(job)
        return self.support_k(job, v, k)

    def k_notes(self) -> list[str]:
        """One line per pool that holds fewer shots of a class than a k of the study asks."""
        s = self.study
        notes = []
        seen: set[str] = set()
        for src in s.sources.values():
            for c in src.components:
                if c.per_class != "k" or str(c.part) in seen:
                    continue
                seen.add(str(c.part))
                counts = self.data.pool_counts(c.part)
                cap = min(counts.values())
                over = [k for k in s.k_shots if k > cap]
                if over:
                    notes.append(f"{c.part} holds {class_counts_text(counts)}: k = {', '.join(map(str, over))} of the "
                                 f"training sources that take k shots per class is k = {cap} (every class the same)")
        if any(m.fewshot for m in s.models):
            for t in s.tests.values():
                if t.support is None:
                    continue
                counts = self.data.pool_counts(t.support)
                cap = min(counts.values())
                over = [k for k in s.k_shots if k > cap]
                if over:
                    notes.append(f"test {t.name}: its support part {t.support} holds {class_counts_text(counts)}: "
                                 f"k = {', '.join(map(str, over))} supports per class asked, {cap} drawn and shown "
                                 f"as k = {cap}")
        return notes

    # -------------------------------------------------------------------------------- training data

    def _training_parts(self, job: TrainJob) -> tuple[list[tuple[str, np.ndarray, float]],
                                                      list[tuple[str, np.ndarray]]]:
        """(training [(dataset, positions, weight)], validation [(dataset, positions)]) of a job."""
        train, val = [], []
        vf = self.study.evaluation.val_fraction
        for i, c in enumerate(job.source.components):
            pos = self.data.part(c.part)
            lab = self.data.labelled(c.part.dataset)
            per = self.job_k(job) if c.per_class == "k" else c.per_class
            if per is not None:
                pick = pick_per_class(lab.classes[pos], int(per), _seed(job.seed, "kshot", str(c.part)))
                train.append((c.part.dataset, pos[pick], c.weight))
                continue
            if vf > 0:
                tr, va = stratified_split(lab.classes[pos], vf, _seed(job.seed, "val", i))
                train.append((c.part.dataset, pos[tr], c.weight))
                if len(va):
                    val.append((c.part.dataset, pos[va]))
            else:
                train.append((c.part.dataset, pos, c.weight))
        return train, val

    def _cache_key(self, job: TrainJob, train: list, val: list) -> str:
        s = self.study
        parts = []
        for name, pos, w in train:
            lab = self.data.labelled(name)
            parts.append([_file_id(self.data.file(name), self.data.folder), _hash(lab.indices[pos].tolist()),
                          _hash(lab.classes[pos].tolist()), w])
        vparts = [[name, _hash(self.data.labelled(name).indices[pos].tolist())] for name, pos in val]
        # min_ratio, adapt_bn and select only change how predictions are read, never training: left out, as unset
        # keys are, so that models trained before these keys existed keep their cache entries
        model = {k: v for k, v in job.model.__dict__.items()
                 if not (k in ("embedding", "unlabelled", "init") and v is None)
                 and k not in ("min_ratio", "adapt_bn", "select")}
        if job.model.unlabelled is not None:
            u = job.model.unlabelled
            model["unlabelled"] = [_file_id(self.data.file(u.dataset), self.data.folder),
                                   _hash(self.data.labelled(u.dataset).indices[self.data.part(u)].tolist())]
        init = self._init_network(job)
        if init is not None:
            assert init.folder is not None
            model["init"] = init.folder.name
        return _hash({"model": model, "seed": job.seed, "k": job.k, "train": parts, "val": vparts,
                      "classes": self.data.classes, "preprocess": s.preprocess.__dict__, "augment": s.augment.__dict__,
                      "version": _version()}, 16)

    def _init_source(self, name: str) -> str:
        """The training source whose network a model ``init: name`` starts from: that model's first source."""
        ref = next(m for m in self.study.models if m.name == name)
        return (ref.sources or list(self.study.sources))[0]

    def _init_network(self, job: TrainJob) -> Trained | None:
        """The trained network a job starts from (``init``), or None."""
        if job.model.init is None:
            return None
        key = (job.model.init, self._init_source(job.model.init), job.seed, None)
        if key not in self._networks:
            raise ConfigError(f"models.{job.model.name}.init: {job.model.init} has no network trained on "
                              f"{key[1]} for seed {job.seed} (its first source must take whole parts, not k shots)")
        return self._networks[key]

    def _augment(self, model: ModelSpec) -> AugmentConfig:
        return _augment_config(self.study.augment.__dict__, model.augment, f"models.{model.name}.augment")

    # -------------------------------------------------------------------------------- training

    def train(self, job: TrainJob) -> Trained:
        """Train (or load from the cache) one model."""
        train, val = self._training_parts(job)
        n_train = int(sum(len(p) for _, p, _ in train))
        key = self._cache_key(job, train, val)
        folder = self.cache / "models" / f"{job.model.name}-{job.source.name}-s{job.seed}" \
            f"{'' if job.k is None else f'-k{job.k}'}-{key}"
        t0 = time.perf_counter()
        kind = job.model.kind
        if kind == "siamese":
            obj, log = self._train_siamese(job, train, val, folder)
        elif kind in ("cnn", "resnet"):
            obj, log = self._train_cnn(job, train, val, folder)
        else:
            obj, log = self._train_classical(job, train, folder)
        return Trained(job, kind, obj, n_train, time.perf_counter() - t0, log, folder)

    def _label_csv(self, path: Path, name: str, positions: np.ndarray) -> Path:
        lab = self.data.labelled(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["index", "label"])
            for p in positions:
                w.writerow([int(lab.indices[p]), self.data.classes[int(lab.classes[p])]])
        return path

    def _train_siamese(self, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list[dict]]:
        from .checkpoint import ModelBundle

        best = folder / "best.pt"
        done = folder / "done.json"
        if not self.fresh and best.is_file() and done.is_file():
            return ModelBundle.load(best, self.device), json.loads(done.read_text())["history"]
        folder.mkdir(parents=True, exist_ok=True)
        cfg = json.loads(json.dumps(job.model.config))
        sources = [{"path": str(self.data.file(n)), "weight": w,
                    "labels": str(self._label_csv(folder / f"train-{i}.csv", n, pos))}
                   for i, (n, pos, w) in enumerate(train)]
        validation = [{"path": str(self.data.file(n)), "labels": str(self._label_csv(folder / f"val-{i}.csv", n, pos))}
                      for i, (n, pos) in enumerate(val)]
        data = dict(cfg.get("data") or {})
        data.update(sources=sources, validation=validation, val_fraction=0.0, classes=self.data.classes,
                    label="hit_type")
        data.setdefault("num_workers", self.study.evaluation.num_workers)
        if "batches_per_epoch" not in data:
            m = int(data.get("m_per_class", 5))
            n_cls = len({int(c) for n, pos, _ in train for c in self.data.labelled(n).classes[pos]})
            cpb = min(int(data.get("classes_per_batch") or n_cls), n_cls)
            n = sum(len(p) for _, p, _ in train)
            data["batches_per_epoch"] = max(10, math.ceil(n / (m * max(cpb, 1))))
        if job.model.unlabelled is not None:
            u = job.model.unlabelled
            idx_file = folder / "unlabelled.csv"
            idx_file.write_text("index\n" + "".join(
                f"{int(i)}\n" for i in self.data.labelled(u.dataset).indices[self.data.part(u)]), encoding="utf-8")
            data["unlabelled"] = [{"path": str(self.data.file(u.dataset)), "indices": str(idx_file)}]
        tr = dict(cfg.get("train") or {})
        tr.update(out=str(folder), seed=job.seed, device=self.device, progress=False, tensorboard=False)
        tr.setdefault("rule", job.model.rule if job.model.rule in RULES else "nearest")
        init = self._init_network(job)
        if init is not None:
            assert init.folder is not None
            tr["init"] = str(init.folder / "best.pt")
        full = {**cfg, "preprocess": self.study.preprocess.__dict__, "augment": self._augment(job.model).__dict__,
                "data": data, "train": tr}
        config = Config.from_dict(full)
        from rich.console import Console

        from .train import train as spinet_train

        quiet = Console(file=open(os.devnull, "w"), stderr=False)  # noqa: SIM115 - closed with the console
        try:
            result = spinet_train(config, console=quiet)
        finally:
            quiet.file.close()
        done.write_text(json.dumps({"history": result.history}, default=float))
        return ModelBundle.load(best, self.device), result.history

    def _file_shots(self, train: list, augment: AugmentConfig):
        from .augment import ShotTransform
        from .data import FileShots, ShotDataset
        from .preprocess import Preprocessor

        shots = []
        for name, pos, w in train:
            path = self.data.file(name)
            geo = self.data.geometry(path)
            lab = self.data.labelled(name)
            pre = Preprocessor.from_geometry(self.study.preprocess, geo.frame_shape, geo.pixel_position, geo.mask)
            t = ShotTransform(self.study.preprocess, augment, geo.frame_shape, geo.pixel_position, geo.mask,
                              preprocessor=pre)
            shots.append(FileShots(path, lab.indices[pos], lab.classes[pos], t, w))
        return ShotDataset(shots)

    def _val_images(self, val: list) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not val:
            return None
        xs = [self.data.images(n, pos) for n, pos in val]
        ys = [torch.from_numpy(self.data.labelled(n).classes[pos]) for n, pos in val]
        return torch.cat(xs), torch.cat(ys)

    def _train_cnn(self, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list[dict]]:
        from .baselines import CNNClassifier, SupervisedConfig

        path = folder / "model.pt"
        if not self.fresh and path.is_file():
            clf = CNNClassifier.from_state(torch.load(path, map_location="cpu", weights_only=True))
            return clf.to(self.device), clf.history
        cfg = SupervisedConfig.from_dict(job.model.config, f"models.{job.model.name}.config")
        clf = CNNClassifier(job.model.kind, self.data.classes, self.study.preprocess.input_size, cfg)
        ds = self._file_shots(train, self._augment(job.model))
        clf.fit(ds, ds.labels, seed=job.seed, weights=ds.sample_weights(), val=self._val_images(val),
                device=self.device, num_workers=self.study.evaluation.num_workers)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(clf.state(), path)
        return clf.to(self.device), clf.history

    def _train_classical(self, job: TrainJob, train: list, folder: Path) -> tuple[Any, list[dict]]:
        from .baselines import ClassicalClassifier

        path = folder / "model.pkl"
        if not self.fresh and path.is_file():
            with open(path, "rb") as f:
                return pickle.load(f), []
        clf = ClassicalClassifier(**_classical_kwargs(job.model.config, f"models.{job.model.name}.config"),
                                  seed=job.seed)
        first = self.data.file(train[0][0])
        geo = self.data.geometry(first)
        clf.set_geometry(geo.frame_shape, geo.pixel_position, geo.mask)
        xs, ys = [], []
        for name, pos, _ in train:
            xs.append(self.data.features(name, pos, Perturbation(), clf))
            ys.append(self.data.labelled(name).classes[pos])
        clf.fit(np.concatenate(xs), np.concatenate(ys), len(self.data.classes))
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(clf, f)
        return clf, []

    # -------------------------------------------------------------------------------- scoring

    def _test_positions(self, v: TestVariant) -> np.ndarray:
        """Positions of the scored shots: the test part without any shot that is also in its support part (the
        same file and index, e.g. two datasets on one file), at most ``max_test_shots`` of them."""
        pos = self.data.part(v.spec.data)
        if v.spec.support is not None and v.spec.support.dataset != v.spec.data.dataset:
            supports = self.data.key_indices(v.spec.support)
            lab = self.data.labelled(v.spec.data.dataset)
            path = str(self.data.file(v.spec.data.dataset).resolve())
            pos = pos[np.array([(path, int(i)) not in supports for i in lab.indices[pos]], dtype=bool)]
        cap = self.study.evaluation.max_test_shots
        if cap is not None and len(pos) > cap:
            rng = np.random.default_rng([0x7E57, len(pos)])
            pos = np.sort(rng.choice(pos, cap, replace=False))
        return pos

    def score(self, trained: Trained, v: TestVariant, k: int | None,
              cache: dict) -> tuple[ClassificationMetrics, Prediction]:
        """Score a trained model on a test variant with k supports per class (Siamese; k at most what the
        smallest class of the support part holds, see :meth:`support_k`) and keep its predictions. The metrics
        are in the label space of the test labels (:meth:`DataRegistry.label_space`): for a test labelled
        single / not_single every other answer counts as not_single."""
        name = v.spec.data.dataset
        pos = self._test_positions(v)
        ok = self.data.has_data(name, pos, v.perturb)
        if not ok.all():
            self.invalid[v.name] = int((~ok).sum())
            pos = pos[ok]
        truth = self.data.labelled(name).classes[pos]
        classes = self.data.classes
        single = np.array([is_single_class(c) for c in classes], dtype=bool)
        if trained.kind == "siamese":
            prediction = self._score_siamese(trained, v, k, cache, name, pos, truth)
        elif trained.kind == "photons":
            prediction = self._score_photons(trained, v, k, name, pos, truth)
        else:
            if trained.kind == "classical":
                proba = trained.obj.predict_proba(self.data.features(name, pos, v.perturb, trained.obj))
            else:
                proba = trained.obj.predict_proba(self.data.images(name, pos, v.perturb),
                                                  batch=self.study.evaluation.batch_size)
            pred = proba.argmax(axis=1)
            score = proba[:, single].sum(axis=1) if single.any() else None
            prediction = Prediction(truth, pred, score)
        structures = self.data.structures(name)
        if structures is not None:
            prediction.structure = structures[pos]
        space = self.data.label_space(name)
        if space.binary:
            prediction.truth = space.map_ids(prediction.truth, classes)
            prediction.pred = space.map_ids(prediction.pred, classes)
            if prediction.support_classes is not None:
                prediction.support_classes = space.map_ids(prediction.support_classes, classes)
            prediction.class_names = list(space.classes)
            return classification_metrics(prediction.truth, prediction.pred, list(space.classes)), prediction
        return classification_metrics(prediction.truth, prediction.pred, classes), prediction

    # -------------------------------------------------------------------------------- few-shot scoring

    def _support_pick(self, trained: Trained, v: TestVariant, k: int | None) -> tuple[str, np.ndarray, np.ndarray]:
        """(support dataset, positions, class ids) of the k supports per class of a test (the same shots for every
        model of a seed)."""
        assert v.spec.support is not None
        spos = self.data.part(v.spec.support)
        slab = self.data.labelled(v.spec.support.dataset)
        seed = _seed(trained.job.seed, "kshot", str(v.spec.support))
        pick = spos[pick_per_class(slab.classes[spos], int(self.support_k(trained.job, v, k) or 1), seed)]
        return v.spec.support.dataset, pick, slab.classes[pick]

    def _checkpoints(self, trained: Trained) -> list[tuple[str, Any]]:
        """(name, bundle) of the checkpoints a Siamese model may choose from: the best one, and with ``select``
        the kept epochs (``train.keep_every``) in epoch order."""
        out = [("best", trained.obj)]
        if trained.job.model.select is None or trained.folder is None:
            return out
        from .checkpoint import ModelBundle

        for path in sorted((trained.folder / "epochs").glob("epoch-*.pt")):
            if path not in self._bundles:
                self._bundles[path] = ModelBundle.load(path, self.device)
            out.append((path.stem, self._bundles[path]))
        return out

    def _network(self, trained: Trained, ckpt: str, bundle: Any, v: TestVariant, cache: dict) -> torch.nn.Module:
        """The network of a checkpoint, its batch-norm statistics re-estimated on the frames of the test's dataset
        (all its shots with data, labels unused) when the model asks for ``adapt_bn``."""
        if not trained.job.model.adapt_bn:
            return bundle.model
        key = ("adabn", id(trained), ckpt, v.spec.data.dataset, v.perturb)
        if key not in cache:
            import copy

            from .adapt import adapt_batchnorm, image_batches

            name = v.spec.data.dataset
            allpos = self.data.part(PartRef(name))
            allpos = allpos[self.data.has_data(name, allpos, v.perturb)]
            net = copy.deepcopy(bundle.model)
            adapt_batchnorm(net, image_batches(self.data.images(name, allpos, v.perturb),
                                               self.study.evaluation.batch_size), self.device)
            cache[key] = net
        return cache[key]

    def _score_siamese(self, trained: Trained, v: TestVariant, k: int | None, cache: dict, name: str,
                       pos: np.ndarray, truth: np.ndarray) -> Prediction:
        """Few-shot predictions of a Siamese model; with ``select`` the checkpoint (and with ``rule: auto`` the
        rule) chosen by leave-one-out over the supports, with ``min_ratio: auto`` the ratio test set from them. The
        supports' leave-one-out accuracy is kept as the record's estimate."""
        from .fewshot import FewShotClassifier, embed_images, log_distance_ratio
        from .selection import SELECTION_RULES, Candidate, ratio_from_supports, select_candidate

        m = trained.job.model
        classes = self.data.classes
        single = np.array([is_single_class(c) for c in classes], dtype=bool)
        sname, pick, s_cls = self._support_pick(trained, v, k)
        present = np.unique(s_cls)
        remap = {int(c): i for i, c in enumerate(present)}
        local_cls = np.array([remap[int(c)] for c in s_cls], dtype=np.int64)
        local_names = [classes[c] for c in present]
        binary = self.data.label_space(v.spec.data.dataset).binary
        rules = list(SELECTION_RULES) if m.rule == "auto" else [m.rule]
        s_imgs = self.data.images(sname, pick, v.perturb)
        cands, nets = [], []
        for ckpt, bundle in self._checkpoints(trained):
            net = self._network(trained, ckpt, bundle, v, cache)
            s_emb = embed_images(net, s_imgs, device=self.device)
            for rule in rules:
                cands.append(Candidate(ckpt, s_emb, rule))
                nets.append((ckpt, net))
        fixed_ratio = None if m.min_ratio == "auto" else m.min_ratio
        sel = select_candidate(cands, local_cls, local_names, binary=binary, min_ratio=fixed_ratio)
        chosen = sel.chosen
        ckpt, net = nets[sel.best]
        ratio = fixed_ratio
        if m.min_ratio == "auto":
            loo = sel.results[sel.best]
            ratio = ratio_from_supports(loo.single_score, np.array([is_single_class(c) for c in loo.truth]))
            if ratio is not None and ratio > 1:
                from .selection import leave_one_out

                sel.results[sel.best] = leave_one_out(chosen.embeddings, local_cls, local_names, chosen.rule,
                                                      min_ratio=ratio, binary=binary)
        qkey = ("emb", id(trained), ckpt, v.name)
        if qkey not in cache:
            cache[qkey] = embed_images(net, self.data.images(name, pos, v.perturb),
                                       batch=self.study.evaluation.batch_size, device=self.device)
        q = cache[qkey]
        s_emb = torch.as_tensor(chosen.embeddings)
        clf = FewShotClassifier(s_emb, torch.from_numpy(local_cls), local_names, rule=chosen.rule, min_ratio=ratio)
        pred_local, dist = clf.predict(q)
        pl = pred_local.numpy()
        pred = np.where(pl < 0, -1, present[np.maximum(pl, 0)])
        single_local = single[present]
        score = None
        if single_local.any() and (~single_local).any():
            score = log_distance_ratio(dist.numpy(), single_local)
        est = sel.results[sel.best].estimate.to_dict()
        est.update(checkpoint=ckpt, rule=chosen.rule, min_ratio=ratio)
        return Prediction(truth, pred, score, q.numpy(), s_emb.numpy(), s_cls, estimate=est)

    def _score_photons(self, trained: Trained, v: TestVariant, k: int | None, name: str, pos: np.ndarray,
                       truth: np.ndarray) -> Prediction:
        """The photon-count baseline: a threshold or band on photons per shot fitted on the supports; its
        leave-one-out accuracy on the supports (refitted without each) is the record's estimate."""
        from .baselines import PhotonCountRule
        from .selection import Estimate

        classes = self.data.classes
        sname, pick, s_cls = self._support_pick(trained, v, k)
        s_single = np.array([is_single_class(classes[c]) for c in s_cls], dtype=bool)
        if s_single.all() or not s_single.any():
            raise ConfigError(f"models.{trained.job.model.name}: the supports of test {v.spec.name} need single "
                              "hits and other shots for the photon-count baseline")
        rule_name = trained.job.model.config.get("rule", "band")
        s_ph = self.data.photons(sname, pick, v.perturb)
        rule = PhotonCountRule(rule_name).fit(s_ph, s_single)
        ph = self.data.photons(name, pos, v.perturb)
        is_single = rule.predict(ph)
        single_id = int(np.bincount(s_cls[s_single]).argmax())
        other_id = (classes.index(NOT_SINGLE) if NOT_SINGLE in classes and self.data.label_space(name).binary
                    else int(np.bincount(s_cls[~s_single]).argmax()))
        pred = np.where(is_single, single_id, other_id)
        right = scored = 0
        for i in range(len(pick)):  # leave-one-out on the supports
            rest = np.arange(len(pick)) != i
            if s_single[rest].all() or not s_single[rest].any():
                continue
            scored += 1
            right += int(PhotonCountRule(rule_name).fit(s_ph[rest], s_single[rest]).predict(s_ph[i : i + 1])[0]
                         == s_single[i])
        est = Estimate(right, scored, f"leave-one-out over {scored} supports").to_dict()
        est.update(rule=rule_name, rule_text=rule.describe())
        return Prediction(truth, pred, rule.score(ph), estimate=est)

    def throughput(self, trained: Trained, v: TestVariant) -> ThroughputRecord | None:
        """Time predictions from raw frames (preprocessing or features included) on the first test shots."""
        from .metrics import measure_throughput
        from .preprocess import Preprocessor

        n = self.study.evaluation.throughput_shots
        if n == 0 or trained.kind == "photons":
            return None
        name = v.spec.data.dataset
        pos = self._test_positions(v)[:n]
        frames, _ = self.data.frames(name, pos, Perturbation())
        bs = self.study.evaluation.batch_size
        batches = [frames[i : i + bs] for i in range(0, len(frames), bs)]
        path = self.data.file(name)
        geo = self.data.geometry(path)
        if trained.kind == "classical":
            ext = trained.obj.extractor(geo.frame_shape, geo.pixel_position, geo.mask,
                                        self.study.preprocess.photon_scale)

            def predict(b: np.ndarray) -> Any:
                return trained.obj.predict_proba(ext(b)).argmax(axis=1)
        else:
            pre = Preprocessor.from_geometry(self.study.preprocess, geo.frame_shape, geo.pixel_position,
                                             geo.mask).to(self.device)
            if trained.kind == "siamese":
                from .fewshot import FewShotClassifier, embed_images

                model = trained.obj.model
                assert v.spec.support is not None
                spos = self.data.part(v.spec.support)
                slab = self.data.labelled(v.spec.support.dataset)
                pick = spos[pick_per_class(slab.classes[spos], min(self.study.plot_k, self._pool_min(v.spec.support)),
                                           0)]
                s_emb = embed_images(model, self.data.images(v.spec.support.dataset, pick), device=self.device)
                present, s_cls = np.unique(slab.classes[pick], return_inverse=True)
                clf = FewShotClassifier(s_emb.to(self.device), torch.from_numpy(s_cls), [str(c) for c in present],
                                        rule=trained.job.model.rule if trained.job.model.rule in RULES else "nearest",
                                        min_ratio=trained.job.model.min_ratio
                                        if isinstance(trained.job.model.min_ratio, float) else None)
                net = model
            else:
                net = trained.obj.net
            net.eval()

            @torch.no_grad()
            def predict(b: np.ndarray) -> Any:
                out = net(pre(torch.from_numpy(b).to(self.device)))
                out = clf.predict(out)[0] if trained.kind == "siamese" else out.argmax(1)
                return out.cpu()
        t = measure_throughput(predict, batches, min_seconds=0.2)
        return ThroughputRecord(trained.job.model.name, trained.kind, trained.job.source.name, self.device,
                                torch.get_num_threads(), t.shots_per_s, t.seconds_per_batch, t.batch_size, t.n_shots)

    # -------------------------------------------------------------------------------- the whole study

    def run(self) -> StudyResults:
        """Simulate, train, score; returns the results (the report is written by :mod:`spinet.report`)."""
        from datetime import UTC, datetime

        t0 = time.perf_counter()
        self.cache.mkdir(parents=True, exist_ok=True)
        s = self.study
        for name, spec in s.datasets.items():
            if spec.simulated:
                self.progress(f"simulating {name}", 0)
                self.data.file(name)
                self.progress(f"simulated {name}", 1)
        for t in s.tests.values():
            if t.sweep_key == "fluence_scale" and s.datasets[t.data.dataset].simulated:
                for value in t.sweep_values:
                    self.progress(f"simulating {t.data.dataset} at fluence ×{value:g}", 0)
                    self.data.file(t.data.dataset, value)
                    if t.support is not None and s.datasets[t.support.dataset].simulated:
                        self.data.file(t.support.dataset, value)
                    self.progress("simulated", 1)
        classes = self.data.prepare()
        self.say(f"classes: {', '.join(classes)}")
        human = human_records(s, classes)  # checked before training: a class unknown to the study stops here
        records: list[RunRecord] = []
        predictions: dict[tuple, Prediction] = {}
        throughput: list[ThroughputRecord] = []
        logs: dict[str, list[dict]] = {}
        first_seed = s.seeds[0]
        variants = s.variants()
        shared = {m.embedding for m in s.models if m.embedding is not None} | {
            m.init for m in s.models if m.init is not None}
        networks = self._networks
        notes = self.k_notes()
        for line in notes:
            self.say(f"warning: {line}")
        done: dict[tuple, RunRecord] = {}
        asked: dict[tuple, list[int]] = {}
        for job in self.jobs():
            todo = []
            evals = self.evaluations(job)
            for v, k in evals:
                rk = self.record_k(job, v, k)
                key = (job.model.name, job.source.name, v.name, rk, job.seed)
                if key in asked:  # the same shots as an earlier k: that record answers this k too
                    if k is not None:
                        asked[key].append(int(k))
                    continue
                asked[key] = [] if k is None else [int(k)]
                todo.append((v, k, rk, key))
            if not todo:  # every k of this job draws what an earlier job drew: nothing new to train
                self.progress(f"skipped {job.label}: the same shots as a smaller k", 1 + len(evals))
                continue
            self.progress(f"training {job.label}", 0)
            net_key = (job.source.name, job.seed, self.job_k(job))
            if job.model.embedding is not None:
                ref = networks[(job.model.embedding, *net_key)]
                trained = Trained(job, ref.kind, ref.obj, ref.n_train, ref.seconds, ref.log, ref.folder)
            elif job.model.kind == "photons":
                trained = Trained(job, "photons", None, 0, 0.0, [])
            else:
                trained = self.train(job)
                if job.model.name in shared:
                    networks[(job.model.name, *net_key)] = trained
            logs[job.label] = trained.log
            self.progress(f"trained {job.label}", 1 + len(evals) - len(todo))
            cache: dict = {}
            for v, k, rk, key in todo:
                self.progress(f"scoring {job.model.name}/{job.source.name} on {v.name}"
                              + (f", k={rk}" if rk else ""), 0)
                metrics, pred = self.score(trained, v, k, cache)
                names = pred.class_names or classes
                rec = RunRecord(job.model.name, job.model.kind, job.source.name, v.name, v.spec.name,
                                v.perturb.key, v.perturb.value, rk, job.seed, metrics, trained.n_train,
                                trained.seconds, by_structure=None if pred.structure is None else
                                confusion_by_group(pred.structure, pred.truth, pred.pred, len(names)),
                                single_recall_at_98=_recall_at_98(pred, names), estimate=pred.estimate)
                records.append(rec)
                done[key] = rec
                if job.seed == first_seed and (rk is None or rk == self._plot_record_k(job, v)):
                    if trained.kind != "siamese":
                        pred.embeddings = None
                    pred.k = rk
                    predictions[(job.model.name, job.source.name, v.name, rk)] = pred
                self.progress("scored", 1)
            plot_job = job.k is None or self.job_k(job) == self.job_k(replace(job, k=s.plot_k))
            if job.seed == first_seed and plot_job and variants:
                plain = s.plain_variants() or variants
                rec = self.throughput(trained, plain[0])
                if rec is not None and not any(r.model == rec.model and r.source == rec.source for r in throughput):
                    throughput.append(rec)
        for test, n_bad in self.invalid.items():
            notes.append(f"test {test}: {n_bad} shots have no finite pixel where the models look: never scored")
        for key, rec in done.items():
            ks = asked[key]
            rec.k_asked = ks if ks != ([] if rec.k is None else [rec.k]) else []
        m_order = {m.name: i for i, m in enumerate(s.models)}
        s_order = {n: i for i, n in enumerate([*s.sources, SUPPORT_SOURCE])}
        v_order = {v.name: i for i, v in enumerate(variants)}
        records.sort(key=lambda r: (m_order[r.model], s_order[r.source], v_order[r.test], r.k or 0, r.seed))
        records += human
        return StudyResults(s, classes, records, predictions, throughput, self.data.summary(), logs,
                            time.perf_counter() - t0, self.device, datetime.now(UTC).isoformat(timespec="seconds"),
                            notes)

    def _plot_record_k(self, job: TrainJob, v: TestVariant) -> int | None:
        """The record k that stands for the study's plot k in a job's evaluations of ``v``."""
        if job.k is not None:
            return self.job_k(replace(job, k=self.study.plot_k))
        return self.support_k(job, v, self.study.plot_k)


def _seed(seed: int, *tags: Any) -> int:
    """A seed derived from the study seed and tags (stable across runs and Python versions)."""
    h = hashlib.sha256(json.dumps([seed, *tags]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _recall_at_98(pred: Prediction, classes: Sequence[str]) -> float:
    """Single-hit recall at 98 % precision from a prediction's single-hit score (NaN without a score)."""
    from .metrics import recall_at_precision, single_hit_pr_curve

    if pred.single_score is None:
        return float("nan")
    return recall_at_precision(single_hit_pr_curve(pred.truth, pred.single_score, classes))


def _version() -> str:
    from spisim import __version__

    return __version__


def run_study(study: Study, out: str | Path, **kwargs: Any) -> StudyResults:
    """Run a study and write its report into ``out``; returns the results (see :class:`StudyRunner`)."""
    from .report import write_report

    runner = StudyRunner(study, out, **kwargs)
    results = runner.run()
    write_report(results, out)
    return results


__all__ = [
    "Component", "DataRegistry", "DatasetSpec", "EvaluationSpec", "HumanSpec", "ModelSpec", "PartRef", "Perturbation",
    "Prediction",
    "RunRecord", "SourceSpec", "Study", "StudyResults", "StudyRunner", "TestSpec", "TestVariant",
    "ThroughputRecord", "TrainJob", "human_records", "load_study", "parse_param", "parse_study", "run_study",
]
