"""The keys of a study file, declared once with :func:`spisim.schema.key` and read with :func:`spisim.schema.build`.

Each class is one section as written in the file: the top level (:class:`StudyFile`), a dataset
(:class:`DatasetEntry`), a part of a training source (:class:`ComponentEntry`), a test set (:class:`TestEntry`,
its robustness :class:`SweepEntry`), a model (:class:`ModelEntry`: the keys every kind shares; a kind's own
``config`` is checked by its kind class) and a human baseline (:class:`HumanEntry`). Shorthands are rewritten by
``coerce`` (a test or a source part given as a string), rules across keys are ``check`` methods. What the schema
cannot say is left to :mod:`spinet.study.parse`, after building: files looked up beside the study, manifests
parsed, and references between sections (parts ``NAME:train``, source and model names). The key tables of
``docs/evaluation.md`` are generated from these declarations (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spisim.errors import ConfigError
from spisim.schema import key, reference_table

from ..config import AugmentConfig, PreprocessConfig
from ..fewshot import RULES
from .fields import as_name, as_str
from .kinds import MODEL_KINDS, SELECT_METHODS, model_kind
from .spec import SWEEP_KEYS, EvaluationSpec

LABELS = ("hit_type", "structure_hit_type")
"""What a study's classes are read from (``label``)."""

SIAMESE_KEYS = ("embedding", "adapt_bn", "unlabelled", "init", "select")
"""Keys of a model that apply to embedding (Siamese) kinds only (besides ``rule`` and ``min_ratio``)."""

EMBEDDING_TAKES = ("config", "augment", "sources", "unlabelled", "init")
"""Keys a model with ``embedding`` takes from that model (and may not set)."""


