"""Reading a study file: parameters substituted, every section validated into :mod:`spinet.study.spec`.

Every mistake raises :class:`spisim.errors.ConfigError` (a missing file :class:`~spisim.errors.InputFileError`)
in one line naming the key, e.g. ``models[1].kind must be one of siamese, cnn, ...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from spisim.errors import ConfigError
from spisim.schema import build, did_you_mean, read_text, read_yaml

from ..config import Config, PreprocessConfig
from .fields import as_float, as_int, as_name, as_str, augment_config, check_keys, parse_part, resolve_file
from .human import parse_human
from .kinds import model_kind, trains_own, uses_supports
from .spec import (
    SWEEP_KEYS,
    Component,
    DatasetSpec,
    EvaluationSpec,
    ModelSpec,
    SourceSpec,
    Study,
    TestSpec,
)

TOP_KEYS = ("name", "description", "parameters", "seeds", "k_shots", "label", "classes", "preprocess", "augment",
            "datasets", "sources", "tests", "models", "evaluation", "human")
DATASET_KEYS = ("path", "labels", "simulate", "shots", "seed", "overrides", "test_fraction", "split_seed",
                "max_shots", "rename", "binary")
COMPONENT_KEYS = ("data", "per_class", "weight")
TEST_KEYS = ("data", "support", "sweep")
MODEL_KEYS = ("name", "kind", "config", "rule", "augment", "sources", "embedding", "min_ratio", "adapt_bn",
              "unlabelled", "init", "select")
SIAMESE_KEYS = ("embedding", "adapt_bn", "unlabelled", "init", "select")
"""Keys of a model that apply to embedding (Siamese) kinds only (besides ``rule`` and ``min_ratio``)."""
LABELS = ("hit_type", "structure_hit_type")
"""What a study's classes are read from (``label``)."""
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


def _parse_dataset(name: str, d: Any, base_dir: Path, where: str) -> DatasetSpec:
    check_keys(d, DATASET_KEYS, where)
    has_path, has_sim = d.get("path") is not None, d.get("simulate") is not None
    if has_path == has_sim:
        raise ConfigError(f"{where}: give exactly one of path (a CXI/HDF5 file) and simulate (a manifest)")
    spec = DatasetSpec(name)
    if has_path:
        spec.path = resolve_file(as_str(d["path"], f"{where}.path"), base_dir, f"{where}.path")
        if d.get("labels") is not None:
            spec.labels = resolve_file(as_str(d["labels"], f"{where}.labels"), base_dir, f"{where}.labels")
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
            path = resolve_file(as_str(sim, f"{where}.simulate"), base_dir, f"{where}.simulate")
            spec.manifest = read_text(path, "manifest file")
            spec.manifest_source = str(path)
            spec.manifest_dir = path.parent
        over = d.get("overrides") or {}
        if not isinstance(over, dict):
            raise ConfigError(f"{where}.overrides must be a mapping of manifest keys")
        over = dict(over)
        if d.get("shots") is not None:
            over["shots"] = as_int(d["shots"], f"{where}.shots", 1)
        if d.get("seed") is not None:
            over["seed"] = as_int(d["seed"], f"{where}.seed", 0)
        spec.overrides = over
        from spisim.manifest import parse_manifest

        parse_manifest(spec.manifest, source=spec.manifest_source, base_dir=spec.manifest_dir, overrides=over)
    if d.get("test_fraction") is not None:
        spec.test_fraction = as_float(d["test_fraction"], f"{where}.test_fraction")
        if not 0 <= spec.test_fraction < 1:
            raise ConfigError(f"{where}.test_fraction must lie in [0, 1), got {spec.test_fraction}")
    if d.get("split_seed") is not None:
        spec.split_seed = as_int(d["split_seed"], f"{where}.split_seed", 0)
    if d.get("max_shots") is not None:
        spec.max_shots = as_int(d["max_shots"], f"{where}.max_shots", 1)
    rename = d.get("rename") or {}
    if not isinstance(rename, dict):
        raise ConfigError(f"{where}.rename must map label names to class names (null drops a label)")
    spec.rename = {str(k): (None if v is None else as_str(v, f"{where}.rename.{k}")) for k, v in rename.items()}
    if d.get("binary") is not None:
        if not isinstance(d["binary"], bool):
            raise ConfigError(f"{where}.binary must be true or false, got {d['binary']!r}")
        spec.binary = d["binary"]
    return spec


