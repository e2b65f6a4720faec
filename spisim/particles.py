"""Built-in model particles that need no structure file: the registry of shapes and :func:`make_particle`.

Two kinds:

* **Atomistic** (:mod:`spisim.atomistic`: :func:`sphere`, :func:`spheroid`, :func:`icosahedron`, :func:`shell`,
  :func:`lobed`): an :class:`~spisim.atoms.Atoms` filled with atoms placed uniformly at random inside the shape,
  with the composition and density of a :class:`~spisim.materials.Material` (protein by default). Deterministic
  given ``seed``. Sizes are given in nanometres (nm); positions come back in ångström (Å), with the shape's
  geometric centre at the origin.
* **Continuum** (:mod:`spisim.continuum`: :class:`UniformSphere`, :class:`UniformSpheroid`, :class:`UniformShell`,
  :class:`UniformPolyhedron`): a body of uniform electron density (a shell may hold a core of another density)
  with an analytic form factor F(q) in electrons, for particles too large to fill with atoms. Lengths in Å,
  densities in electrons/Å³.

:func:`make_particle` builds either kind from a manifest-style dict. The names of both modules and of
:mod:`spisim.materials` stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .atomistic import DEFAULT_MAX_ATOMS, icosahedron, lobe_layout, lobed, shell, sphere, spheroid, union_volume
from .atoms import Atoms
from .continuum import (
    ContinuumParticle,
    UniformPolyhedron,
    UniformShell,
    UniformSphere,
    UniformSpheroid,
    polyhedron_amplitude,
    sphere_form_factor_shape,
)
from .errors import ConfigError
from .materials import (
    DALTON_G,
    GOLD_ELECTRON_DENSITY,
    MATERIALS,
    NACL_ELECTRON_DENSITY,
    PROTEIN_ELECTRON_DENSITY,
    WATER_ELECTRON_DENSITY,
    Material,
    get_material,
)
from .solids import check_density, check_length, icosahedron_vertices

__all__ = [  # the registry, and re-exported: the shapes (spisim.atomistic), bodies (spisim.continuum), materials
    "DALTON_G", "DEFAULT_MAX_ATOMS", "GOLD_ELECTRON_DENSITY", "MATERIALS", "MODELS", "NACL_ELECTRON_DENSITY",
    "PROTEIN_ELECTRON_DENSITY", "SHAPES", "WATER_ELECTRON_DENSITY", "ContinuumParticle", "Material",
    "UniformPolyhedron", "UniformShell", "UniformSphere", "UniformSpheroid", "get_material", "icosahedron",
    "icosahedron_vertices", "lobe_layout", "lobed", "make_particle", "polyhedron_amplitude", "shell", "sphere",
    "sphere_form_factor_shape", "spheroid", "union_volume",
]

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

    rho = check_density(spec.get("electron_density", material.electron_density))
    dims = [check_length(k, spec[k]) * 10.0 for k in sizes]  # nm -> Å
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
        core = check_density(spec.get("core_electron_density", 0.0))
        return UniformShell(outer, outer - thickness, rho, core)
    if shape == "icosahedron":
        return UniformPolyhedron.icosahedron(dims[0], rho)
    raise ConfigError(f"shape {shape!r} has no continuum model (no analytic form factor): use model 'atoms'")
