"""Built-in model particles that need no structure file.

Two kinds:

* **Atomistic** (:func:`sphere`, :func:`spheroid`, :func:`icosahedron`, :func:`shell`, :func:`lobed`): an
  :class:`~spisim.atoms.Atoms` filled with atoms placed uniformly at random inside the shape, with
  the composition and density of a :class:`Material` (protein by default). Deterministic given
  ``seed``. Sizes are given in nanometres (nm); positions come back in ångström (Å), with the
  shape's geometric centre at the origin.
* **Continuum** (:class:`UniformSphere`, :class:`UniformSpheroid`, :class:`UniformShell`): a body of
  uniform electron density (a shell may hold a core of another density) with an analytic form factor
  F(q) in electrons, for particles too large to fill with atoms. Lengths in Å, densities in electrons/Å³.

:func:`make_particle` builds either kind from a manifest-style dict.

Protein composition
-------------------
The average protein is the "averagine" residue of Senko, Beu & McLafferty, J. Am. Soc. Mass Spectrom.
6, 229 (1995): C 4.9384, H 7.7583, N 1.3577, O 1.4773, S 0.0417 per residue (111.1 Da, 59.4
electrons). At a mass density of 1.35 g/cm³ (a common average for proteins; Fischer, Polikarpov &
Craievich, Protein Sci. 13, 2825 (2004)) this gives 0.434 electrons/Å³ and 0.114 atoms/Å³ (about
half of them hydrogen). Atomic masses are gemmi's standard atomic weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import gemmi
import numpy as np

from .atoms import Atoms
from .errors import ConfigError

DALTON_G = 1.66053906660e-24
"""One dalton (unified atomic mass unit) in grams (CODATA 2018)."""

DEFAULT_MAX_ATOMS = 10_000_000
"""Largest atomistic model particle built unless the caller raises ``max_atoms`` (about 340 MB)."""


# --------------------------------------------------------------------------------------------------
# materials
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# atomistic model particles
# --------------------------------------------------------------------------------------------------

_PHI = (1.0 + math.sqrt(5.0)) / 2.0


def icosahedron_vertices(circumradius: float = 1.0) -> np.ndarray:
    """The 12 vertices (12, 3) of the regular icosahedron used here, scaled to `circumradius`.

    Cyclic permutations of (0, ±1, ±φ), φ the golden ratio: two-fold axes along x, y and z.
    """
    base = []
    for s1 in (-1.0, 1.0):
        for s2 in (-1.0, 1.0):
            base += [(0.0, s1, s2 * _PHI), (s1, s2 * _PHI, 0.0), (s2 * _PHI, 0.0, s1)]
    return np.array(base) * (circumradius / math.sqrt(1.0 + _PHI**2))


def _icosahedron_faces(vertices: np.ndarray) -> np.ndarray:
    """(20, 3, 3): vertex triples of the faces (the triples whose three edges have the edge length)."""
    edge = min(np.linalg.norm(vertices[i] - vertices[j]) for i, j in combinations(range(12), 2))
    faces = [
        vertices[[i, j, k]]
        for i, j, k in combinations(range(12), 3)
        if all(abs(np.linalg.norm(vertices[a] - vertices[b]) - edge) < 1e-9 * edge for a, b in ((i, j), (j, k), (i, k)))
    ]
    return np.array(faces)


def _check_length(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")
    return v


def _fill(
    label: str,
    volume_a3: float,
    sampler: Callable[[np.random.Generator, int], np.ndarray],
    material: str | Material,
    seed: int,
    max_atoms: int,
    hydrogens: bool,
) -> Atoms:
    """Atoms of `material` placed uniformly at random in a shape of volume `volume_a3` (Å³)."""
    mat = get_material(material)
    if not hydrogens:
        mat = mat.without_hydrogen()
    n_atoms = int(round(mat.atom_density * volume_a3))
    if n_atoms > max_atoms:
        raise ConfigError(
            f"the atomistic {label} needs {n_atoms:,} atoms, more than max_atoms={max_atoms:,}: use the "
            f"continuum model (model: continuum, an analytic form factor) or raise max_atoms"
        )
    if n_atoms < 1:
        raise ConfigError(f"the atomistic {label} is too small to hold a single atom")
    rng = np.random.default_rng(seed)
    positions = sampler(rng, n_atoms)
    fractions = mat.atom_fractions()
    zs = np.array(list(fractions), dtype=np.int16)
    exact = np.array(list(fractions.values())) * n_atoms
    counts = np.floor(exact).astype(np.int64)
    short = n_atoms - counts.sum()  # largest remainders get the leftover atoms
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    z = rng.permutation(np.repeat(zs, counts))
    return Atoms(positions, z, np.ones(n_atoms), label.replace(" ", "_"))


def _unit_ball(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) points uniform in the unit ball."""
    v = rng.standard_normal((n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * np.cbrt(rng.random(n))[:, None]


def sphere(
    radius_nm: float,
    *,
    material: str | Material = "protein",
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    hydrogens: bool = True,
) -> Atoms:
    """A solid sphere of radius `radius_nm` (nm) filled with atoms of `material`.

    Atom positions (Å) are uniform at random inside the sphere (centre at the origin); the number of
    atoms is the material's atom density times the volume, split between elements by the material's
    atom fractions. With ``hydrogens=False`` the hydrogen atoms are left out (the heavy atoms keep
    their density). Raises ConfigError when more than `max_atoms` atoms would be needed.
    """
    r = _check_length("radius_nm", radius_nm) * 10.0
    volume = 4.0 / 3.0 * math.pi * r**3
    label = f"sphere r={radius_nm:g} nm"
    return _fill(label, volume, lambda rng, n: r * _unit_ball(rng, n), material, seed, max_atoms, hydrogens)


def spheroid(
    a_nm: float,
    c_nm: float,
    *,
    material: str | Material = "protein",
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    hydrogens: bool = True,
) -> Atoms:
    """A solid spheroid filled with atoms: equatorial semi-axis `a_nm` (along x and y), polar `c_nm` (z), nm.

    c > a is prolate, c < a oblate. Otherwise as :func:`sphere`.
    """
    a = _check_length("a_nm", a_nm) * 10.0
    c = _check_length("c_nm", c_nm) * 10.0
    volume = 4.0 / 3.0 * math.pi * a * a * c
    scale = np.array([a, a, c])
    label = f"spheroid a={a_nm:g} nm c={c_nm:g} nm"
    return _fill(label, volume, lambda rng, n: _unit_ball(rng, n) * scale, material, seed, max_atoms, hydrogens)


def shell(
    outer_radius_nm: float,
    thickness_nm: float,
    *,
    material: str | Material = "protein",
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    hydrogens: bool = True,
) -> Atoms:
    """A hollow spherical shell filled with atoms: outer radius and thickness in nm (thickness ≤ radius).

    The material fills outer − thickness < r < outer. Otherwise as :func:`sphere`.
    """
    outer = _check_length("outer_radius_nm", outer_radius_nm) * 10.0
    thick = _check_length("thickness_nm", thickness_nm) * 10.0
    if thick > outer:
        raise ConfigError(f"shell thickness_nm ({thickness_nm}) exceeds outer_radius_nm ({outer_radius_nm})")
    inner = outer - thick
    volume = 4.0 / 3.0 * math.pi * (outer**3 - inner**3)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        v = rng.standard_normal((n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        r = np.cbrt(inner**3 + rng.random(n) * (outer**3 - inner**3))
        return v * r[:, None]

    label = f"shell r={outer_radius_nm:g} nm t={thickness_nm:g} nm"
    return _fill(label, volume, sample, material, seed, max_atoms, hydrogens)


def icosahedron(
    radius_nm: float,
    *,
    material: str | Material = "protein",
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    hydrogens: bool = True,
) -> Atoms:
    """A solid regular icosahedron of circumradius `radius_nm` (nm, centre to vertex) filled with atoms.

    Orientation: vertices as :func:`icosahedron_vertices` (two-fold axes along x, y, z). Points are
    drawn uniformly in one of the 20 equal tetrahedra (centre + face) with Dirichlet(1,1,1,1)
    barycentric weights, which is uniform in the solid. Otherwise as :func:`sphere`.
    """
    r = _check_length("radius_nm", radius_nm) * 10.0
    faces = _icosahedron_faces(icosahedron_vertices(r))
    edge = r / math.sin(2.0 * math.pi / 5.0)  # circumradius = edge · sin(2π/5)
    volume = 5.0 / 12.0 * (3.0 + math.sqrt(5.0)) * edge**3

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.integers(0, faces.shape[0], n)
        w = rng.exponential(size=(n, 4))
        w /= w.sum(axis=1, keepdims=True)  # weight w[:, 0] goes to the centre (the origin)
        return np.einsum("nk,nkd->nd", w[:, 1:], faces[which])

    label = f"icosahedron r={radius_nm:g} nm"
    return _fill(label, volume, sample, material, seed, max_atoms, hydrogens)


def lobe_layout(radius_nm: float, lobes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, 3) and radii (n,) in Å of the overlapping spheres of a :func:`lobed` body.

    Lobe radii are drawn uniformly in [0.35, 0.6] of the envelope radius; the first lobe sits at the
    origin and each later one overlaps a randomly chosen earlier one (centre distance 0.7 × the sum of
    their radii, in a random direction), which gives a compact, contiguous, asymmetric body. The layout is
    then centred on its mean lobe centre weighted by lobe volume and scaled so that the farthest lobe
    surface lies exactly `radius_nm` from the centre. Deterministic given `seed`.
    """
    r_env = _check_length("radius_nm", radius_nm) * 10.0
    if isinstance(lobes, bool) or not isinstance(lobes, int | np.integer) or lobes < 1:
        raise ConfigError(f"lobes must be a positive integer, got {lobes!r}")
    rng = np.random.default_rng([int(seed), 0x10BE5])
    radii = rng.uniform(0.35, 0.6, int(lobes))
    centres = np.zeros((int(lobes), 3))
    for i in range(1, int(lobes)):
        j = int(rng.integers(0, i))
        d = rng.standard_normal(3)
        centres[i] = centres[j] + 0.7 * (radii[i] + radii[j]) * d / np.linalg.norm(d)
    centres -= (radii[:, None] ** 3 * centres).sum(axis=0) / (radii**3).sum()
    scale = r_env / float(np.max(np.linalg.norm(centres, axis=1) + radii))
    return centres * scale, radii * scale


def _union_sampler(centres: np.ndarray, radii: np.ndarray) -> Callable[[np.random.Generator, int], np.ndarray]:
    """A sampler of points uniform in the union of balls (Å): a ball is chosen with probability ∝ its
    volume, a point uniform in it is kept with probability 1 / (number of balls that hold it)."""
    weights = radii**3 / (radii**3).sum()

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        out: list[np.ndarray] = []
        have = 0
        while have < n:
            m = max(2 * (n - have), 1024)
            which = rng.choice(len(radii), size=m, p=weights)
            pts = centres[which] + radii[which, None] * _unit_ball(rng, m)
            inside = (np.linalg.norm(pts[:, None, :] - centres[None], axis=2) <= radii[None]).sum(axis=1)
            keep = rng.random(m) * np.maximum(inside, 1) < 1.0
            out.append(pts[keep])
            have += int(keep.sum())
        return np.concatenate(out)[:n]

    return sample


def union_volume(centres: np.ndarray, radii: np.ndarray, n_samples: int = 400_000, seed: int = 0) -> float:
    """Volume (Å³) of a union of balls, by Monte Carlo over the balls (relative error ~1/√n_samples).

    V = Σ V_i · E[1 / m(x)], x drawn from the volume-weighted mixture of the balls, m(x) the number of
    balls that hold x: exact in expectation, with no bounding-box waste.
    """
    rng = np.random.default_rng([int(seed), 0x0B0A11])
    vols = 4.0 / 3.0 * math.pi * radii**3
    which = rng.choice(len(radii), size=n_samples, p=vols / vols.sum())
    pts = centres[which] + radii[which, None] * _unit_ball(rng, n_samples)
    inside = np.zeros(n_samples)
    for c, r in zip(centres, radii, strict=True):
        inside += np.linalg.norm(pts - c, axis=1) <= r
    return float(vols.sum() * np.mean(1.0 / np.maximum(inside, 1)))


def lobed(
    radius_nm: float,
    lobes: int = 3,
    *,
    material: str | Material = "protein",
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    hydrogens: bool = True,
) -> Atoms:
    """A compact asymmetric body of `lobes` overlapping spheres within `radius_nm` (nm), filled with atoms.

    A stand-in for multi-domain complexes with no symmetry (ribosomes, large enzymes): the lobe layout is
    :func:`lobe_layout` (drawn from `seed`), atoms are uniform in the union of the lobes at the material's
    density (the union volume from :func:`union_volume`). ``lobes=1`` is a sphere. Otherwise as
    :func:`sphere`.
    """
    centres, radii = lobe_layout(radius_nm, lobes, seed)
    volume = union_volume(centres, radii, seed=seed)
    label = f"lobed r={radius_nm:g} nm n={int(lobes)}"
    return _fill(label, volume, _union_sampler(centres, radii), material, seed, max_atoms, hydrogens)


# --------------------------------------------------------------------------------------------------
# continuum model particles
# --------------------------------------------------------------------------------------------------


def sphere_form_factor_shape(x: np.ndarray) -> np.ndarray:
    """Normalised sphere amplitude Φ(x) = 3 (sin x − x cos x) / x³, Φ(0) = 1; `x` = q·R, any shape.

    Below x = 0.05 a Taylor series (to x⁶, error < 1e-16) replaces the cancelling closed form.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < 0.05
    xs = x[small] ** 2
    out[small] = 1.0 - xs / 10.0 + xs**2 / 280.0 - xs**3 / 15120.0
    xl = x[~small]
    out[~small] = 3.0 * (np.sin(xl) - xl * np.cos(xl)) / xl**3
    return out


def _as_q(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ConfigError(f"scattering vectors q must have shape (P, 3) in 1/Å, got {q.shape}")
    return q


@dataclass(frozen=True)
class ContinuumParticle(ABC):
    """A body of uniform electron density with an analytic form factor.

    Subclasses give the geometry; all lengths are Å and `electron_density` is electrons/Å³.
    """

    @property
    @abstractmethod
    def volume(self) -> float:
        """Volume (Å³)."""

    @property
    def n_electrons(self) -> float:
        """Total electrons, ρ·V = F(0)."""
        return self.electron_density * self.volume  # type: ignore[attr-defined]

    @abstractmethod
    def max_radius(self) -> float:
        """Largest distance (Å) of the body's surface from its centre."""

    @abstractmethod
    def radius_of_gyration(self) -> float:
        """Radius of gyration (Å) of the uniform body."""

    @abstractmethod
    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        """Real form factor (electrons) at q (P, 3), 1/Å."""

    def form_factor(self, q: np.ndarray) -> np.ndarray:
        """Form factor F(q) in electrons, complex128 of shape (P,), for `q` (P, 3) in 1/Å.

        `q` is in the particle frame (centre at the origin); F(0) = :attr:`n_electrons`. The bodies are
        centro-symmetric, so F is real (the imaginary part is zero).
        """
        return self._amplitude(_as_q(q)).astype(np.complex128)


def _check_density(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"electron_density must be a number (electrons/Å³), got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"electron_density must be finite and ≥ 0 (electrons/Å³), got {value!r}")
    return v


@dataclass(frozen=True)
class UniformSphere(ContinuumParticle):
    """Uniform sphere: F(q) = ρ V Φ(qR), Φ(x) = 3 (sin x − x cos x) / x³.

    Attributes:
        radius_angstrom: radius R (Å).
        electron_density: ρ (electrons/Å³), default protein.
    """

    radius_angstrom: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius_angstrom", _check_length("radius_angstrom", self.radius_angstrom))
        object.__setattr__(self, "electron_density", _check_density(self.electron_density))

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius_angstrom**3

    def max_radius(self) -> float:
        return self.radius_angstrom

    def radius_of_gyration(self) -> float:
        return math.sqrt(3.0 / 5.0) * self.radius_angstrom

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        return self.n_electrons * sphere_form_factor_shape(np.linalg.norm(q, axis=1) * self.radius_angstrom)


@dataclass(frozen=True)
class UniformSpheroid(ContinuumParticle):
    """Uniform spheroid with semi-axes a (x and y) and c (z), Å.

    It is a unit sphere stretched by S = diag(a, a, c), so F(q) = ρ V Φ(|S q|) with V = 4/3 π a² c:
    the sphere formula with the effective radius along q, R(q̂) = sqrt(a² (q̂x² + q̂y²) + c² q̂z²).

    Attributes:
        a: equatorial semi-axis (Å).
        c: polar semi-axis along z (Å).
        electron_density: ρ (electrons/Å³), default protein.
    """

    a: float
    c: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _check_length("a", self.a))
        object.__setattr__(self, "c", _check_length("c", self.c))
        object.__setattr__(self, "electron_density", _check_density(self.electron_density))

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.a**2 * self.c

    def max_radius(self) -> float:
        return max(self.a, self.c)

    def radius_of_gyration(self) -> float:
        return math.sqrt((2.0 * self.a**2 + self.c**2) / 5.0)

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        x = np.sqrt(self.a**2 * (q[:, 0] ** 2 + q[:, 1] ** 2) + self.c**2 * q[:, 2] ** 2)
        return self.n_electrons * sphere_form_factor_shape(x)


@dataclass(frozen=True)
class UniformShell(ContinuumParticle):
    """Spherical shell of density ρ for inner < r < outer (Å) around a core of density ρ_c for r < inner.

    F(q) = ρ (V_o Φ(q R_o) − V_i Φ(q R_i)) + ρ_c V_i Φ(q R_i), V = 4/3 π R³ and Φ the sphere's normalised
    amplitude: a sphere of ρ minus the inner sphere of ρ − ρ_c. ``core_density = 0`` (default) is a hollow
    shell, as of a capsid without its genome; a capsid with packed nucleic acid has ρ_c > 0.

    Attributes:
        outer: outer radius (Å).
        inner: inner radius (Å), 0 ≤ inner < outer (0 gives a solid sphere).
        electron_density: ρ of the shell (electrons/Å³), default protein.
        core_density: ρ_c of the core (electrons/Å³), default 0 (hollow).
    """

    outer: float
    inner: float
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)
    core_density: float = 0.0

    def __post_init__(self) -> None:
        outer = _check_length("outer", self.outer)
        inner = self.inner
        if isinstance(inner, bool) or not isinstance(inner, int | float | np.integer | np.floating):
            raise ConfigError(f"inner must be a number (Å), got {inner!r}")
        inner = float(inner)
        if not (math.isfinite(inner) and 0.0 <= inner < outer):
            raise ConfigError(f"shell radii must satisfy 0 ≤ inner < outer, got inner={inner}, outer={outer}")
        object.__setattr__(self, "outer", outer)
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "electron_density", _check_density(self.electron_density))
        object.__setattr__(self, "core_density", _check_density(self.core_density))

    @property
    def volume(self) -> float:
        """Volume of the shell material (Å³), without the core."""
        return 4.0 / 3.0 * math.pi * (self.outer**3 - self.inner**3)

    @property
    def n_electrons(self) -> float:
        """Electrons of shell and core, F(0)."""
        return self.electron_density * self.volume + self.core_density * 4.0 / 3.0 * math.pi * self.inner**3

    def max_radius(self) -> float:
        return self.outer

    def radius_of_gyration(self) -> float:
        """√(∫ρ r² dV / ∫ρ dV) of shell and core (Å)."""
        rho, rho_c, ro, ri = self.electron_density, self.core_density, self.outer, self.inner
        if rho_c == 0:
            return math.sqrt(3.0 / 5.0 * (ro**5 - ri**5) / (ro**3 - ri**3))
        second = rho * (ro**5 - ri**5) + rho_c * ri**5  # ∫ρ r² dV · 5 / (4π)
        first = rho * (ro**3 - ri**3) + rho_c * ri**3  # ∫ρ dV · 3 / (4π)
        return math.sqrt(3.0 / 5.0 * second / first)

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        qn = np.linalg.norm(q, axis=1)
        rho = self.electron_density
        v_out = 4.0 / 3.0 * math.pi * self.outer**3
        v_in = 4.0 / 3.0 * math.pi * self.inner**3
        outer = v_out * sphere_form_factor_shape(qn * self.outer)
        inner = v_in * sphere_form_factor_shape(qn * self.inner)
        return rho * (outer - inner) + self.core_density * inner  # core 0: bit for bit the hollow shell


def polyhedron_amplitude(q: Any, vertices: np.ndarray, faces: tuple[tuple[int, ...], ...], density: float) -> Any:
    """Complex form factor (P,) of a uniform convex polyhedron at q (P, 3) Å⁻¹ (numpy or CuPy; result follows q).

    By the divergence theorem, twice: ∫_V e^{iq·r} dV = (−i/q²) Σ_faces (q·n_f) ∫_f e^{iq·r} dS, and a planar
    face's integral is (−i/|q_∥|²) Σ_edges (q·m_e) |t_e| e^{iq·c_e} sinc(q·t_e/2), with n_f the outward face
    normal, q_∥ = q − (q·n_f) n_f, m_e the outward in-plane normal of edge t_e = b − a and c_e its midpoint.
    Where |q_∥| L < 1e-4 (q along the face normal; L the face's size) the face integral is A_f e^{iq·c_f} (c_f the
    centroid, error ~(|q_∥|L)²), and where |q| R < 1e-3 F = ρV(1 − q²R_g²/6). Lengths in Å, density in e/Å³.
    """
    from .backend import get_array_module

    xp = get_array_module(q)
    q = xp.asarray(q, dtype=xp.float64)
    v = np.asarray(vertices, dtype=np.float64)
    q2 = xp.sum(q * q, axis=1)
    total = xp.zeros(q.shape[0], dtype=xp.complex128)
    size = float(np.linalg.norm(v, axis=1).max())
    for face in faces:
        pts = v[list(face)]
        normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
        area2 = np.linalg.norm(normal)
        normal = normal / area2
        centroid, area = _polygon_centroid_area(pts, normal)
        qn = q @ xp.asarray(normal)
        qpar2 = xp.maximum(q2 - qn * qn, 0.0)
        edge_sum = xp.zeros(q.shape[0], dtype=xp.complex128)
        for k in range(len(pts)):
            a, b = pts[k], pts[(k + 1) % len(pts)]
            t = b - a
            m = np.cross(t, normal) / np.linalg.norm(t)
            half = (q @ xp.asarray(t)) / 2.0
            sinc = xp.where(xp.abs(half) < 1e-8, 1.0, xp.sin(half) / xp.where(half == 0, 1.0, half))
            edge_sum += (q @ xp.asarray(m)) * np.linalg.norm(t) * xp.exp(1j * (q @ xp.asarray((a + b) / 2.0))) * sinc
        flat = qpar2 * size * size < 1e-8
        face_int = xp.where(flat, area * xp.exp(1j * (q @ xp.asarray(centroid))),
                            -1j * edge_sum / xp.where(flat, 1.0, qpar2))
        total += qn * face_int
    small = q2 * size * size < 1e-6
    amp = -1j * total / xp.where(small, 1.0, q2)
    volume, rg2 = _polyhedron_volume_rg2(v, faces)
    return density * xp.where(small, volume * (1.0 - q2 * rg2 / 6.0), amp)


def _polygon_centroid_area(pts: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroid (3,) and area of a planar convex polygon (vertices in order), by a fan of triangles."""
    tri = [(pts[0], pts[k], pts[k + 1]) for k in range(1, len(pts) - 1)]
    areas = np.array([0.5 * np.dot(np.cross(b - a, c - a), normal) for a, b, c in tri])
    centres = np.array([(a + b + c) / 3.0 for a, b, c in tri])
    return (areas[:, None] * centres).sum(0) / areas.sum(), float(areas.sum())


def _polyhedron_volume_rg2(v: np.ndarray, faces: tuple[tuple[int, ...], ...]) -> tuple[float, float]:
    """Volume (Å³) and squared radius of gyration about the origin (Å²) of a polyhedron containing the origin.

    Tetrahedra (origin, a, b, c) of a fan over each face: V = a·(b × c)/6, ∫|r|² dV = V/20 (Σ|v_k|² + |Σ v_k|²)
    over the four vertices (the origin adds nothing).
    """
    volume = second = 0.0
    for face in faces:
        pts = v[list(face)]
        for k in range(1, len(pts) - 1):
            a, b, c = pts[0], pts[k], pts[k + 1]
            vol = float(np.dot(a, np.cross(b, c))) / 6.0
            s = a + b + c
            volume += vol
            second += vol / 20.0 * (a @ a + b @ b + c @ c + s @ s)
    return volume, second / volume


@dataclass(frozen=True)
class UniformPolyhedron(ContinuumParticle):
    """A uniform convex polyhedron with its analytic form factor (:func:`polyhedron_amplitude`).

    Attributes:
        vertices: (V, 3) Å, about the centre (the origin lies inside).
        faces: tuples of vertex indices, counter-clockwise seen from outside.
        electron_density: electrons/Å³.
    """

    vertices: np.ndarray
    faces: tuple
    electron_density: float = field(default=PROTEIN_ELECTRON_DENSITY)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or not np.all(np.isfinite(v)):
            raise ConfigError(f"polyhedron vertices must be finite (V, 3) Å, got shape {v.shape}")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", tuple(tuple(int(i) for i in f) for f in self.faces))
        object.__setattr__(self, "electron_density", _check_density(self.electron_density))
        vol, _ = _polyhedron_volume_rg2(v, self.faces)
        if not vol > 0:
            raise ConfigError("polyhedron faces must be ordered counter-clockwise seen from outside (volume <= 0)")

    @classmethod
    def icosahedron(cls, circumradius: float, electron_density: float = PROTEIN_ELECTRON_DENSITY) -> UniformPolyhedron:
        """The regular icosahedron of :func:`icosahedron_vertices` (two-fold axes along x, y, z), radius in Å."""
        r = _check_length("circumradius", circumradius)
        verts = icosahedron_vertices(r)
        faces = []
        for tri in _icosahedron_faces(verts):
            idx = [int(np.flatnonzero(np.all(np.isclose(verts, p, atol=1e-9 * r), axis=1))[0]) for p in tri]
            a, b, c = verts[idx]
            if np.dot(np.cross(b - a, c - a), a + b + c) < 0:
                idx = [idx[0], idx[2], idx[1]]
            faces.append(tuple(idx))
        return cls(verts, tuple(faces), electron_density)

    @property
    def volume(self) -> float:
        return _polyhedron_volume_rg2(self.vertices, self.faces)[0]

    def max_radius(self) -> float:
        return float(np.linalg.norm(self.vertices, axis=1).max())

    def radius_of_gyration(self) -> float:
        return math.sqrt(_polyhedron_volume_rg2(self.vertices, self.faces)[1])

    def _amplitude(self, q: np.ndarray) -> np.ndarray:
        return polyhedron_amplitude(q, self.vertices, self.faces, self.electron_density)

    def form_factor(self, q: np.ndarray) -> np.ndarray:
        """Form factor F(q) in electrons, complex128 (P,), for particle-frame q (P, 3) Å⁻¹ (real for a body with
        a centre of symmetry, such as the icosahedron)."""
        return np.asarray(self._amplitude(_as_q(q)), dtype=np.complex128)


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

_SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "sphere": ("radius_nm",),
    "spheroid": ("a_nm", "c_nm"),
    "icosahedron": ("radius_nm",),
    "shell": ("outer_radius_nm", "thickness_nm"),
    "lobed": ("radius_nm", "lobes"),
}
_COMMON_KEYS = ("shape", "model", "material", "seed")
_ATOMS_KEYS = ("max_atoms", "hydrogens")
_CONTINUUM_KEYS = ("electron_density",)
_CONTINUUM_SHELL_KEYS = ("core_electron_density",)
_ATOMISTIC: dict[str, Callable[..., Atoms]] = {
    "sphere": sphere,
    "spheroid": spheroid,
    "icosahedron": icosahedron,
    "shell": shell,
    "lobed": lobed,
}

SHAPES = tuple(_SIZE_KEYS)
"""Names of the built-in shapes."""

MODELS = ("atoms", "continuum")
"""``atoms``: an :class:`Atoms` filled with atoms; ``continuum``: an analytic form factor."""


def make_particle(spec: Mapping[str, object]) -> Atoms | ContinuumParticle:
    """Build a model particle from a manifest-style dict.

    Keys:
        shape: ``sphere`` (radius_nm), ``spheroid`` (a_nm, c_nm), ``icosahedron`` (radius_nm,
            circumradius), ``shell`` (outer_radius_nm, thickness_nm) or ``lobed``
            (radius_nm, lobes; atoms only); sizes in nm.
        model: ``atoms`` (default) or ``continuum``.
        material: a name in :data:`MATERIALS` (default ``protein``).
        seed: random seed of the atom positions (default 0; accepted but unused for continuum).
        max_atoms, hydrogens: atoms only, see :func:`sphere`.
        electron_density: continuum only, electrons/Å³, overrides the material's.
        core_electron_density: continuum shell only, electrons/Å³ of the core inside the inner radius
            (default 0: hollow).

    Example: ``{"shape": "sphere", "radius_nm": 35, "model": "continuum", "material": "protein"}``.

    Returns:
        :class:`Atoms` (model ``atoms``) or a :class:`ContinuumParticle` (model ``continuum``).

    Raises:
        ConfigError: unknown shape, model, material or key; a missing or impossible size.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a particle spec must be a mapping, got {type(spec).__name__}")
    shape = spec.get("shape")
    if shape not in _SIZE_KEYS:
        raise ConfigError(f"unknown particle shape {shape!r}: choose one of {', '.join(SHAPES)}")
    model = spec.get("model", "atoms")
    if model not in MODELS:
        raise ConfigError(f"unknown particle model {model!r}: choose one of {', '.join(MODELS)}")
    sizes = _SIZE_KEYS[shape]
    allowed = set(_COMMON_KEYS) | set(sizes) | set(_ATOMS_KEYS if model == "atoms" else _CONTINUUM_KEYS)
    if model == "continuum" and shape == "shell":
        allowed |= set(_CONTINUUM_SHELL_KEYS)
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} for a {model} {shape}: allowed are "
            f"{', '.join(sorted(allowed))}"
        )
    missing = [k for k in sizes if k not in spec]
    if missing:
        raise ConfigError(f"particle shape {shape!r} needs {', '.join(missing)} (nm)")
    material = get_material(spec.get("material", "protein"))  # type: ignore[arg-type]
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")

    if model == "atoms":
        kwargs: dict[str, object] = {"material": material, "seed": int(seed)}
        if "max_atoms" in spec:
            max_atoms = spec["max_atoms"]
            if isinstance(max_atoms, bool) or not isinstance(max_atoms, int | np.integer) or max_atoms < 1:
                raise ConfigError(f"max_atoms must be a positive integer, got {max_atoms!r}")
            kwargs["max_atoms"] = int(max_atoms)
        if "hydrogens" in spec:
            if not isinstance(spec["hydrogens"], bool):
                raise ConfigError(f"hydrogens must be true or false, got {spec['hydrogens']!r}")
            kwargs["hydrogens"] = spec["hydrogens"]
        return _ATOMISTIC[shape](*(spec[k] for k in sizes), **kwargs)

    rho = _check_density(spec.get("electron_density", material.electron_density))
    dims = [_check_length(k, spec[k]) * 10.0 for k in sizes]  # nm -> Å
    if shape == "sphere":
        return UniformSphere(dims[0], rho)
    if shape == "spheroid":
        return UniformSpheroid(dims[0], dims[1], rho)
    if shape == "shell":
        outer, thickness = dims
        if thickness > outer:
            raise ConfigError(
                f"shell thickness_nm ({spec['thickness_nm']}) exceeds outer_radius_nm ({spec['outer_radius_nm']})"
            )
        core = _check_density(spec.get("core_electron_density", 0.0))
        return UniformShell(outer, outer - thickness, rho, core)
    if shape == "icosahedron":
        return UniformPolyhedron.icosahedron(dims[0], rho)
    raise ConfigError(f"shape {shape!r} has no continuum model (no analytic form factor): use model 'atoms'")
