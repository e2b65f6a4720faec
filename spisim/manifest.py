"""Dataset manifests: the YAML recipes of ``spi simulate``, validated with one-line errors.

A manifest names the beam, the detector, the particles, the mix of hit types and the noise of a
dataset (see ``docs/manifest.md``, generated from the schema below by :func:`reference_markdown`).
Every key is declared once, in the frozen dataclasses of this module, with its kind, default, unit
and documentation; :func:`parse_manifest` walks them, so an unknown key (with a did-you-mean), a
missing value, a wrong unit or an impossible value raises :class:`~spisim.errors.ConfigError` naming
the key path, e.g. ``manifest beam.photon_energy: unit 'kg' is not a photon energy``.

Quantities accept a unit suffix (``'1.6 keV'``, ``'2 mJ'``, ``'100 nm'``, ``'0.74 m'``,
``'1e12 photons/um^2'``, ``'0.43 e/A^3'``); a bare number is read in the key's documented unit.
Values are stored in SI (m, J, photons/m²), except photon energies (eV) and electron densities
(electrons/Å³), which the physics modules take as such.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .constants import HC_EV_ANGSTROM
from .errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Quantities with units


_LENGTH = {
    "m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "micron": 1e-6, "microns": 1e-6,
    "nm": 1e-9, "A": 1e-10, "angstrom": 1e-10, "pm": 1e-12,
}
_PHOTON_ENERGY = {"eV": 1.0, "keV": 1e3, "MeV": 1e6}
_PULSE_ENERGY = {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9}


@dataclass(frozen=True)
class Dimension:
    """A physical dimension: the name used in messages, the stored unit and examples of units."""

    name: str
    stored: str
    examples: str
    sample: str


DIMENSIONS: dict[str, Dimension] = {
    "length": Dimension("length", "m", "m, mm, um, nm, A", "100 nm"),
    "photon_energy": Dimension("photon energy", "eV", "eV, keV, or a wavelength in A or nm", "1.6 keV"),
    "pulse_energy": Dimension("pulse energy", "J", "J, mJ, uJ", "0.4 mJ"),
    "fluence": Dimension("fluence", "photons/m^2", "photons/m^2, photons/um^2, photons/nm^2", "1e14 photons/um^2"),
    "electron_density": Dimension("electron density", "e/A^3", "e/A^3, e/nm^3", "0.43 e/A^3"),
    "inverse_length": Dimension("inverse length", "1/A", "1/A, 1/nm", "0.05 1/A"),
}


def _normalise_unit(text: str) -> str:
    t = text.strip()
    for a, b in (("µ", "u"), ("μ", "u"), ("Å", "A"), ("²", "^2"), ("³", "^3"), ("**", "^"), ("⁻¹", "^-1")):
        t = t.replace(a, b)
    t = re.sub(r"\s+", "", t)
    if t.lower() in ("angstrom", "angstroms", "ang"):
        return "A"
    return t


def _lookup(table: dict[str, float], unit: str) -> float | None:
    if unit in table:
        return table[unit]
    matches = [v for k, v in table.items() if k.lower() == unit.lower()]
    return matches[0] if len(matches) == 1 else None


def _unit_factor(dim: str, unit: str) -> float | None:
    """Factor that turns a number in ``unit`` into the stored unit of ``dim`` (None: not that dimension)."""
    if dim == "length":
        return _lookup(_LENGTH, unit)
    if dim == "photon_energy":
        return _lookup(_PHOTON_ENERGY, unit)
    if dim == "pulse_energy":
        return _lookup(_PULSE_ENERGY, unit)
    if dim == "fluence":
        m = re.fullmatch(r"(?:photons?|ph)?/([A-Za-z]+)\^?2", unit)
        if m and (f := _lookup(_LENGTH, m.group(1))) is not None:
            return 1.0 / f**2
        return None
    if dim == "electron_density":
        m = re.fullmatch(r"(?:e|electrons?)/([A-Za-z]+)\^?3", unit)
        if m and (f := _lookup(_LENGTH, m.group(1))) is not None:
            return (1e-10 / f) ** 3
        return None
    if dim == "inverse_length":
        m = re.fullmatch(r"1/([A-Za-z]+)", unit) or re.fullmatch(r"([A-Za-z]+)\^-1", unit)
        if m and (f := _lookup(_LENGTH, m.group(1))) is not None:
            return 1e-10 / f
        return None
    raise ValueError(f"unknown dimension {dim!r}")


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(value: Any, dim: str, default_unit: str, where: str = "value") -> float:
    """A number with an optional unit suffix, in the stored unit of ``dim``.

    Args:
        value: a number (read in ``default_unit``) or a string such as ``'1.6 keV'``.
        dim: a key of :data:`DIMENSIONS`.
        default_unit: unit of a bare number.
        where: key path for messages.

    Returns:
        The value in the stored unit (m, eV, J, photons/m², e/Å³ or 1/Å).
    """
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a {DIMENSIONS[dim].name}, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), default_unit
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            d = DIMENSIONS[dim]
            raise ConfigError(f"{where}: cannot read {value!r} as a {d.name} (e.g. {d.sample!r})")
        number, unit = float(m.group(1)), (m.group(2) or default_unit)
    else:
        raise ConfigError(f"{where}: expected a {DIMENSIONS[dim].name}, got {type(value).__name__} {value!r}")
    unit_n = _normalise_unit(unit)
    factor = _unit_factor(dim, unit_n)
    if factor is None and dim == "photon_energy":
        length = _lookup(_LENGTH, unit_n)  # a wavelength
        if length is not None:
            if number <= 0:
                raise ConfigError(f"{where}: a wavelength must be > 0, got {value!r}")
            return HC_EV_ANGSTROM / (number * length / 1e-10)
    if factor is None:
        d = DIMENSIONS[dim]
        raise ConfigError(f"{where}: unit {unit.strip()!r} is not a {d.name} (use {d.examples})")
    result = number * factor
    if not math.isfinite(result):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return result


def format_quantity(value: float | None, dim: str, unit: str) -> str:
    """``value`` (stored unit of ``dim``) written in ``unit``, e.g. ``'75 um'`` (for documentation)."""
    if value is None:
        return "null"
    factor = _unit_factor(dim, _normalise_unit(unit))
    assert factor is not None
    return f"{value / factor:.6g} {unit}"


# ----------------------------------------------------------------------------------------------
# The schema: one frozen dataclass per section; each field carries its kind, unit and doc.


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a key that the manifest must give."""


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
) -> Any:
    """Declare a manifest key (a dataclass field with its schema in ``metadata``).

    Kinds: ``int``, ``float``, ``qty`` (with ``dim`` and bare-number ``unit``), ``range`` (a quantity or a
    pair [low, high]), ``int_range``, ``bool``, ``str``, ``choice``, ``int_list``, ``weights`` (a mapping
    of ``names`` to weights ≥ 0), ``section`` (a nested ``cls``), ``section_list`` (a list of ``cls``).
    ``minimum``/``maximum`` bound numbers (strictly with ``exclusive``), in the stored unit.
    """
    meta = dict(kind=kind, doc=doc, dim=dim, unit=unit, choices=choices, minimum=minimum, maximum=maximum,
                exclusive=exclusive, nullable=nullable, cls=cls, names=names, default=default)
    if kind == "section" and default is REQUIRED:
        return field(default_factory=lambda: _build(cls, {}, "<default>"), metadata=meta)  # type: ignore[arg-type]
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _number(value: Any, where: str, integer: bool = False) -> float:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        m = _NUMBER.match(value)
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


