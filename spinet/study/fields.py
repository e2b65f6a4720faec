"""What the study's declarations (:mod:`spinet.study.sections`) cannot say: names, non-empty strings, files looked
up beside the study, dataset parts (``NAME:train``) and a model's augmentation, each failing with a one-line
:class:`~spisim.errors.ConfigError` (or :class:`~spisim.errors.InputFileError` for a missing file) that names the
key; ``check_keys`` for the sections of a Siamese model's ``config``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spisim.errors import ConfigError, InputFileError
from spisim.schema import did_you_mean

from ..config import AugmentConfig, Config
from .spec import PARTS, DatasetSpec, PartRef

NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
"""What a name of a dataset, source, test or model may hold."""


def check_keys(d: Any, allowed: Sequence[str], where: str) -> dict:
    """``d`` itself, once it is a mapping whose keys are all ``allowed``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(str(k), allowed)}; "
                              f"known: {', '.join(allowed)}")
    return d


def as_str(value: Any, where: str) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value.strip()


def as_name(value: Any, where: str) -> str:
    """A name of letters, digits and ``_ . + -``."""
    s = as_str(value, where)
    if not NAME.match(s):
        raise ConfigError(f"{where}: name {s!r} may hold only letters, digits and _ . + -")
    return s


def resolve_file(name: str, base_dir: Path, where: str) -> Path:
    """An existing file: absolute, or relative to the study's folder, then to the current directory."""
    p = Path(name).expanduser()
    tried = [p] if p.is_absolute() else [base_dir / p, Path.cwd() / p]
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    raise InputFileError(f"{where}: no such file {name!r} (looked in {', '.join(str(t.parent) for t in tried)})")


def augment_config(base: dict, over: dict, where: str) -> AugmentConfig:
    """The study's ``augment`` (``base``) with a model's ``augment`` (``over``) set on top, validated."""
    try:
        return Config.from_dict({"augment": {**base, **over}}).augment
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_part(value: Any, datasets: dict[str, DatasetSpec], where: str) -> PartRef:
    """``NAME``, ``NAME:train`` or ``NAME:test`` of a known dataset (a split one for a part)."""
    s = as_str(value, where)
    name, _, part = s.partition(":")
    part = part or "all"
    if name not in datasets:
        raise ConfigError(f"{where}: no dataset {name!r}{did_you_mean(name, list(datasets))}; "
                          f"datasets: {', '.join(datasets)}")
    if part not in PARTS:
        raise ConfigError(f"{where}: part {part!r} of {name} must be train, test or nothing (all shots)")
    if part != "all" and datasets[name].test_fraction == 0:
        raise ConfigError(f"{where}: {s} needs datasets.{name}.test_fraction > 0 (the dataset is not split)")
    return PartRef(name, part)
