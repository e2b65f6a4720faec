"""Evaluation studies: which models, trained on which data, tested on which shots, with how many supports.

A study is a YAML file (schema in ``docs/evaluation.md``; :func:`load_study` validates it and every mistake
raises :class:`spisim.errors.ConfigError` naming the key). :class:`StudyRunner` runs it:

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
5. the records (:mod:`spinet.records`) go to :mod:`spinet.report` (``spi evaluate`` calls both).

The pipeline, one module each::

    spec        the validated study (dataclasses)           parse      study file -> spec (fields: value readers)
    registry    datasets: files, labels, parts, images      perturb    fluence resampling, lost detector area
    kinds       one class per model kind (KINDS registry)   human      human baselines
    runner      plan, k, training, scoring -> StudyResults
"""

from ..records import (
    HUMAN_KIND,
    HUMAN_SOURCE,
    NEUTRAL_SWEEP_VALUES,
    SUPPORT_SOURCE,
    Perturbation,
    Prediction,
    RunRecord,
    StudyResults,
    ThroughputRecord,
    label_space_name,
)
from .human import human_records
from .kinds import KINDS, MODEL_KINDS, SELECT_METHODS, ModelKind, model_kind
from .parse import load_study, parse_param, parse_study
from .perturb import missing_area_weights, resample_fluence
from .registry import DataRegistry
from .runner import StudyRunner, Trained, TrainJob
from .spec import (
    PARTS,
    SWEEP_KEYS,
    Component,
    DatasetSpec,
    EvaluationSpec,
    HumanSpec,
    ModelSpec,
    PartRef,
    ProgressFn,
    SourceSpec,
    Study,
    TestSpec,
    TestVariant,
)

__all__ = [
    "HUMAN_KIND", "HUMAN_SOURCE", "KINDS", "MODEL_KINDS", "NEUTRAL_SWEEP_VALUES", "PARTS", "SELECT_METHODS",
    "SUPPORT_SOURCE", "SWEEP_KEYS", "Component", "DataRegistry", "DatasetSpec", "EvaluationSpec", "HumanSpec",
    "ModelKind", "ModelSpec", "PartRef", "Perturbation", "Prediction", "ProgressFn", "RunRecord", "SourceSpec",
    "Study", "StudyResults", "StudyRunner", "TestSpec", "TestVariant", "ThroughputRecord", "TrainJob", "Trained",
    "human_records", "label_space_name", "load_study", "missing_area_weights", "model_kind", "parse_param",
    "parse_study", "resample_fluence",
]