def _convert(value: Any, meta: dict, where: str) -> Any:
    kind = meta["kind"]
    if kind in ("int", "float"):
        v = _number(value, where, integer=kind == "int")
        _bounds(v, meta, where, value)
        return v
    if kind == "qty":
        v = parse_quantity(value, meta["dim"], meta["unit"], where)
        _bounds(v, meta, where, value)
        return v
    if kind in ("range", "int_range"):
        items = value if isinstance(value, (list, tuple)) else [value, value]
        if len(items) != 2:
            raise ConfigError(f"{where}: expected a value or a pair [low, high], got {value!r}")
        if kind == "range" and meta["dim"] is not None:
            lo, hi = (parse_quantity(v, meta["dim"], meta["unit"], where) for v in items)
        elif kind == "range":
            lo, hi = (_number(v, where) for v in items)
        else:
            lo, hi = (_number(v, where, integer=True) for v in items)
        for v in (lo, hi):
            _bounds(v, meta, where, value)
        if lo > hi:
            raise ConfigError(f"{where}: low end {items[0]!r} is above high end {items[1]!r}")
        return (lo, hi)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if kind == "choice":
        text = str(value).lower() if value is not False else "none"  # YAML reads `none`-ish words oddly
        if text not in meta["choices"]:
            hint = _did_you_mean(text, meta["choices"])
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}{hint}")
        return text
    if kind == "int_list":
        items = value if isinstance(value, (list, tuple)) else [value]
        out = tuple(_number(v, where, integer=True) for v in items)
        for v in out:
            _bounds(v, meta, where, value)
        return out
    if kind == "weights":
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {', '.join(meta['names'])} to weights")
        out = {}
        for name, w in value.items():
            if name not in meta["names"]:
                raise ConfigError(f"{_path(where, str(name))}: unknown key{_did_you_mean(str(name), meta['names'])}")
            out[name] = _number(w, _path(where, name))
            if out[name] < 0:
                raise ConfigError(f"{_path(where, name)} must be >= 0, got {w!r}")
        return out
    if kind == "section":
        return _build(meta["cls"], value, where)
    if kind == "section_list":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of entries (each starting with '- ')")
        return tuple(_build(meta["cls"], v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"unknown kind {kind!r}")


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _build(cls: type, raw: Any, where: str) -> Any:
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
            where_key = _path(where, str(name))
            raise ConfigError(f"{where_key}: unknown key{_did_you_mean(str(name), fields)}")
    values = {}
    for name, f in fields.items():
        meta = f.metadata
        here = _path(where, name)
        if name not in raw:
            if meta["default"] is REQUIRED and meta["kind"] != "section":
                raise ConfigError(f"{here}: missing value (required key)")
            if meta["kind"] == "section":
                values[name] = _build(meta["cls"], None, here)
            continue
        value = raw[name]
        if value is None:
            if meta["nullable"]:
                values[name] = None
                continue
            if meta["kind"] in ("section", "section_list", "int_list", "weights"):
                value = {} if meta["kind"] in ("section", "weights") else []
            else:
                raise ConfigError(f"{here}: missing value (give one or remove the key)")
        values[name] = _convert(value, meta, here)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where, raw)
    return obj


