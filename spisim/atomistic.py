"""Atomistic model particles: an :class:`~spisim.atoms.Atoms` filled with atoms placed uniformly at random inside
a built-in shape (:func:`sphere`, :func:`spheroid`, :func:`icosahedron`, :func:`shell`, :func:`lobed`), with the
composition and density of a :class:`~spisim.materials.Material` (protein by default). Deterministic given
``seed``. Sizes are given in nanometres (nm); positions come back in ångström (Å), with the shape's geometric
centre at the origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .atoms import Atoms
from .errors import ConfigError
from .materials import Material, get_material
from .solids import check_length, icosahedron_faces, icosahedron_vertices

DEFAULT_MAX_ATOMS = 10_000_000
"""Largest atomistic model particle built unless the caller raises ``max_atoms`` (about 340 MB)."""


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
    r = check_length("radius_nm", radius_nm) * 10.0
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
    a = check_length("a_nm", a_nm) * 10.0
    c = check_length("c_nm", c_nm) * 10.0
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
    outer = check_length("outer_radius_nm", outer_radius_nm) * 10.0
    thick = check_length("thickness_nm", thickness_nm) * 10.0
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
    r = check_length("radius_nm", radius_nm) * 10.0
    faces = icosahedron_faces(icosahedron_vertices(r))
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
    r_env = check_length("radius_nm", radius_nm) * 10.0
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