def _parse_component(c: Any, datasets: dict[str, DatasetSpec], where: str) -> Component:
    if isinstance(c, str):
        return Component(parse_part(c, datasets, where))
    check_keys(c, COMPONENT_KEYS, where)
    if "data" not in c:
        raise ConfigError(f"{where}.data: missing (a dataset part such as sim or real:train)")
    per = c.get("per_class")
    if per is not None and per != "k":
        per = as_int(per, f"{where}.per_class", 1)
    weight = as_float(c.get("weight", 1.0), f"{where}.weight")
    if not weight > 0:
        raise ConfigError(f"{where}.weight must be > 0, got {weight}")
    return Component(parse_part(c["data"], datasets, where + ".data"), per, weight)


def _parse_test(name: str, d: Any, datasets: dict[str, DatasetSpec], where: str) -> TestSpec:
    if isinstance(d, str):
        return TestSpec(name, parse_part(d, datasets, where))
    check_keys(d, TEST_KEYS, where)
    if "data" not in d:
        raise ConfigError(f"{where}.data: missing (the dataset part scored, e.g. heldout:test)")
    t = TestSpec(name, parse_part(d["data"], datasets, where + ".data"))
    if d.get("support") is not None:
        t.support = parse_part(d["support"], datasets, where + ".support")
        if t.support == t.data or (t.support.dataset == t.data.dataset and "all" in (t.support.part, t.data.part)):
            raise ConfigError(f"{where}: support and data overlap ({t.support} and {t.data}): "
                              "split the dataset (test_fraction) and use NAME:train and NAME:test")
    sweep = d.get("sweep")
    if sweep is not None:
        check_keys(sweep, SWEEP_KEYS, where + ".sweep")
        if len(sweep) != 1:
            raise ConfigError(f"{where}.sweep: give one of {', '.join(SWEEP_KEYS)} with a list of values")
        (key, values), = sweep.items()
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.sweep.{key} must be a non-empty list of values")
        vals = [as_float(v, f"{where}.sweep.{key}[{i}]") for i, v in enumerate(values)]
        if key == "fluence_scale" and min(vals) <= 0:
            raise ConfigError(f"{where}.sweep.fluence_scale values must be > 0")
        if key == "missing_fraction" and not all(0 <= v < 1 for v in vals):
            raise ConfigError(f"{where}.sweep.missing_fraction values must lie in [0, 1)")
        t.sweep_key, t.sweep_values = key, vals
    return t


def _parse_evaluation(d: Any, where: str = "evaluation") -> EvaluationSpec:
    return build(EvaluationSpec, d, where)


def _parse_model(d: Any, preprocess: PreprocessConfig, where: str, datasets: dict[str, DatasetSpec]) -> ModelSpec:
    """One ``models[i]``: the keys every kind shares here, the kind's own through its class."""
    check_keys(d, MODEL_KEYS, where)
    kind_name = as_str(d.get("kind"), f"{where}.kind")
    kind = model_kind(kind_name, f"{where}.kind")
    m = ModelSpec(as_name(d.get("name", kind_name), f"{where}.name"), kind_name)
    cfg = d.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}.config must be a mapping")
    m.config = dict(cfg)
    m.augment = dict(d.get("augment") or {})
    if m.augment and not kind.augments:
        what = "trained" if kind.trains else "fitted"
        raise ConfigError(f"{where}.augment: the {kind.title} is {what} without augmentation")
    if not kind.embeds:
        for key in SIAMESE_KEYS:
            if d.get(key) not in (None, False):
                raise ConfigError(f"{where}.{key} applies to siamese models only")
        for key in ("rule", "min_ratio"):
            if key in d:
                raise ConfigError(f"{where}.{key} applies to siamese models only")
    if d.get("embedding") is not None:
        for key in ("config", "augment", "sources", "unlabelled", "init"):
            if d.get(key):
                raise ConfigError(f"{where}.{key}: a model with embedding takes the {key} of that model")
        m.embedding = as_name(d["embedding"], f"{where}.embedding")
    kind.parse(d, m, preprocess, datasets, where)
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


def _seeds(body: dict) -> list[int]:
    """``seeds``: a number of seeds (0, 1, ...) or a list of them."""
    seeds_raw = body.get("seeds", [0])
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        seeds = list(range(as_int(seeds_raw, "seeds", 1)))
    elif isinstance(seeds_raw, list) and seeds_raw:
        seeds = [as_int(s, f"seeds[{i}]", 0) for i, s in enumerate(seeds_raw)]
    else:
        raise ConfigError("seeds must be a number of seeds or a non-empty list of seeds")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds has duplicates: {seeds}")
    return seeds