# ----------------------------------------------------------------------------------------------
# Sections


PROTEIN_DENSITY = 0.43
"""Electron density of protein, electrons/Å³."""
WATER_DENSITY = 0.334
"""Electron density of liquid water, electrons/Å³."""
NACL_DENSITY = 0.625
"""Electron density of rock salt (2.165 g/cm³, 28 electrons per NaCl), electrons/Å³."""

MIN_PHOTON_ENERGY = 50.0
"""Lowest photon energy a manifest accepts, eV (FLASH imaged at 92 eV)."""
MAX_PHOTON_ENERGY = 200e3
"""Highest photon energy a manifest accepts, eV."""
MAX_PARTICLE_SIZE = 10e-6
"""Largest radius (or thickness) of a model particle, droplet or fragment, m: far beyond any X-ray focus."""

HIT_MIXES: dict[str, dict[str, float]] = {
    "realistic": {"no_hit": 0.90, "single": 0.05, "multi": 0.02, "unintended": 0.03},
    "balanced": {"no_hit": 0.25, "single": 0.25, "multi": 0.25, "unintended": 0.25},
}
"""Named mixes of hit types (weights, normalised when drawing)."""

DETECTOR_PRESETS = ("pnccd", "jungfrau4m", "epix10k2m", "agipd1m", "square")
SHAPES = ("sphere", "spheroid", "icosahedron", "shell", "lobed")
ATOMS_ONLY_SHAPES = ("lobed",)
"""Built-in shapes with no analytic form factor (always filled with atoms)."""

AUTO_ATOMS_SHAPES = ("icosahedron", "lobed")
"""Built-in shapes that ``model: auto`` fills with atoms (the icosahedron's continuum model must be asked for)."""


