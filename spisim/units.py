"""Quantities with units: the one parser of ``'1.6 keV'``, ``'75 um'``, ``'1e12 photons/um^2'`` in the toolkit.

Manifests (:mod:`spisim.manifest`), command-line options (``spi import --distance 0.7m``, ``spi match
--focus 1.5um``) and geometry files (CrystFEL ``clen = 95.3 mm``) all read their quantities here, so that a
unit means the same everywhere and every mistake is one line naming where it came from. A bare number is
read in the unit the caller documents; values come back in the dimension's stored unit (SI: m, J,
photons/m²; photon energies in eV and electron densities in e/Å³, as the physics modules take them) unless
another unit is asked for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .constants import HC_EV_ANGSTROM
from .errors import ConfigError

LENGTH_UNITS = {
    "m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "micron": 1e-6, "microns": 1e-6,
    "nm": 1e-9, "A": 1e-10, "angstrom": 1e-10, "pm": 1e-12,
}
"""Length units in metres."""

PHOTON_ENERGY_UNITS = {"eV": 1.0, "keV": 1e3, "MeV": 1e6}
"""Photon-energy units in eV."""

PULSE_ENERGY_UNITS = {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9}
"""Pulse-energy units in J."""


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
"""The dimensions :func:`parse_quantity` reads, by key."""

NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")
"""A number and what follows it (the unit, possibly empty)."""


def normalise_unit(text: str) -> str:
    """A unit as written (``'µm'``, ``'Å'``, ``'photons/m²'``) in the ASCII spelling of the unit tables."""
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


def unit_factor(dim: str, unit: str) -> float | None:
    """Factor that turns a number in ``unit`` (normalised) into the stored unit of ``dim`` (None: not that
    dimension)."""
    if dim == "length":
        return _lookup(LENGTH_UNITS, unit)
    if dim == "photon_energy":
        return _lookup(PHOTON_ENERGY_UNITS, unit)
    if dim == "pulse_energy":
        return _lookup(PULSE_ENERGY_UNITS, unit)
    if dim == "fluence":
        m = re.fullmatch(r"(?:photons?|ph)?/([A-Za-z]+)\^?2", unit)
        if m and (f := _lookup(LENGTH_UNITS, m.group(1))) is not None:
            return 1.0 / f**2
        return None
    if dim == "electron_density":
        m = re.fullmatch(r"(?:e|electrons?)/([A-Za-z]+)\^?3", unit)
        if m and (f := _lookup(LENGTH_UNITS, m.group(1))) is not None:
            return (1e-10 / f) ** 3
        return None
    if dim == "inverse_length":
        m = re.fullmatch(r"1/([A-Za-z]+)", unit) or re.fullmatch(r"([A-Za-z]+)\^-1", unit)
        if m and (f := _lookup(LENGTH_UNITS, m.group(1))) is not None:
            return 1e-10 / f
        return None
    raise ValueError(f"unknown dimension {dim!r}")


def parse_quantity(value: Any, dim: str, default_unit: str, where: str = "value", *, what: str | None = None,
                   to_unit: str | None = None) -> float:
    """A number with an optional unit suffix, in the stored unit of ``dim`` (or in ``to_unit``).

    Args:
        value: a number (read in ``default_unit``) or a string such as ``'1.6 keV'``.
        dim: a key of :data:`DIMENSIONS`; a photon energy may also be given as a wavelength (``'7.75 A'``).
        default_unit: unit of a bare number.
        where: where the value came from, for messages (a key path, an option, ``file.geom:12``).
        what: the name of a ``key = value`` setting of a file, for messages (``clen``).
        to_unit: return the value in this unit of ``dim`` instead of the stored one (``'A'`` for a length).

    Returns:
        The value in the stored unit (m, eV, J, photons/m², e/Å³ or 1/Å), or in ``to_unit``.

    Raises:
        ConfigError: not a number, a unit of another dimension or none known, a value that is not finite.
    """
    d = DIMENSIONS[dim]
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: expected a {d.name}, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), default_unit
    elif isinstance(value, str):
        m = NUMBER.match(value)
        if not m:
            if what is not None:
                raise ConfigError(f"{where}: cannot read {what} = {value!r} as a number with optional unit")
            raise ConfigError(f"{where}: cannot read {value!r} as a {d.name} (e.g. {d.sample!r})")
        number, unit = float(m.group(1)), (m.group(2) or default_unit)
    else:
        raise ConfigError(f"{where}: expected a {d.name}, got {type(value).__name__} {value!r}")
    unit_n = normalise_unit(unit)
    factor = unit_factor(dim, unit_n)
    if factor is None and dim == "photon_energy":
        length = _lookup(LENGTH_UNITS, unit_n)  # a wavelength
        if length is not None:
            if number <= 0:
                raise ConfigError(f"{where}: a wavelength must be > 0, got {value!r}")
            return HC_EV_ANGSTROM / (number * length / 1e-10)
    if factor is None:
        if what is not None:
            raise ConfigError(f"{where}: unknown unit {unit.strip()!r} in {what} = {value!r} (a {d.name}: use "
                              f"{d.examples})")
        raise ConfigError(f"{where}: unit {unit.strip()!r} is not a {d.name} (use {d.examples})")
    if to_unit is not None:
        target = unit_factor(dim, normalise_unit(to_unit))
        if target is None:
            raise ValueError(f"{to_unit!r} is not a unit of {dim}")  # internal misuse
        factor = factor / target
    result = number * factor
    if not math.isfinite(result):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    return result


def format_quantity(value: float | None, dim: str, unit: str) -> str:
    """``value`` (stored unit of ``dim``) written in ``unit``, e.g. ``'75 um'`` (for documentation)."""
    if value is None:
        return "null"
    factor = unit_factor(dim, normalise_unit(unit))
    assert factor is not None
    return f"{value / factor:.6g} {unit}"
