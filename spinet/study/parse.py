"""Reading a study file: parameters substituted, every section built from its declaration
(:mod:`spinet.study.sections`, with :func:`spisim.schema.build`), then resolved into :mod:`spinet.study.spec`.

Every mistake raises :class:`spisim.errors.ConfigError` (a missing file :class:`~spisim.errors.InputFileError`)
in one line naming the key, e.g. ``models[1].kind: 'svm' is not one of siamese, cnn, ...``. After building, what
the declarations cannot say is checked here: files looked up beside the study, manifests parsed, and references
between sections (parts ``NAME:train``, training source and model names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spisim.errors import ConfigError
from spisim.schema import build, did_you_mean, project, read_text, read_yaml

from ..config import PreprocessConfig
from .fields import augment_config, parse_part, resolve_file
from .human import parse_human
from .kinds import model_kind, trains_own, uses_supports
from .sections import ComponentEntry, DatasetEntry, HumanEntry, ModelEntry, StudyFile, TestEntry
from .spec import Component, DatasetSpec, ModelSpec, SourceSpec, Study, TestSpec

_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


def _dataset(name: str, e: DatasetEntry, base_dir: Path, where: str) -> DatasetSpec:
    """``datasets.NAME`` resolved: its files found, its manifest read and checked with its overrides."""
    spec = DatasetSpec(name, test_fraction=e.test_fraction, split_seed=e.split_seed, max_shots=e.max_shots,
                       rename=dict(e.rename), binary=e.binary)
    if e.path is not None:
        spec.path = resolve_file(e.path.strip(), base_dir, f"{where}.path")
        if e.labels is not None:
            spec.labels = resolve_file(e.labels.strip(), base_dir, f"{where}.labels")
        return spec
    if isinstance(e.simulate, dict):
        spec.manifest = yaml.safe_dump(e.simulate, sort_keys=False)
        spec.manifest_source = f"study:{where}.simulate"
        spec.manifest_dir = base_dir
    else:
        path = resolve_file(e.simulate.strip(), base_dir, f"{where}.simulate")
        spec.manifest = read_text(path, "manifest file")
        spec.manifest_source = str(path)
        spec.manifest_dir = path.parent
    over = dict(e.overrides)
    for k in ("shots", "seed"):
        if getattr(e, k) is not None:
            over[k] = getattr(e, k)
    spec.overrides = over
    from spisim.manifest import parse_manifest

    parse_manifest(spec.manifest, source=spec.manifest_source, base_dir=spec.manifest_dir, overrides=over)
    return spec


def _source(name: str, comps: Any, datasets: dict[str, DatasetSpec]) -> SourceSpec:
    """``sources.NAME``: a part, ``{data, per_class, weight}`` or a list of them."""
    where = f"sources.{name}"
    comps = [comps] if isinstance(comps, str | dict) else comps
    if not isinstance(comps, list) or not comps:
        raise ConfigError(f"{where} must be a dataset part or a list of them")
    out = []
    for i, c in enumerate(comps):
        here = f"{where}[{i}]"
        e = build(ComponentEntry, c, here)
        part = parse_part(e.data, datasets, here if isinstance(c, str) else f"{here}.data")
        out.append(Component(part, e.per_class, e.weight))
    return SourceSpec(name, out)


def _test(name: str, e: TestEntry, short: bool, datasets: dict[str, DatasetSpec], where: str) -> TestSpec:
    """``tests.NAME`` resolved (``short``: given as a string, the part scored)."""
    t = TestSpec(name, parse_part(e.data, datasets, where if short else f"{where}.data"))
    if e.support is not None:
        t.support = parse_part(e.support, datasets, f"{where}.support")
        if t.support == t.data or (t.support.dataset == t.data.dataset and "all" in (t.support.part, t.data.part)):
            raise ConfigError(f"{where}: support and data overlap ({t.support} and {t.data}): "
                              "split the dataset (test_fraction) and use NAME:train and NAME:test")
    if e.sweep is not None:
        t.sweep_key, t.sweep_values = e.sweep.sweep
    return t


def _model(e: ModelEntry, preprocess: PreprocessConfig, datasets: dict[str, DatasetSpec], where: str) -> ModelSpec:
    """One ``models[i]`` resolved: its ``unlabelled`` part found, its kind's ``config`` and its ``augment`` checked."""
    unlabelled = None if e.unlabelled is None else parse_part(e.unlabelled, datasets, f"{where}.unlabelled")
    m: ModelSpec = project(ModelSpec, e, unlabelled=unlabelled)
    model_kind(m.kind).check_config(m, preprocess, where)
    if m.augment:
        augment_config({}, m.augment, f"{where}.augment")
    return m