@dataclass(frozen=True)
class BeamSpec:
    """``beam``: the X-ray pulse."""

    photon_energy: float = key(kind="qty", dim="photon_energy", unit="eV", minimum=MIN_PHOTON_ENERGY,
                               maximum=MAX_PHOTON_ENERGY,
                               doc="photon energy (a wavelength such as '7.75 A' is converted); 50 eV to 200 keV")
    pulse_energy: float | None = key(None, kind="qty", dim="pulse_energy", unit="mJ", minimum=0, exclusive=True,
                                     nullable=True, doc="pulse energy at the sample; give exactly one of "
                                     "pulse_energy, photons_per_pulse and fluence")
    photons_per_pulse: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                          doc="photons per pulse at the sample")
    fluence: float | None = key(None, kind="qty", dim="fluence", unit="photons/um^2", minimum=0, exclusive=True,
                                nullable=True, doc="peak fluence at the focus centre")
    focus_diameter: float = key(1e-6, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                                doc="focus size: FWHM (gaussian) or diameter (flattop)")
    profile: str = key("gaussian", kind="choice", choices=("gaussian", "flattop"), doc="focal intensity profile")
    polarization: str = key("horizontal", kind="choice", choices=("horizontal", "vertical", "none"),
                            doc="linear polarisation direction, or none (unpolarised)")
    hit_radius: float | None = key(None, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                                   nullable=True, doc="a hit's particle lies uniformly within this distance of the "
                                   "beam axis (its fluence follows the profile there); null: half the focus "
                                   "diameter")

    def check(self, where: str, raw: dict) -> None:
        given = [k for k in ("pulse_energy", "photons_per_pulse", "fluence") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise ConfigError(f"{where}: give exactly one of pulse_energy, photons_per_pulse and fluence (got {what})")


@dataclass(frozen=True)
class DetectorSpec:
    """``detector``: a preset or a geometry file."""

    preset: str | None = key(None, kind="choice", choices=DETECTOR_PRESETS, nullable=True,
                             doc="built-in detector; give preset or geometry")
    geometry: str | None = key(None, kind="str", nullable=True,
                               doc="CrystFEL .geom, psana .data, or a CXI/HDF5 file written by spi simulate or spi "
                               "import (its pixel positions and mask: the detector of a real run); path relative to "
                               "the manifest's folder or the current directory")
    distance: float | None = key(None, kind="qty", dim="length", unit="m", minimum=0, exclusive=True, nullable=True,
                                 doc="sample-detector distance; null: the preset's or the file's")
    n_pixels: int = key(128, kind="int", minimum=1, maximum=4096, doc="pixels per side (square preset only)")
    pixel_size: float = key(75e-6, kind="qty", dim="length", unit="um", minimum=0, exclusive=True,
                            doc="pixel pitch (square preset only)")
    bin: int = key(1, kind="int", minimum=1, maximum=64,
                   doc="join bin x bin pixels into one (pitch x bin), after distance and geometry: frames, mask and "
                   "geometry of the dataset are the binned ones; every tile's size must divide by it")
    oversample: int = key(1, kind="int", minimum=1, maximum=32,
                          doc="pixel-area integration: each (binned) pixel is rendered as oversample x oversample "
                          "sub-pixels (own q, solid angle, polarisation) whose expected photons are summed; 1: "
                          "pixel centres only")
    mask: str | None = key(None, kind="str", nullable=True,
                           doc="static mask file: .npy, or HDF5/CXI (its /entry_1/instrument_1/detector_1/mask, or "
                           "FILE.h5:/path/to/dataset); the detector's data shape before or after `bin` (2-D for a "
                           "1-module detector); added to the detector's own mask")
    mask_value: str = key("bad", kind="choice", choices=("bad", "good"),
                          doc="what a non-zero value of the mask file means: bad (masked) or good (zeros are masked)")

    def check(self, where: str, raw: dict) -> None:
        if (self.preset is None) == (self.geometry is None):
            raise ConfigError(f"{where}: give exactly one of preset and geometry")
        for name in ("n_pixels", "pixel_size"):
            if name in raw and self.preset != "square":
                raise ConfigError(f"{_path(where, name)}: only for the square preset")


@dataclass(frozen=True)
class ParticleSpec:
    """One entry of ``particles`` (or ``unintended.molecules``): a structure or a built-in shape."""

    name: str | None = key(None, kind="str", nullable=True,
                           doc="label stored in the dataset; default: file stem, PDB id or shape")
    structure: str | None = key(None, kind="str", nullable=True,
                                doc="PDB/mmCIF file (plain or .gz; relative to the manifest's folder, then to "
                                "the current directory) or a 4-character PDB id (fetched once, then cached)")
    shape: str | None = key(None, kind="choice", choices=SHAPES, nullable=True, doc="built-in model particle")
    radius: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                               exclusive=True, nullable=True,
                               doc="shape radius (spheroid: equatorial semi-axis a; shell: outer radius)")
    polar_radius: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                                     exclusive=True, nullable=True,
                                     doc="spheroid polar semi-axis c (along the particle z)")
    thickness: float | None = key(None, kind="qty", dim="length", unit="nm", minimum=0, maximum=MAX_PARTICLE_SIZE,
                                  exclusive=True, nullable=True, doc="shell thickness")
    lobes: int = key(3, kind="int", minimum=1, maximum=64,
                     doc="lobed shape: number of overlapping spheres (their layout is drawn from shape_seed)")
    shape_seed: int = key(0, kind="int", minimum=0,
                          doc="seed of a built-in atomistic shape: atom positions and the lobed layout")
    model: str = key("auto", kind="choice", choices=("auto", "atoms", "continuum"),
                     doc="shapes: atoms (filled with protein-like atoms) or continuum (analytic form factor); "
                     "auto: continuum where one exists, but atoms for the icosahedron (its continuum model, an "
                     "analytic polyhedron, must be asked for) and the lobed shape (atoms only)")
    density: float = key(PROTEIN_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density of a continuum shape (shell: of the shell)")
    core_density: float | None = key(None, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                                     nullable=True, doc="continuum shell: electron density of the core inside the "
                                     "inner radius (e.g. packed nucleic acid); null: hollow")
    scale: float = key(1.0, kind="float", minimum=0, exclusive=True, maximum=100,
                       doc="mean size factor: the particle is scaled by it at constant density (e.g. a structure "
                       "scaled to a run's particle size)")
    size_sd: float = key(0.0, kind="float", minimum=0, maximum=1,
                         doc="relative rms of a per-particle size factor s ~ N(scale, scale*size_sd), truncated "
                         "to +-3 sd and > 0; 0: every particle has size factor `scale`")
    aspect_sd: float = key(0.0, kind="float", minimum=0, maximum=1,
                           doc="rms of a per-particle stretch a ~ N(1, aspect_sd) of the particle's own z axis, "
                           "truncated to +-3 sd and > 0; 0: no stretch")
    assembly: str = key("auto", kind="str", doc="biological assembly: auto, none (the asymmetric unit) or an id")
    keep_waters: bool = key(False, kind="bool", doc="keep water molecules of a structure")
    keep_hydrogens: bool = key(False, kind="bool",
                               doc="keep hydrogen atoms of a structure; fill an atomistic shape with them too")
    weight: float = key(1.0, kind="float", minimum=0, doc="relative probability of this particle in a hit")

    def check(self, where: str, raw: dict) -> None:
        if (self.structure is None) == (self.shape is None):
            raise ConfigError(f"{where}: give exactly one of structure and shape")
        if self.shape is not None:
            if self.radius is None:
                raise ConfigError(f"{_path(where, 'radius')}: missing value (required for shape {self.shape})")
            if self.shape == "spheroid" and self.polar_radius is None:
                raise ConfigError(f"{_path(where, 'polar_radius')}: missing value (required for a spheroid)")
            if self.shape == "shell":
                if self.thickness is None:
                    raise ConfigError(f"{_path(where, 'thickness')}: missing value (required for a shell)")
                if self.thickness >= self.radius:
                    raise ConfigError(f"{_path(where, 'thickness')} must be < radius for a shell")
            if self.shape in ATOMS_ONLY_SHAPES and self.model == "continuum":
                raise ConfigError(f"{_path(where, 'model')}: the {self.shape} shape has no continuum model (use atoms)")
            if self.core_density is not None and not (self.shape == "shell" and self.continuum):
                raise ConfigError(f"{_path(where, 'core_density')}: only for a continuum shell (shape: shell, "
                                  f"model: continuum or auto)")
        else:
            for k in ("radius", "polar_radius", "thickness", "core_density"):
                if getattr(self, k) is not None:
                    raise ConfigError(f"{_path(where, k)}: only for built-in shapes")

    @property
    def max_stretch(self) -> float:
        """Largest factor by which a drawn size and stretch can lengthen a particle-frame q (the largest
        singular value of D = s diag(1, 1, a) the truncations allow): scale (1 + 3 size_sd)(1 + 3 aspect_sd)."""
        return self.scale * (1.0 + 3.0 * self.size_sd) * (1.0 + 3.0 * self.aspect_sd)

    @property
    def label(self) -> str:
        """The particle's name in the dataset."""
        if self.name:
            return self.name
        if self.shape:
            return f"{self.shape}-{self.radius * 1e9:g}nm"
        stem = Path(str(self.structure)).name
        for suffix in (".gz", ".cif", ".pdb", ".ent", ".mmcif"):
            stem = stem.removesuffix(suffix)
        return stem

    @property
    def continuum(self) -> bool:
        """True when this particle uses an analytic form factor."""
        if self.shape is None or self.model == "atoms":
            return False
        return self.model == "continuum" or self.shape not in AUTO_ATOMS_SHAPES


@dataclass(frozen=True)
class HitsSpec:
    """``hits``: the mix of hit types (relative weights), or a named mix ``realistic`` / ``balanced``."""

    no_hit: float = key(HIT_MIXES["realistic"]["no_hit"], kind="float", minimum=0, doc="weight of shots that miss")
    single: float = key(HIT_MIXES["realistic"]["single"], kind="float", minimum=0, doc="weight of single hits")
    multi: float = key(HIT_MIXES["realistic"]["multi"], kind="float", minimum=0, doc="weight of multiple hits")
    unintended: float = key(HIT_MIXES["realistic"]["unintended"], kind="float", minimum=0,
                            doc="weight of hits on droplets, salt, debris or other molecules")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if isinstance(raw, str):
            if raw not in HIT_MIXES:
                raise ConfigError(f"{where}: {raw!r} is not a named mix ({', '.join(HIT_MIXES)})"
                                  f"{_did_you_mean(raw, HIT_MIXES)}")
            return dict(HIT_MIXES[raw])
        if isinstance(raw, dict):  # a given mapping: unnamed types get weight 0
            return {k: raw.get(k, 0.0) for k in ("no_hit", "single", "multi", "unintended")} | raw
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.no_hit + self.single + self.multi + self.unintended <= 0:
            raise ConfigError(f"{where}: the weights must not all be 0")

    def probabilities(self) -> dict[str, float]:
        """Normalised probabilities of the four hit types, in :data:`spisim.cxi.HIT_TYPES` order."""
        w = {"no_hit": self.no_hit, "single": self.single, "multi": self.multi, "unintended": self.unintended}
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}