def _non_empty(obj: Any, names: tuple[str, ...], where: str) -> None:
    """Each of the string keys ``names`` of ``obj`` that is set holds more than blanks."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str):
            as_str(value, f"{where}.{name}")


@dataclass
class DatasetEntry:
    """``datasets.NAME``: labelled shots from a file (``path``) or from a simulation (``simulate``)."""

    path: str | None = key(None, kind="str", nullable=True,
                           doc="an existing CXI/HDF5 file (relative: beside the study, then the current directory)")
    labels: str | None = key(None, kind="str", nullable=True,
                             doc="label file of `path` (CSV `index,label`, the log of `spi label` or HDF5); null: the "
                                 "file's `/entry_1/labels/hit_type`")
    simulate: Any = key(None, kind="any", nullable=True,
                        doc="a manifest (`docs/manifest.md`): a file or an inline mapping, simulated once into "
                            "`REPORT_DIR/cache/data/NAME-<hash>.h5`")
    shots: int | None = key(None, kind="int", nullable=True, minimum=1, unit="shots",
                            doc="simulated: the manifest's `shots` set over it")
    seed: int | None = key(None, kind="int", nullable=True, minimum=0,
                           doc="simulated: the manifest's `seed` set over it")
    overrides: dict = key({}, kind="mapping", doc="simulated: manifest keys set over it")
    test_fraction: float = key(0.0, kind="float", minimum=0.0,
                               doc="fraction of each class held out as `NAME:test` (< 1; the rest is `NAME:train`); 0: "
                                   "no split")
    split_seed: int = key(0, kind="int", minimum=0, doc="seed of that split (the same for every seed and model)")
    max_shots: int | None = key(None, kind="int", nullable=True, minimum=1, unit="shots",
                                doc="use only the first labelled shots; null: all")
    rename: dict = key({}, kind="mapping",
                       doc="label names of the file → class names of the study (null drops the label), e.g. "
                           "`{multiple: multi, unsure: null}`")
    binary: bool = key(False, kind="bool",
                       doc="relabel single / not_single: every class but `single` becomes `not_single` (after "
                           "`rename`)")

    def check(self, where: str, raw: Any) -> None:
        if (self.path is None) == (self.simulate is None):
            raise ConfigError(f"{where}: give exactly one of path (a CXI/HDF5 file) and simulate (a manifest)")
        _non_empty(self, ("path", "labels"), where)
        if self.path is not None:
            for name in ("shots", "seed"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{where}.{name} applies to simulated datasets only")
            if self.overrides:
                raise ConfigError(f"{where}.overrides applies to simulated datasets only")
        else:
            if self.labels is not None:
                raise ConfigError(f"{where}.labels applies to files; a simulated dataset has its labels inside")
            if not isinstance(self.simulate, dict):
                as_str(self.simulate, f"{where}.simulate")
        if self.test_fraction >= 1:
            raise ConfigError(f"{where}.test_fraction must lie in [0, 1), got {self.test_fraction}")
        for label, name in self.rename.items():
            if name is not None:
                self.rename[label] = as_str(name, f"{where}.rename.{label}")
        self.rename = {str(k): v for k, v in self.rename.items()}


@dataclass
class ComponentEntry:
    """``sources.NAME[i]``: one part of a training source (a string ``PART`` is ``{data: PART}``)."""

    data: str = key(kind="str", doc="a dataset part: `NAME` (all its labelled shots), `NAME:train` or `NAME:test`")
    per_class: int | str | None = key(None, kind="int", nullable=True, minimum=1, choices=("k",), unit="shots",
                                      doc="shots taken per class (`k`: each k of `k_shots`, a model trained for "
                                          "each); null: all, less `evaluation.val_fraction` for early stopping")
    weight: float = key(1.0, kind="float", minimum=0.0, exclusive=True,
                        doc="share of this part within each class of a batch, relative to the others")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        return {"data": raw} if isinstance(raw, str) else raw

    def check(self, where: str, raw: Any) -> None:
        _non_empty(self, ("data",), where)


@dataclass
class SweepEntry:
    """``tests.NAME.sweep``: one robustness sweep (one of its keys, with a list of values)."""

    fluence_scale: list[float] | None = key(None, kind="list", item="float", nullable=True, minimum=0.0,
                                            exclusive=True,
                                            doc="the test and support shots at each scale × the fluence (> 0)")
    missing_fraction: list[float] | None = key(None, kind="list", item="float", nullable=True, minimum=0.0,
                                               doc="an angular sector of each fraction of the detector lost, at a "
                                                   "random angle per shot (< 1)")

    def check(self, where: str, raw: Any) -> None:
        given = [(k, v) for k in SWEEP_KEYS if (v := getattr(self, k)) is not None]
        if len(given) != 1:
            raise ConfigError(f"{where}: give one of {', '.join(SWEEP_KEYS)} with a list of values")
        (name, values), = given
        if not values:
            raise ConfigError(f"{where}.{name} must be a non-empty list of values")
        if name == "missing_fraction" and not all(v < 1 for v in values):
            raise ConfigError(f"{where}.missing_fraction values must lie in [0, 1)")

    @property
    def sweep(self) -> tuple[str, list[float]]:
        """(the key swept, its values)."""
        name = "fluence_scale" if self.fluence_scale is not None else "missing_fraction"
        return name, list(getattr(self, name))


@dataclass
class TestEntry:
    """``tests.NAME``: the shots scored and where supports come from (a string ``PART`` is ``{data: PART}``)."""

    __test__ = False  # not a pytest class

    data: str = key(kind="str", doc="the dataset part scored, e.g. `heldout:test`")
    support: str | None = key(None, kind="str", nullable=True,
                              doc="the part the k supports per class are drawn from (required with few-shot models; "
                                  "must not overlap `data`)")
    sweep: SweepEntry | None = key(None, kind="section", cls=SweepEntry, nullable=True,
                                   doc="one robustness sweep; null: none")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        return {"data": raw} if isinstance(raw, str) else raw

    def check(self, where: str, raw: Any) -> None:
        _non_empty(self, ("data", "support"), where)


@dataclass
class ModelEntry:
    """``models[i]``: the keys every kind of model shares (its ``config`` is checked by its kind)."""

    name: str | None = key(None, kind="str", nullable=True,
                           doc="shown in the report (unique among models and human baselines); null: the kind")
    kind: str = key(kind="choice", choices=MODEL_KINDS, doc="the kind of model (see Models)")
    config: dict = key({}, kind="mapping", doc="the kind's own settings (see `models[].config` below)")
    rule: str = key("mean", kind="choice", choices=(*RULES, "auto"),
                    doc="siamese: the few-shot rule (see Models); `auto` (with `select: loo`): chosen by "
                        "leave-one-out over the supports")
    augment: dict = key({}, kind="mapping", doc="keys of the study's `augment` set over it for this model")
    sources: list[str] | None = key(None, kind="list", item="str", nullable=True,
                                    doc="names of the training sources this model is trained on; null: all")
    embedding: str | None = key(None, kind="str", nullable=True,
                                doc="siamese: an earlier siamese model whose trained networks this one scores with its "
                                    "own rule (nothing trained)")
    min_ratio: float | str | None = key(None, kind="float", nullable=True, minimum=1.0, choices=("auto",),
                                        doc="siamese: the ratio test (≥ 1; `auto`: set from the supports); null: none")
    adapt_bn: bool = key(False, kind="bool",
                         doc="siamese: batch-norm statistics re-estimated on the test's dataset before scoring")
    unlabelled: str | None = key(None, kind="str", nullable=True,
                                 doc="siamese: a dataset part whose frames (labels unused) feed `config.adapt`")
    init: str | None = key(None, kind="str", nullable=True,
                           doc="siamese: an earlier siamese model whose network starts this model's training")
    select: str | None = key(None, kind="choice", choices=SELECT_METHODS, nullable=True,
                             doc="siamese: `loo`: checkpoint (and with `rule: auto` the rule) chosen by leave-one-out "
                                 "over the supports; null: the best checkpoint")

    def check(self, where: str, raw: Any) -> None:
        self.name = as_name(self.name if self.name is not None else self.kind, f"{where}.name")
        kind = model_kind(self.kind)
        if self.augment and not kind.augments:
            raise ConfigError(f"{where}.augment: the {kind.title} is {'trained' if kind.trains else 'fitted'} "
                              "without augmentation")
        if not kind.embeds:
            for name in SIAMESE_KEYS:
                if getattr(self, name) not in (None, False):
                    raise ConfigError(f"{where}.{name} applies to siamese models only")
            for name in ("rule", "min_ratio"):
                if name in raw:
                    raise ConfigError(f"{where}.{name} applies to siamese models only")
        if self.embedding is not None:
            for name in EMBEDDING_TAKES:
                if getattr(self, name):
                    raise ConfigError(f"{where}.{name}: a model with embedding takes the {name} of that model")
            self.embedding = as_name(self.embedding, f"{where}.embedding")
        if self.rule == "auto" and self.select is None:
            raise ConfigError(f"{where}.rule: auto needs select: loo (else one of {', '.join(RULES)})")
        if self.sources is not None and not self.sources:
            raise ConfigError(f"{where}.sources must be a non-empty list of training source names")
        if self.init is not None:
            self.init = as_name(self.init, f"{where}.init")
        _non_empty(self, ("unlabelled",), where)


@dataclass
class HumanEntry:
    """``human[i]``: a person's scores from ``spi label --game``, shown beside the models."""

    name: str = key(kind="str", doc="shown in the model column (unique among models and human baselines)")
    results: str = key(kind="str", doc="the `LABELS.results.json` that `spi label --game` writes beside its label "
                                       "file (relative to the study file)")
    test: str = key(kind="str", doc="the test set whose row it joins")

    def check(self, where: str, raw: Any) -> None:
        self.name = as_name(self.name, f"{where}.name")
        _non_empty(self, ("results", "test"), where)