def _parameters(raw: dict, params: dict[str, Any] | None) -> tuple[dict, dict]:
    """(declared parameters with their defaults, their values with ``params`` set on top)."""
    declared = raw.get("parameters") or {}
    if not isinstance(declared, dict):
        raise ConfigError("parameters must be a mapping of name: default (null for none)")
    values = dict(declared)
    for key, value in (params or {}).items():
        if key not in declared:
            raise ConfigError(f"unknown parameter {key!r}{did_you_mean(key, list(declared))}; this study takes: "
                              f"{', '.join(declared) or 'none'}")
        values[key] = value
    return declared, values


def _model_sources(models: list[ModelSpec], sources: dict[str, SourceSpec]) -> None:
    """``models[i].sources`` name training sources."""
    for i, m in enumerate(models):
        for n in m.sources or []:
            if n not in sources:
                raise ConfigError(f"models[{i}].sources: no training source {n!r}{did_you_mean(str(n), list(sources))}")


def _link_models(models: list[ModelSpec]) -> None:
    """``embedding`` and ``init`` name earlier Siamese models that train their own networks; a model with
    ``embedding`` takes that model's config, augmentation, sources, unlabelled part and init."""
    for i, m in enumerate(models):
        if m.embedding is None:
            continue
        earlier = {x.name: x for x in models[:i]}
        ref = earlier.get(m.embedding)
        if ref is None or not model_kind(ref.kind).embeds or ref.embedding is not None:
            raise ConfigError(f"models[{i}].embedding: no earlier siamese model {m.embedding!r} that trains its own "
                              f"network{did_you_mean(m.embedding, [x.name for x in earlier.values()])}")
        m.config, m.augment, m.sources = ref.config, ref.augment, ref.sources
        m.unlabelled, m.init = ref.unlabelled, ref.init
    for i, m in enumerate(models):
        if m.init is None:
            continue
        earlier = {x.name: x for x in models[:i]}
        ref = earlier.get(m.init)
        if ref is None or not model_kind(ref.kind).embeds or not trains_own(ref):
            raise ConfigError(f"models[{i}].init: no earlier siamese model {m.init!r} that trains its own network"
                              f"{did_you_mean(m.init, list(earlier))}")
        if ref.config.get("model", {}) != m.config.get("model", {}):
            raise ConfigError(f"models[{i}].init: {m.init}'s network (config.model) differs from this model's")


def _models(entries: list[ModelEntry], preprocess: PreprocessConfig, datasets: dict[str, DatasetSpec],
            sources: dict[str, SourceSpec], tests: dict[str, TestSpec]) -> list[ModelSpec]:
    models = [_model(e, preprocess, datasets, f"models[{i}]") for i, e in enumerate(entries)]
    _model_sources(models, sources)
    _link_models(models)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names must be unique, got {names} (set name: on each)")
    if any(uses_supports(m) for m in models):
        for t in tests.values():
            if t.support is None:
                raise ConfigError(f"tests.{t.name}.support is required with few-shot (siamese) models: the part "
                                  "the k labelled support shots per class are drawn from")
    return models


def _human(entries: list[HumanEntry], base: Path, tests: dict[str, TestSpec], models: list[ModelSpec]) -> list:
    human = [parse_human(h, base, tests, f"human[{i}]") for i, h in enumerate(entries)]
    all_names = [m.name for m in models] + [h.name for h in human]
    if len(set(all_names)) != len(all_names):
        raise ConfigError(f"human: names must differ from each other and from the models', got {all_names}")
    return human


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
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study is a mapping (name, datasets, sources, tests, models ...)")
    declared, values = _parameters(raw, params)
    body = _substitute({k: v for k, v in raw.items() if k != "parameters"}, values, set(), "")
    f: StudyFile = build(StudyFile, {**body, "parameters": declared}, "")
    datasets = {n: _dataset(n, e, base, f"datasets.{n}") for n, e in f.datasets.items()}
    sources = {str(n): _source(str(n), c, datasets) for n, c in f.sources.items()}
    short = {str(n): isinstance(t, str) for n, t in body["tests"].items()}
    tests = {n: _test(n, e, short[n], datasets, f"tests.{n}") for n, e in f.tests.items()}
    models = _models(list(f.models), f.preprocess, datasets, sources, tests)
    human = _human(list(f.human), base, tests, models)
    return Study(name=f.name or Path(source).stem, description=f.description, source=source, base_dir=base,
                 parameters={k: values[k] for k in declared}, seeds=f.seeds, k_shots=f.k_shots, label=f.label,
                 classes=f.classes, preprocess=f.preprocess, augment=f.augment, datasets=datasets,
                 sources=sources, tests=tests, models=models, evaluation=f.evaluation, raw=raw, human=human)


def load_study(path: str | Path, params: dict[str, Any] | None = None) -> Study:
    """Read and validate a study YAML file (relative names inside are looked up beside it, then in the cwd).

    Args:
        path: the study file (UTF-8).
        params: values of its ``parameters``; strings are parsed as YAML scalars (``3`` → 3).
    """
    p = Path(path)
    raw = read_yaml(p, "study file")
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
