"""The configuration engine: settings declared once as frozen dataclasses, validated with one-line errors.

Every key of a configuration (a manifest section, later a training or study section) is one dataclass field
declared with :func:`key`: its kind, default, unit and documentation. :func:`build` walks a parsed YAML/JSON
mapping against such a dataclass, so that an unknown key (with a did-you-mean), a missing value, a wrong unit
or an impossible value raises :class:`~spisim.errors.ConfigError` naming the key path, e.g. ``beam.photon_energy:
unit 'kg' is not a photon energy``; :func:`reference_rows` writes the reference table of the documentation from
the same declarations, so code, messages and docs cannot drift apart.

Kinds: ``int``, ``float``, ``qty`` (a quantity with ``dim`` and bare-number ``unit``, see :mod:`spisim.units`),
``range`` (a quantity or a pair [low, high]), ``int_range``, ``bool``, ``str``, ``choice``, ``int_list``,
``weights`` (a mapping of ``names`` to weights ≥ 0), ``list`` (a list of ``item`` values: ``int``, ``float`` or
``str``, kept a list; ``length`` fixes how many), ``mapping`` (a mapping kept as given, read by whoever uses
it), ``any`` (a value kept as given, checked by the section's ``check``), ``section`` (a nested ``cls``),
``section_list`` (a list of ``cls``), ``section_map`` (a mapping of names to ``cls``). ``int`` and ``float`` keys
with ``choices`` also take those words (``min_ratio: auto``). A section class may define ``coerce(raw, where)`` (a
static method that rewrites shorthand before validation) and ``check(self, where, raw)`` (checks across keys, after
it).

The dataclasses hold settings, not physics: the physics modules take their own small parameter types, which the
configuration builds (:func:`project`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import field
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputFileError
from .units import NUMBER, format_quantity, parse_quantity


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a key that the configuration must give."""


def did_you_mean(word: str, options: Any) -> str:
    """``' (did you mean X?)'`` for the option closest to ``word`` (difflib ratio ≥ 0.6), else ``''``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file: InputFileError when there is none, ConfigError when it is not UTF-8."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise InputFileError(f"no such {what}: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None


def parse_yaml(text: str, source: str, loader: Any = None) -> Any:
    """YAML ``text`` parsed (``yaml.safe_load``, or ``loader``); ConfigError ``SOURCE: not valid YAML at line N:
    PROBLEM`` for a syntax error."""
    import yaml

    try:
        return yaml.load(text, Loader=loader or yaml.SafeLoader)  # noqa: S506 - SafeLoader or a subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """A YAML file (UTF-8) parsed: one home for reading configuration files (manifests, studies, training
    configs); errors as :func:`read_text` and :func:`parse_yaml` give them."""
    return parse_yaml(read_text(path, what), str(path))


def key_path(where: str, name: str) -> str:
    """``where.name`` (or ``name`` at the top)."""
    return f"{where}.{name}" if where else name


def key(
    default: Any = REQUIRED,
    *,
    kind: str,
    doc: str,
    dim: str | None = None,
    unit: str | None = None,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive: bool = False,
    nullable: bool = False,
    cls: type | None = None,
    names: tuple[str, ...] = (),
    item: str | None = None,
    length: int | None = None,
) -> Any:
    """Declare a key (a dataclass field with its schema in ``metadata``); see the module doc for the kinds.

    ``minimum``/``maximum`` bound numbers (strictly with ``exclusive``), in the stored unit.
    """
    meta = dict(kind=kind, doc=doc, dim=dim, unit=unit, choices=choices, minimum=minimum, maximum=maximum,
                exclusive=exclusive, nullable=nullable, cls=cls, names=names, item=item, length=length, default=default)
    if kind == "section" and default is REQUIRED:
        return field(default_factory=lambda: build(cls, {}, "<default>"), metadata=meta)  # type: ignore[arg-type]
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)  # a fresh copy each time
    return field(default=default, metadata=meta)


def plain_number(value: Any, where: str, integer: bool = False) -> float:
    """A number without unit (also written as a string, as YAML 1.1 reads ``1e3``); whole with ``integer``."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        m = NUMBER.match(value)
        if not m or m.group(2):
            raise ConfigError(f"{where}: expected a plain number, got {value!r}")
        value = float(m.group(1))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def _bounds(value: float, meta: dict, where: str, shown: Any) -> None:
    lo, hi, excl = meta["minimum"], meta["maximum"], meta["exclusive"]
    if lo is not None and (value < lo or (excl and value == lo)):
        raise ConfigError(f"{where} must be {'>' if excl else '>='} {_show_bound(lo, meta)}, got {shown!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} must be <= {_show_bound(hi, meta)}, got {shown!r}")