@dataclass
class StudyFile:
    """The top level of a study file."""

    name: str | None = key(None, kind="str", nullable=True, doc="shown in the report; null: the file name")
    description: str | None = key(None, kind="str", nullable=True, doc="what the study is for")
    parameters: dict = key({}, kind="mapping",
                           doc="name → default of the values `${name}` takes anywhere below (null: must be given "
                               "with `--param`)")
    seeds: list[int] = key([0], kind="list", item="int", minimum=0,
                           doc="seeds, or a count N of them (0 … N−1); each trains every model again")
    k_shots: list[int] = key([1, 5, 10, 20], kind="list", item="int", minimum=1, unit="shots",
                             doc="supports per class of the few-shot models (and `per_class: k` training parts)")
    label: str = key("hit_type", kind="choice", choices=LABELS,
                     doc="what the classes are: the hit type, or `<structure>/<hit type>`")
    classes: list[str] | None = key(None, kind="list", item="str", nullable=True,
                                    doc="restricts and orders the classes (at least two); null: every class found")
    preprocess: PreprocessConfig = key(kind="section", cls=PreprocessConfig,
                                       doc="spinet preprocessing shared by all models (`docs/spinet.md`)")
    augment: AugmentConfig = key(kind="section", cls=AugmentConfig,
                                 doc="training augmentation (`docs/spinet.md`); a model's `augment` sets keys over it")
    datasets: dict = key({}, kind="section_map", cls=DatasetEntry, doc="named datasets (at least one; table below)")
    sources: dict = key({}, kind="mapping",
                        doc="named training sources (at least one): a dataset part, `{data, per_class, weight}` or a "
                            "list of them (table below)")
    tests: dict = key({}, kind="section_map", cls=TestEntry, doc="named test sets (at least one; table below)")
    models: list = key([], kind="section_list", cls=ModelEntry, doc="the models compared (at least one; table below)")
    evaluation: EvaluationSpec = key(kind="section", cls=EvaluationSpec, doc="how runs are made (table below)")
    human: list = key([], kind="section_list", cls=HumanEntry, doc="human baselines (table below)")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        """``seeds: N`` → ``[0, …, N−1]``."""
        seeds = raw.get("seeds") if isinstance(raw, dict) else None
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ConfigError(f"seeds must be >= 1, got {seeds!r}")
            return {**raw, "seeds": list(range(seeds))}
        return raw

    def check(self, where: str, raw: Any) -> None:
        if self.name is not None:
            self.name = as_str(self.name, "name")
        if not self.seeds:
            raise ConfigError("seeds must be a number of seeds or a non-empty list of seeds")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds has duplicates: {self.seeds}")
        if not self.k_shots:
            raise ConfigError("k_shots must be a non-empty list of shots per class, e.g. [1, 5, 10, 20]")
        self.k_shots = sorted(set(self.k_shots))
        if self.classes is not None:
            self.classes = [as_str(c, f"classes[{i}]") for i, c in enumerate(self.classes)]
            if len(self.classes) < 2:
                raise ConfigError("classes must be a list of at least two class names")
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"classes has duplicates: {self.classes}")
        self.description = (self.description or "").strip()
        for section, hint in (("datasets", "named dataset (path: FILE or simulate: MANIFEST)"),
                              ("sources", "named training source (a list of dataset parts)"),
                              ("tests", "named test set (data: PART, support: PART)")):
            if not getattr(self, section):
                raise ConfigError(f"{section}: give at least one {hint}")
            for n in getattr(self, section):
                as_name(n, section)
        if not self.models:
            raise ConfigError(f"models: give a list of models (kind: {', '.join(MODEL_KINDS)})")
        if self.evaluation.plot_k is not None and self.evaluation.plot_k not in self.k_shots:
            raise ConfigError(f"evaluation.plot_k {self.evaluation.plot_k} is not one of k_shots {self.k_shots}")


TABLES: tuple[tuple[str, type, str, bool], ...] = (
    ("The top level", StudyFile, "", False),
    ("`datasets.NAME`", DatasetEntry, "datasets.NAME", True),
    ("`sources.NAME`: each part", ComponentEntry, "sources.NAME[]", True),
    ("`tests.NAME`", TestEntry, "tests.NAME", True),
    ("`models[]`: the keys every kind shares", ModelEntry, "models[]", True),
    ("`human[]`", HumanEntry, "human[]", True),
)
"""(heading, declaration, key path, nested) of the key tables of ``docs/evaluation.md``."""


def reference_markdown() -> str:
    """The key tables of a study file for ``docs/evaluation.md`` (kept equal to the declarations by a test)."""
    return "\n".join(f"{title}:\n\n{reference_table(cls, nested, where)}" for title, cls, where, nested in TABLES)