@dataclass(frozen=True)
class MultiSpec:
    """``multi``: multiple hits, 2 to N particles in a cluster."""

    n_min: int = key(2, kind="int", minimum=2, doc="fewest particles in a multiple hit")
    n_max: int = key(4, kind="int", minimum=2, maximum=64, doc="most particles in a multiple hit")
    distribution: str = key("uniform", kind="choice", choices=("uniform", "poisson"),
                            doc="how the number is drawn: uniform on n_min..n_max, or poisson with `mean`, "
                            "redrawn until inside n_min..n_max")
    mean: float = key(2.5, kind="float", minimum=0, exclusive=True, doc="mean of the poisson distribution")
    placement: str = key("touching", kind="choice", choices=("touching", "cluster", "aggregate"),
                         doc="touching: each particle touches one already placed (plus `gap`); cluster: "
                         "centres uniform in a sphere of cluster_radius, without overlaps; aggregate: compact "
                         "interpenetrating clusters, each particle at centre distance (r_j + r_k)(1 - u) from a "
                         "random placed one, u uniform in [0, overlap]")
    gap: float = key(0.0, kind="qty", dim="length", unit="nm", minimum=0,
                     doc="extra distance between the surfaces (bounding spheres) of touching particles")
    cluster_radius: float = key(100e-9, kind="qty", dim="length", unit="nm", minimum=0, exclusive=True,
                                doc="radius of the sphere that holds the centres (cluster placement)")
    overlap: float = key(0.3, kind="float", minimum=0, maximum=0.9,
                         doc="aggregate placement: largest fraction by which the centre distance of two neighbours "
                         "falls short of the sum of their (bounding) radii")
    same_species: bool = key(True, kind="bool", doc="all particles of a multiple hit are of one kind (their "
                             "sizes are drawn each)")
    coherence: str = key("auto", kind="choice", choices=("auto", "coherent", "incoherent"),
                         doc="auto: particles closer than the aliasing limit of the detector add coherently, "
                         "others incoherently (see docs/manifest.md)")

    def check(self, where: str, raw: dict) -> None:
        if self.n_max < self.n_min:
            raise ConfigError(f"{_path(where, 'n_max')} must be >= n_min ({self.n_min}), got {self.n_max}")
        if "overlap" in raw and self.placement != "aggregate":
            raise ConfigError(f"{_path(where, 'overlap')}: only for placement aggregate")