def _show_bound(v: float, meta: dict) -> str:
    return format_quantity(v, meta["dim"], meta["unit"]) if meta["dim"] is not None else f"{v:g}"


def _convert_range(value: Any, meta: dict, where: str) -> tuple:
    kind = meta["kind"]
    items = value if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise ConfigError(f"{where}: expected a value or a pair [low, high], got {value!r}")
    if kind == "range" and meta["dim"] is not None:
        lo, hi = (parse_quantity(v, meta["dim"], meta["unit"], where) for v in items)
    elif kind == "range":
        lo, hi = (plain_number(v, where) for v in items)
    else:
        lo, hi = (plain_number(v, where, integer=True) for v in items)
    for v in (lo, hi):
        _bounds(v, meta, where, value)
    if lo > hi:
        raise ConfigError(f"{where}: low end {items[0]!r} is above high end {items[1]!r}")
    return (lo, hi)


def _convert_weights(value: Any, meta: dict, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(meta['names'])} to weights")
    out = {}
    for name, w in value.items():
        if name not in meta["names"]:
            raise ConfigError(f"{key_path(where, str(name))}: unknown key{did_you_mean(str(name), meta['names'])}")
        out[name] = plain_number(w, key_path(where, name))
        if out[name] < 0:
            raise ConfigError(f"{key_path(where, name)} must be >= 0, got {w!r}")
    return out


def _convert_choice(value: Any, meta: dict, where: str) -> str:
    text = str(value).lower() if value is not False else "none"  # YAML reads `none`-ish words oddly
    if text not in meta["choices"]:
        hint = did_you_mean(text, meta["choices"])
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}{hint}")
    return text


def _convert_list(value: Any, meta: dict, where: str) -> list:
    item, n = meta["item"], meta["length"]
    what = {"int": "whole numbers", "float": "numbers", "str": "strings"}[item]
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        count = f"{n} " if n is not None else ""
        raise ConfigError(f"{where}: expected a list of {count}{what}, got {value!r}")
    out: list = []
    for i, v in enumerate(value):
        here = f"{where}[{i}]"
        if item == "str":
            if not isinstance(v, (str, int)) or isinstance(v, bool):
                raise ConfigError(f"{here}: expected a string, got {v!r}")
            out.append(str(v))
        else:
            out.append(plain_number(v, here, integer=item == "int"))
            _bounds(out[-1], meta, where, value)
    if meta["choices"]:
        for v in out:
            _convert_choice(v, meta, where)
    return out


def convert(value: Any, meta: dict, where: str) -> Any:
    """One key's raw ``value`` validated and converted by its declaration ``meta``."""
    kind = meta["kind"]
    if kind in ("int", "float"):
        if meta["choices"] and isinstance(value, str) and not NUMBER.match(value):
            if value in meta["choices"]:
                return value
            raise ConfigError(f"{where}: expected a number or {' / '.join(meta['choices'])}, got {value!r}"
                              f"{did_you_mean(value, meta['choices'])}")
        v = plain_number(value, where, integer=kind == "int")
        _bounds(v, meta, where, value)
        return v
    if kind == "qty":
        v = parse_quantity(value, meta["dim"], meta["unit"], where)
        _bounds(v, meta, where, value)
        return v
    if kind in ("range", "int_range"):
        return _convert_range(value, meta, where)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if kind == "choice":
        return _convert_choice(value, meta, where)
    if kind == "int_list":
        items = value if isinstance(value, (list, tuple)) else [value]
        out = tuple(plain_number(v, where, integer=True) for v in items)
        for v in out:
            _bounds(v, meta, where, value)
        return out
    if kind == "weights":
        return _convert_weights(value, meta, where)
    if kind == "list":
        return _convert_list(value, meta, where)
    if kind == "mapping":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return dict(value)
    if kind == "any":
        return value
    if kind == "section":
        return build(meta["cls"], value, where)
    if kind == "section_map":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of names to entries, got {value!r}")
        return {str(n): build(meta["cls"], v, key_path(where, str(n))) for n, v in value.items()}
    if kind == "section_list":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of entries (each starting with '- ')")
        return tuple(build(meta["cls"], v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"unknown kind {kind!r}")


def build(cls: type, raw: Any, where: str) -> Any:
    """Validate ``raw`` (parsed YAML) against dataclass ``cls``; the key path ``where`` goes into messages."""
    coerce = getattr(cls, "coerce", None)
    if coerce is not None:
        raw = coerce(raw, where)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'manifest'}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise ConfigError(f"{key_path(where, str(name))}: unknown key{did_you_mean(str(name), fields)}")
    values = {}
    for name, f in fields.items():
        meta = f.metadata
        here = key_path(where, name)
        if name not in raw:
            if meta["default"] is REQUIRED and meta["kind"] != "section":
                raise ConfigError(f"{here}: missing value (required key)")
            if meta["kind"] == "section" and meta["default"] is REQUIRED:
                values[name] = build(meta["cls"], None, here)
            continue
        value = raw[name]
        if value is None:
            if meta["nullable"]:
                values[name] = None
                continue
            if meta["kind"] in ("section", "section_list", "section_map", "int_list", "list", "weights", "mapping"):
                value = {} if meta["kind"] in ("section", "section_map", "weights", "mapping") else []
            else:
                raise ConfigError(f"{here}: missing value (give one or remove the key)")
        values[name] = convert(value, meta, here)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where, raw)
    return obj


