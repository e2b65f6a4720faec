"""Materials of the built-in model particles: composition per formula unit and mass density.

Protein composition
-------------------
The average protein is the "averagine" residue of Senko, Beu & McLafferty, J. Am. Soc. Mass Spectrom.
6, 229 (1995): C 4.9384, H 7.7583, N 1.3577, O 1.4773, S 0.0417 per residue (111.1 Da, 59.4
electrons). At a mass density of 1.35 g/cm³ (a common average for proteins; Fischer, Polikarpov &
Craievich, Protein Sci. 13, 2825 (2004)) this gives 0.434 electrons/Å³ and 0.114 atoms/Å³ (about
half of them hydrogen). Atomic masses are gemmi's standard atomic weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import gemmi

from .errors import ConfigError

DALTON_G = 1.66053906660e-24
"""One dalton (unified atomic mass unit) in grams (CODATA 2018)."""


@dataclass(frozen=True)
class Material:
    """A homogeneous material: composition per formula unit and mass density.

    Attributes:
        name: label, e.g. ``"protein"``.
        composition: atomic number Z -> number of such atoms per formula unit (may be fractional).
        mass_density_g_cm3: mass density (g/cm³).
    """

    name: str
    composition: Mapping[int, float]
    mass_density_g_cm3: float

    @property
    def formula_mass_da(self) -> float:
        """Mass of one formula unit (Da)."""
        return sum(n * gemmi.Element(z).weight for z, n in self.composition.items())

    @property
    def electrons_per_formula(self) -> float:
        """Electrons of one formula unit."""
        return float(sum(n * z for z, n in self.composition.items()))

    @property
    def formula_units_per_a3(self) -> float:
        """Number density of formula units (1/Å³)."""
        return self.mass_density_g_cm3 * 1e-24 / (self.formula_mass_da * DALTON_G)

    @property
    def electron_density(self) -> float:
        """Electron density (electrons/Å³)."""
        return self.formula_units_per_a3 * self.electrons_per_formula

    @property
    def atom_density(self) -> float:
        """Number density of atoms (1/Å³)."""
        return self.formula_units_per_a3 * sum(self.composition.values())

    def atom_fractions(self) -> dict[int, float]:
        """Z -> fraction of the atoms that have that Z (sums to 1)."""
        total = sum(self.composition.values())
        return {z: n / total for z, n in sorted(self.composition.items())}

    def without_hydrogen(self) -> Material:
        """The same material with its hydrogen atoms removed and the other atoms left where they are.

        The number density of the heavy atoms is unchanged; mass and electron density drop by the
        hydrogens' share (like a structure from crystallography, which lists no hydrogens).
        """
        if 1 not in self.composition:
            return self
        comp = {z: n for z, n in self.composition.items() if z != 1}
        heavy = Material(self.name, comp, 1.0)
        density = self.formula_units_per_a3 * heavy.formula_mass_da * DALTON_G / 1e-24
        return Material(f"{self.name} without H", comp, density)


MATERIALS: dict[str, Material] = {
    "protein": Material("protein", {6: 4.9384, 1: 7.7583, 7: 1.3577, 8: 1.4773, 16: 0.0417}, 1.35),
    "water": Material("water", {1: 2.0, 8: 1.0}, 0.9982),  # liquid water at 20 °C
    "nacl": Material("nacl", {11: 1.0, 17: 1.0}, 2.165),  # rock salt
    "gold": Material("gold", {79: 1.0}, 19.32),
}
"""Built-in materials by name (mass densities at room temperature, g/cm³)."""

PROTEIN_ELECTRON_DENSITY = MATERIALS["protein"].electron_density
"""Average protein at 1.35 g/cm³: ≈ 0.434 electrons/Å³."""

WATER_ELECTRON_DENSITY = MATERIALS["water"].electron_density
"""Liquid water at 20 °C (0.9982 g/cm³): ≈ 0.334 electrons/Å³."""

NACL_ELECTRON_DENSITY = MATERIALS["nacl"].electron_density
"""Sodium chloride (2.165 g/cm³): ≈ 0.625 electrons/Å³."""

GOLD_ELECTRON_DENSITY = MATERIALS["gold"].electron_density
"""Gold (19.32 g/cm³): ≈ 4.66 electrons/Å³."""


def get_material(material: str | Material) -> Material:
    """A :class:`Material` from its name in :data:`MATERIALS` (case-insensitive) or as given."""
    if isinstance(material, Material):
        return material
    if not isinstance(material, str) or material.lower() not in MATERIALS:
        raise ConfigError(f"unknown material {material!r}: choose one of {', '.join(MATERIALS)}")
    return MATERIALS[material.lower()]