@dataclass(frozen=True)
class DropletSpec:
    """``unintended.droplet``: buffer or water droplets (continuum spheroids)."""

    radius: tuple[float, float] = key((20e-9, 80e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.9, 1.1), kind="range", minimum=0, exclusive=True,
                                      doc="polar/equatorial axis ratio c/a, uniform in [low, high] (1: a sphere)")
    density: float = key(WATER_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density")


@dataclass(frozen=True)
class SaltSpec:
    """``unintended.salt``: salt or contaminant particles (continuum spheroids)."""

    radius: tuple[float, float] = key((5e-9, 25e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.6, 1.6), kind="range", minimum=0, exclusive=True,
                                      doc="axis ratio c/a, uniform in [low, high]")
    density: float = key(NACL_DENSITY, kind="qty", dim="electron_density", unit="e/A^3", minimum=0,
                         exclusive=True, doc="electron density (rock salt: 0.625)")


@dataclass(frozen=True)
class DebrisSpec:
    """``unintended.debris``: clusters of small irregular fragments (continuum spheroids)."""

    n: tuple[int, int] = key((3, 8), kind="int_range", minimum=1, maximum=64,
                             doc="number of fragments, uniform in [low, high]")
    radius: tuple[float, float] = key((3e-9, 12e-9), kind="range", dim="length", unit="nm", minimum=0,
                                      maximum=MAX_PARTICLE_SIZE, exclusive=True,
                                      doc="fragment equatorial radius, uniform in [low, high]")
    aspect: tuple[float, float] = key((0.4, 2.5), kind="range", minimum=0, exclusive=True,
                                      doc="fragment axis ratio c/a, uniform in [low, high]")
    density: float = key(0.5, kind="qty", dim="electron_density", unit="e/A^3", minimum=0, exclusive=True,
                         doc="fragment electron density")
    cluster_radius: float = key(60e-9, kind="qty", dim="length", unit="nm", minimum=0, exclusive=True,
                                doc="fragment centres lie uniformly in a sphere of this radius")


UNINTENDED_KINDS = ("droplet", "salt", "debris", "molecule")


@dataclass(frozen=True)
class UnintendedSpec:
    """``unintended``: hits on what is not the sample."""

    kinds: dict = key({"droplet": 0.4, "salt": 0.3, "debris": 0.2, "molecule": 0.1}, kind="weights",
                      names=UNINTENDED_KINDS, doc="relative weights of droplet, salt, debris and molecule "
                      "(molecule counts only where `molecules` are given)")
    droplet: DropletSpec = key(kind="section", cls=DropletSpec, doc="droplets")
    salt: SaltSpec = key(kind="section", cls=SaltSpec, doc="salt and contaminant particles")
    debris: DebrisSpec = key(kind="section", cls=DebrisSpec, doc="debris clusters")
    molecules: tuple = key((), kind="section_list", cls=ParticleSpec,
                           doc="other molecules (entries like those of `particles`; `weight` picks among them)")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("kinds"), dict):  # unnamed kinds get weight 0
            raw = dict(raw)
            raw["kinds"] = {k: 0.0 for k in UNINTENDED_KINDS} | raw["kinds"]
        return raw

    def check(self, where: str, raw: dict) -> None:
        explicit = isinstance(raw.get("kinds"), dict) and raw["kinds"].get("molecule", 0) > 0
        if explicit and not self.molecules:
            raise ConfigError(f"{_path(where, 'kinds.molecule')}: weight > 0 needs unintended.molecules")
        if sum(self.weights().values()) <= 0:
            raise ConfigError(f"{_path(where, 'kinds')}: the weights must not all be 0")

    def weights(self) -> dict[str, float]:
        """Weights of the kinds that can occur (molecule only with molecules given)."""
        return {k: (0.0 if k == "molecule" and not self.molecules else float(self.kinds.get(k, 0.0)))
                for k in UNINTENDED_KINDS}


@dataclass(frozen=True)
class BackgroundSpec:
    """``noise.background``: smooth scattering from gas, the jet or water around the sample."""

    kind: str = key("gas", kind="choice", choices=("gas", "water", "flat", "template"),
                    doc="radial profile per steradian: gas 1/(1+(q/q0)^2); water a broad ring at 2.0 1/A "
                    "(sigma 0.4 1/A) on a floor of 0.2; flat constant; template: the pattern of `template` (e.g. "
                    "measured on a run)")
    photons: float | None = key(0.0, kind="float", minimum=0, nullable=True,
                                doc="expected background photons per shot on the unmasked detector at the nominal "
                                "pulse energy (0: off); template: null (its default there) keeps the template's own "
                                "total, a number rescales it to that total")
    q0: float = key(0.05, kind="qty", dim="inverse_length", unit="1/A", minimum=0, exclusive=True,
                    doc="width of the gas profile")
    template: str | None = key(None, kind="str", nullable=True,
                               doc="kind template: expected background photons per pixel at the nominal pulse "
                               "energy, in the detector's data shape after detector.bin (2-D for a 1-module "
                               "detector): .npy, FILE.h5:/path/to/dataset, or an HDF5 file with /background")
    jitter: float = key(0.0, kind="float", minimum=0, maximum=3,
                        doc="relative rms of a per-shot log-normal factor (mean 1) of the background alone, on "
                        "top of the pulse-energy jitter; 0: none")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if raw in ("none", False, "off"):
            return {"photons": 0.0}
        if isinstance(raw, dict) and str(raw.get("kind", "")).lower() == "template" and "photons" not in raw:
            return {**raw, "photons": None}  # a template keeps its own total unless told otherwise
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.kind == "template" and self.template is None:
            raise ConfigError(f"{_path(where, 'template')}: missing value (required for kind template)")
        if self.kind != "template":
            if self.template is not None:
                raise ConfigError(f"{_path(where, 'template')}: only for kind template")
            if self.photons is None:
                raise ConfigError(f"{_path(where, 'photons')}: null only for kind template (0: off)")


