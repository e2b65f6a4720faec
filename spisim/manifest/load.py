"""Reading a manifest: YAML text (duplicate keys refused), command-line overrides, validation, and the files
it names (:class:`Manifest`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..cxi import HDF5_SUFFIXES
from ..errors import ConfigError, InputFileError
from ..schema import build, parse_yaml, read_text
from .sections import ManifestSpec


@dataclass(frozen=True)
class Manifest:
    """A validated manifest with its text and origin.

    Attributes:
        spec: the validated settings.
        text: the manifest's YAML text, as written.
        source: file path or ``<built-in default>``.
        base_dir: folder against which relative paths are looked up first (then the current directory).
        overrides: settings given on the command line (``shots``, ``seed``), applied over the text.
    """

    spec: ManifestSpec
    text: str
    source: str
    base_dir: Path | None
    overrides: dict

    def resolve_path(self, name: str, where: str) -> Path:
        """An existing file named in the manifest.

        ``$VARIABLES`` and ``~`` are expanded; an absolute path is used as is; a relative one is looked up
        next to the manifest file first (so a manifest works from any working directory), then in the
        current directory (for manifests given as text, and older manifests written relative to it).
        """
        expanded = os.path.expandvars(name)
        unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
        if unset:
            raise ConfigError(f"{where}: environment variable {unset[0]} in {name!r} is not set")
        p = Path(expanded).expanduser()
        tried = [p] if p.is_absolute() else ([self.base_dir / p] if self.base_dir else []) + [Path.cwd() / p]
        for candidate in tried:
            if candidate.is_file():
                return candidate.resolve()
            if candidate.exists():
                raise ConfigError(f"{where}: {candidate} is not a file")
        looked = ", ".join(dict.fromkeys(str(c.parent.resolve()) for c in tried))
        raise ConfigError(f"{where}: no such file {name!r} (looked in {looked})")

    def check_files(self) -> None:
        """ConfigError unless every file the manifest names exists (PDB ids are not fetched here)."""
        spec = self.spec
        if spec.detector.geometry is not None:
            self.resolve_path(spec.detector.geometry, "detector.geometry")
        if spec.detector.mask is not None:
            self.resolve_path(split_dataset(spec.detector.mask)[0], "detector.mask")
        if spec.noise.background.template is not None:
            self.resolve_path(split_dataset(spec.noise.background.template)[0], "noise.background.template")
        for where, plist in (("particles", spec.particles), ("unintended.molecules", spec.unintended.molecules)):
            for i, p in enumerate(plist):
                if p.structure is not None:
                    self.structure_source(p.structure, f"{where}[{i}].structure")

    def read_array(self, name: str, where: str, default_dataset: str) -> Any:
        """The array (numpy) of a file named in the manifest: ``.npy``, an HDF5 dataset ``FILE.h5:/path``,
        or the ``default_dataset`` of an HDF5 file (``.h5``, ``.hdf5``, ``.hdf``, ``.cxi``, ``.nxs``).

        Raises:
            ConfigError: no such file, an unknown file type, no such dataset.
            InputFileError: a file that cannot be read.
        """
        import numpy as np

        file_name, dataset = split_dataset(name)
        path = self.resolve_path(file_name, where)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            if dataset is not None:
                raise ConfigError(f"{where}: a .npy file holds one array; drop ':{dataset}'")
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputFileError(f"{where}: {path} is not a readable .npy array ({exc})") from None
        if suffix not in HDF5_SUFFIXES:
            raise ConfigError(f"{where}: {path.name} is neither .npy nor an HDF5 file ({', '.join(HDF5_SUFFIXES)})")
        import h5py

        dataset = dataset or default_dataset
        try:
            f = h5py.File(path, "r")
        except OSError:
            raise InputFileError(f"{where}: {path} is not a readable HDF5 file") from None
        with f:
            node = f.get(dataset)
            if not isinstance(node, h5py.Dataset):
                what = "is not a dataset" if node is not None else "does not exist"
                raise ConfigError(f"{where}: {dataset} in {path} {what} (name one as {path.name}:/path/to/dataset)")
            try:
                return np.asarray(node[()])
            except OSError as exc:
                raise InputFileError(f"{where}: cannot read {dataset} of {path} ({exc})") from None

    def structure_source(self, name: str, where: str) -> str | Path:
        """A structure file (Path) or a PDB id (str) for :func:`spisim.structure.load_structure`."""
        try:
            return self.resolve_path(name, where)
        except ConfigError:
            if re.fullmatch(r"[0-9][A-Za-z0-9]{3}", name):
                return name.lower()
            raise




def split_dataset(name: str) -> tuple[str, str | None]:
    """``'run.h5:/entry/mask'`` -> ``('run.h5', '/entry/mask')``; a name without ``:/`` after an HDF5 suffix
    -> ``(name, None)``."""
    suffixes = "|".join(s.lstrip(".") for s in HDF5_SUFFIXES)
    m = re.fullmatch(rf"(.+\.(?:{suffixes})):(/.*)", name, flags=re.IGNORECASE)
    return (m.group(1), m.group(2)) if m else (name, None)


BUILTIN_DEFAULT = Path(__file__).parents[1] / "manifests" / "default.yaml"
"""The built-in default manifest (no file and no network needed)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not a silent overwrite."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader reports it
            break
        if first is not None:
            where = f"on line {line}" if first == line else f"lines {first} and {line}"
            raise ConfigError(f"key {key!r} is given twice ({where}): keep one")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` set on top; nested mappings merge key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_manifest(
    text: str, *, source: str = "<string>", base_dir: Path | None = None, overrides: dict | None = None
) -> Manifest:
    """Validate a manifest given as YAML text.

    Args:
        text: the YAML document.
        source: where it came from (for messages and the dataset's attributes).
        base_dir: folder for relative paths.
        overrides: keys set over the text (e.g. ``{"shots": 10, "output": {"compression": "lz4"}}``; nested
            mappings merge); top-level None values are ignored.
    """
    try:
        raw = parse_yaml(text, f"manifest {source}", _UniqueKeyLoader)
    except ConfigError as exc:
        if str(exc).startswith(f"manifest {source}: "):
            raise
        raise ConfigError(f"manifest {source}: {exc}") from None  # a key given twice
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"manifest {source}: expected a mapping of keys at the top, got {type(raw).__name__}")
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = _deep_merge(raw, ov)
    try:
        spec = build(ManifestSpec, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"manifest {source}: {exc}") from None
    return Manifest(spec=spec, text=text, source=source, base_dir=base_dir, overrides=ov)


def load_manifest(path: str | Path | None = None, *, overrides: dict | None = None) -> Manifest:
    """Read and validate a manifest file; ``None`` gives the built-in default (:data:`BUILTIN_DEFAULT`)."""
    if path is None:
        return parse_manifest(BUILTIN_DEFAULT.read_text(), source="<built-in default>", overrides=overrides)
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"no such manifest file: {p}")
    try:
        text = read_text(p, "manifest file")
    except ConfigError as exc:
        raise ConfigError(f"manifest {exc}") from None
    return parse_manifest(text, source=str(p), base_dir=p.resolve().parent, overrides=overrides)