def _k_shots(body: dict) -> list[int]:
    k_raw = body.get("k_shots", [1, 5, 10, 20])
    if not isinstance(k_raw, list) or not k_raw:
        raise ConfigError("k_shots must be a non-empty list of shots per class, e.g. [1, 5, 10, 20]")
    return sorted({as_int(k, f"k_shots[{i}]", 1) for i, k in enumerate(k_raw)})


def _classes(body: dict) -> list[str] | None:
    classes = body.get("classes")
    if classes is None:
        return None
    if not isinstance(classes, list) or len(classes) < 2:
        raise ConfigError("classes must be a list of at least two class names")
    classes = [as_str(c, f"classes[{i}]") for i, c in enumerate(classes)]
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes has duplicates: {classes}")
    return classes


def _datasets(body: dict, base: Path) -> dict[str, DatasetSpec]:
    ds_raw = body.get("datasets")
    if not isinstance(ds_raw, dict) or not ds_raw:
        raise ConfigError("datasets: give at least one named dataset (path: FILE or simulate: MANIFEST)")
    return {as_name(n, "datasets"): _parse_dataset(str(n), d, base, f"datasets.{n}") for n, d in ds_raw.items()}


def _sources(body: dict, datasets: dict[str, DatasetSpec]) -> dict[str, SourceSpec]:
    src_raw = body.get("sources")
    if not isinstance(src_raw, dict) or not src_raw:
        raise ConfigError("sources: give at least one named training source (a list of dataset parts)")
    sources = {}
    for n, comps in src_raw.items():
        where = f"sources.{n}"
        comps = [comps] if isinstance(comps, str | dict) else comps
        if not isinstance(comps, list) or not comps:
            raise ConfigError(f"{where} must be a dataset part or a list of them")
        sources[as_name(n, "sources")] = SourceSpec(str(n), [_parse_component(c, datasets, f"{where}[{i}]")
                                                             for i, c in enumerate(comps)])
    return sources


def _tests(body: dict, datasets: dict[str, DatasetSpec]) -> dict[str, TestSpec]:
    test_raw = body.get("tests")
    if not isinstance(test_raw, dict) or not test_raw:
        raise ConfigError("tests: give at least one named test set (data: PART, support: PART)")
    return {as_name(n, "tests"): _parse_test(str(n), d, datasets, f"tests.{n}") for n, d in test_raw.items()}


def _model_sources(models: list[ModelSpec], models_raw: list, sources: dict[str, SourceSpec]) -> None:
    """``models[i].sources``: names of training sources."""
    for i, (m, m_raw) in enumerate(zip(models, models_raw, strict=True)):
        if m_raw.get("sources") is None:
            continue
        names = m_raw["sources"]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"models[{i}].sources must be a non-empty list of training source names")
        for n in names:
            if n not in sources:
                raise ConfigError(f"models[{i}].sources: no training source {n!r}{did_you_mean(str(n), list(sources))}")
        m.sources = [str(n) for n in names]


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


def _models(body: dict, preprocess: PreprocessConfig, datasets: dict[str, DatasetSpec],
            sources: dict[str, SourceSpec], tests: dict[str, TestSpec]) -> list[ModelSpec]:
    models_raw = body.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError("models: give a list of models (kind: siamese, cnn, resnet or classical)")
    models = [_parse_model(m, preprocess, f"models[{i}]", datasets) for i, m in enumerate(models_raw)]
    _model_sources(models, models_raw, sources)
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


def _human(body: dict, base: Path, tests: dict[str, TestSpec], models: list[ModelSpec]) -> list:
    human_raw = body.get("human") or []
    if not isinstance(human_raw, list):
        raise ConfigError("human must be a list of {name, results: LABELS.results.json, test: TEST}")
    human = [parse_human(h, base, tests, f"human[{i}]") for i, h in enumerate(human_raw)]
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
    raw = check_keys(raw, TOP_KEYS, "study")
    declared, values = _parameters(raw, params)
    body = _substitute({k: v for k, v in raw.items() if k != "parameters"}, values, set(), "")
    name = as_str(body.get("name", Path(source).stem), "name")
    seeds, k_shots = _seeds(body), _k_shots(body)
    label = body.get("label", "hit_type")
    if label not in LABELS:
        raise ConfigError(f"label must be hit_type or structure_hit_type, got {label!r}")
    classes = _classes(body)
    try:
        base_cfg = Config.from_dict({"preprocess": body.get("preprocess") or {}, "augment": body.get("augment") or {}})
    except ConfigError as exc:
        raise ConfigError(f"study {exc}") from None
    datasets = _datasets(body, base)
    sources = _sources(body, datasets)
    tests = _tests(body, datasets)
    models = _models(body, base_cfg.preprocess, datasets, sources, tests)
    human = _human(body, base, tests, models)
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