@dataclass(frozen=True)
class NoiseSpec:
    """``noise``: background and detector effects, each off at its default except Poisson statistics.

    ``noise: none`` turns everything off (also Poisson): frames are then the expected photons (float).
    Detector values (pedestal, readout, common_mode, saturation, hot_level) are in ADU when ``gain`` is
    set, else in photons.
    """

    background: BackgroundSpec = key(kind="section", cls=BackgroundSpec, doc="background (`none`: off)")
    jitter: float = key(0.0, kind="float", minimum=0, maximum=3,
                        doc="relative rms shot-to-shot pulse-energy jitter (log-normal, mean 1; can go below "
                        "nominal)")
    poisson: bool = key(True, kind="bool", doc="Poisson photon statistics")
    gain: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                             doc="ADU per photon; null: frames stay in photons")
    pedestal: float = key(0.0, kind="float", doc="constant offset added to every pixel (ADU or photons)")
    readout: float = key(0.0, kind="float", minimum=0, doc="rms Gaussian readout noise per pixel (ADU or photons)")
    common_mode: float = key(0.0, kind="float", minimum=0,
                             doc="rms of an offset drawn per shot for each panel (or block) (ADU or photons)")
    common_mode_block: tuple | None = key(None, kind="int_list", minimum=1, nullable=True,
                                          doc="[ss, fs] pixels of one common-mode region (an ASIC); null: the "
                                          "whole panel")
    saturation: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                   doc="largest value a pixel can read (ADU or photons); null: none")
    dead_pixels: float = key(0.0, kind="float", minimum=0, maximum=1,
                             doc="fraction of pixels that read no signal (fixed for the dataset)")
    hot_pixels: float = key(0.0, kind="float", minimum=0, maximum=1,
                            doc="fraction of pixels that read hot_level on top of their signal (fixed)")
    hot_level: float | None = key(None, kind="float", minimum=0, exclusive=True, nullable=True,
                                  doc="extra reading of a hot pixel (ADU or photons); null: saturation if set, "
                                  "else 100 photons")
    mask_bad_pixels: bool = key(True, kind="bool", doc="dead and hot pixels are marked in the dataset's mask")
    missing_panels: tuple = key((), kind="int_list", minimum=0,
                                doc="panel indices that read 0 in every shot (masked)")
    beamstop: float = key(0.0, kind="qty", dim="length", unit="mm", minimum=0,
                          doc="radius of a beamstop on the beam axis in the detector plane: no photons reach "
                          "the pixels behind it (masked); 0: none")

    @staticmethod
    def coerce(raw: Any, where: str) -> Any:
        if raw in ("none", False, "off"):
            return {"poisson": False, "background": "none"}
        if isinstance(raw, str):
            raise ConfigError(f"{where}: expected a mapping of noise settings or 'none', got {raw!r}")
        return raw

    def check(self, where: str, raw: dict) -> None:
        if self.common_mode_block is not None and len(self.common_mode_block) != 2:
            got = list(self.common_mode_block)
            raise ConfigError(f"{_path(where, 'common_mode_block')}: expected [ss, fs], got {got}")
        if len(set(self.missing_panels)) != len(self.missing_panels):
            raise ConfigError(f"{_path(where, 'missing_panels')}: a panel is listed twice")

    @property
    def is_off(self) -> bool:
        """True when frames are the expected photons (no effect at all)."""
        return self == NoiseSpec(poisson=False, background=BackgroundSpec(photons=0.0))


@dataclass(frozen=True)
class OutputSpec:
    """``output``: how frames are stored."""

    compression: str = key("gzip", kind="choice", choices=("none", "gzip", "lz4", "zstd", "bitshuffle"),
                           doc="filter of the frame chunks (lz4, zstd and bitshuffle through hdf5plugin)")
    shard_size: int = key(16, kind="int", minimum=1,
                          doc="shots per shard: the unit of work, of resuming and of parallelism")
    dtype: str = key("auto", kind="choice", choices=("auto", "float32", "int32"),
                     doc="frame type; auto: int32 when noise.gain is set, else float32")


@dataclass(frozen=True)
class ScatteringSpec:
    """``scattering``: how structure factors of atomistic particles are computed."""

    method: str = key("fast", kind="choice", choices=("fast", "exact"),
                      doc="fast: a reciprocal-space volume per particle, built once and sliced per shot; "
                      "exact: direct summation over atoms per shot")
    anomalous: bool = key(True, kind="bool", doc="include the anomalous terms f' + i f'' at the photon energy")