def project(cls: type, source: Any, **values: Any) -> Any:
    """An instance of dataclass ``cls`` whose fields are taken from the same-named attributes of ``source``
    (settings → a physics module's parameter type); ``values`` set the fields ``source`` has not, or differs in."""
    kw = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls) if f.name not in values}
    return cls(**kw, **values)


# ----------------------------------------------------------------------------------------------
# Reference tables generated from the declarations


def _describe_default(meta: dict) -> str:
    d = meta["default"]
    kind = meta["kind"]
    if d is REQUIRED:
        return "required"
    if d is None:
        return "null"
    if kind == "qty":
        return format_quantity(d, meta["dim"], meta["unit"])
    if kind == "range":
        if meta["dim"] is None:
            return f"[{d[0]:g}, {d[1]:g}]"
        return "[" + ", ".join(format_quantity(v, meta["dim"], meta["unit"]) for v in d) + "]"
    if kind in ("int_range", "int_list"):
        return "[" + ", ".join(str(v) for v in d) + "]"
    if kind == "list":
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in d) + "]"
    if kind == "weights":
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in d.items()) + "}"
    if kind == "bool":
        return "true" if d else "false"
    if kind == "section_list":
        return "[]"
    if kind in ("mapping", "section_map") and d == {}:
        return "{}"
    return f"{d:g}" if isinstance(d, float) else str(d)


def _describe_unit(meta: dict) -> str:
    if meta["kind"] in ("qty", "range") and meta["dim"] is not None:
        return meta["unit"]
    if meta["kind"] in ("choice", "list") and meta["choices"]:
        return " / ".join(meta["choices"])
    if meta["kind"] in ("int", "float") and meta["choices"]:
        return f"{meta['unit'] or 'number'} or {' / '.join(meta['choices'])}"
    if meta["kind"] in ("mapping", "section_map"):
        return "mapping"
    return meta["unit"] or "-"


def reference_rows(cls: type, where: str = "", nested: bool = True) -> list[tuple[str, str, str, str]]:
    """(key path, unit of a bare number or choices, default, meaning) of every key of ``cls``, depth first; without
    ``nested`` a section (``section``, ``section_list``, ``section_map``) is one row, its keys left to its own table."""
    rows = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        here = key_path(where, f.name)
        if not nested and meta["kind"] in ("section", "section_list", "section_map"):
            shown = {"section": "section", "section_list": "list", "section_map": "mapping"}[meta["kind"]]
            rows.append((here, shown, "-" if meta["kind"] == "section" else _describe_default(meta), meta["doc"]))
        elif meta["kind"] == "section":
            rows += reference_rows(meta["cls"], here)
        elif meta["kind"] == "section_list":
            rows.append((here, "list", "[]", meta["doc"]))
            rows += reference_rows(meta["cls"], here + "[]")
        elif meta["kind"] == "section_map":
            rows.append((here, "mapping", "{}", meta["doc"]))
            rows += reference_rows(meta["cls"], here + ".NAME")
        else:
            rows.append((here, _describe_unit(meta), _describe_default(meta), meta["doc"]))
    return rows


def reference_table(cls: type, nested: bool = True, where: str = "") -> str:
    """The markdown key table of ``cls`` (one row per key, see :func:`reference_rows`; paths below ``where``)."""
    lines = ["| key | unit of a bare number (or choices) | default | meaning |", "|---|---|---|---|"]
    for path, unit, default, doc in reference_rows(cls, where, nested=nested):
        lines.append(f"| `{path}` | {unit} | {default} | {doc} |")
    return "\n".join(lines) + "\n"
