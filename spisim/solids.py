"""What the atomistic and the continuum model particles share: the regular icosahedron and the checks of sizes
and densities (lengths as given, densities in electrons/Å³)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from .errors import ConfigError

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


def icosahedron_faces(vertices: np.ndarray) -> np.ndarray:
    """(20, 3, 3): vertex triples of the faces (the triples whose three edges have the edge length)."""
    edge = min(np.linalg.norm(vertices[i] - vertices[j]) for i, j in combinations(range(12), 2))
    faces = [
        vertices[[i, j, k]]
        for i, j, k in combinations(range(12), 3)
        if all(abs(np.linalg.norm(vertices[a] - vertices[b]) - edge) < 1e-9 * edge for a, b in ((i, j), (j, k), (i, k)))
    ]
    return np.array(faces)


def check_length(name: str, value: object) -> float:
    """``value`` as a float; ConfigError naming ``name`` unless it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")
    return v



def check_density(value: object) -> float:
    """``value`` as a float; ConfigError unless it is a finite electron density >= 0 (electrons/Å³)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"electron_density must be a number (electrons/Å³), got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"electron_density must be finite and ≥ 0 (electrons/Å³), got {value!r}")
    return v