@dataclass(frozen=True)
class ManifestSpec:
    """A whole manifest (the root mapping)."""

    seed: int = key(0, kind="int", minimum=0, doc="seed of every random stream of the dataset")
    shots: int = key(100, kind="int", minimum=1, doc="number of shots")
    beam: BeamSpec = key(kind="section", cls=BeamSpec, doc="the X-ray pulse")
    detector: DetectorSpec = key(kind="section", cls=DetectorSpec, doc="the detector")
    particles: tuple = key((), kind="section_list", cls=ParticleSpec, doc="the sample particles")
    hits: HitsSpec = key(kind="section", cls=HitsSpec, doc="mix of hit types")
    multi: MultiSpec = key(kind="section", cls=MultiSpec, doc="multiple hits")
    unintended: UnintendedSpec = key(kind="section", cls=UnintendedSpec, doc="unintended hits")
    noise: NoiseSpec = key(kind="section", cls=NoiseSpec, doc="background and detector effects")
    scattering: ScatteringSpec = key(kind="section", cls=ScatteringSpec, doc="scattering method")
    output: OutputSpec = key(kind="section", cls=OutputSpec, doc="storage")

    def check(self, where: str, raw: dict) -> None:
        if (self.hits.single > 0 or self.hits.multi > 0) and not self.particles:
            raise ConfigError("particles: missing value (single and multiple hits need at least one particle)")
        if self.particles and sum(p.weight for p in self.particles) <= 0:
            raise ConfigError("particles: the weights must not all be 0")
        if self.unintended.molecules and sum(p.weight for p in self.unintended.molecules) <= 0:
            raise ConfigError("unintended.molecules: the weights must not all be 0")
        seen: set[str] = set(UNINTENDED_KINDS)
        for where_, plist in (("particles", self.particles), ("unintended.molecules", self.unintended.molecules)):
            for i, p in enumerate(plist):
                if p.label in seen:
                    raise ConfigError(f"{where_}[{i}].name: {p.label!r} is used twice (give each a distinct name)")
                seen.add(p.label)

    @property
    def max_particles(self) -> int:
        """P: the most particles a shot can hold."""
        return max(1, self.multi.n_max if self.hits.multi > 0 else 1,
                   self.unintended.debris.n[1] if self.hits.unintended > 0 else 1)

    @property
    def structure_names(self) -> list[str]:
        """Names the labels index: particles, then unintended molecules, droplet, salt, debris."""
        return [p.label for p in self.particles] + [m.label for m in self.unintended.molecules] + [
            "droplet", "salt", "debris"]


# ----------------------------------------------------------------------------------------------
# Loading


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

        from .errors import InputFileError

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


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".cxi", ".nxs")
"""File suffixes read as HDF5 by :meth:`Manifest.read_array`."""


def split_dataset(name: str) -> tuple[str, str | None]:
    """``'run.h5:/entry/mask'`` -> ``('run.h5', '/entry/mask')``; a name without ``:/`` after an HDF5 suffix
    -> ``(name, None)``."""
    suffixes = "|".join(s.lstrip(".") for s in HDF5_SUFFIXES)
    m = re.fullmatch(rf"(.+\.(?:{suffixes})):(/.*)", name, flags=re.IGNORECASE)
    return (m.group(1), m.group(2)) if m else (name, None)


BUILTIN_DEFAULT = Path(__file__).with_name("manifests") / "default.yaml"
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
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"manifest {source}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"manifest {source}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"manifest {source}: expected a mapping of keys at the top, got {type(raw).__name__}")
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = _deep_merge(raw, ov)
    try:
        spec = _build(ManifestSpec, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"manifest {source}: {exc}") from None
    return Manifest(spec=spec, text=text, source=source, base_dir=base_dir, overrides=ov)


def load_manifest(path: str | Path | None = None, *, overrides: dict | None = None) -> Manifest:
    """Read and validate a manifest file; ``None`` gives the built-in default (:data:`BUILTIN_DEFAULT`)."""
    if path is None:
        return parse_manifest(BUILTIN_DEFAULT.read_text(), source="<built-in default>", overrides=overrides)
    p = Path(path)
    if not p.is_file():
        from .errors import InputFileError

        raise InputFileError(f"no such manifest file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"manifest {p} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    return parse_manifest(text, source=str(p), base_dir=p.resolve().parent, overrides=overrides)


# ----------------------------------------------------------------------------------------------
# Reference documentation generated from the schema


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
    if kind == "weights":
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in d.items()) + "}"
    if kind == "bool":
        return "true" if d else "false"
    if kind == "section_list":
        return "[]"
    return f"{d:g}" if isinstance(d, float) else str(d)


def _describe_unit(meta: dict) -> str:
    if meta["kind"] in ("qty", "range") and meta["dim"] is not None:
        return meta["unit"]
    if meta["kind"] == "choice":
        return " / ".join(meta["choices"])
    return "-"


def reference_rows(cls: type = ManifestSpec, where: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, unit of a bare number or choices, default, meaning) of every key, depth first."""
    rows = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        here = _path(where, f.name)
        if meta["kind"] == "section":
            rows += reference_rows(meta["cls"], here)
        elif meta["kind"] == "section_list":
            rows.append((here, "list", "[]", meta["doc"]))
            rows += reference_rows(meta["cls"], here + "[]")
        else:
            rows.append((here, _describe_unit(meta), _describe_default(meta), meta["doc"]))
    return rows


def reference_markdown() -> str:
    """The key table of ``docs/manifest.md`` (kept equal to the schema by a test)."""
    lines = ["| key | unit of a bare number (or choices) | default | meaning |", "|---|---|---|---|"]
    for path, unit, default, doc in reference_rows():
        lines.append(f"| `{path}` | {unit} | {default} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m spisim.manifest: print the key table
    print(reference_markdown(), end="")
