"""Checks and preparation shared by every scattering path.

Atoms are sorted by element so that a kernel looks up an element's form factor once per pixel and
sums exp(i q·r) over that element's atoms only. Rotations follow one convention everywhere:
a particle turned by R (r → R r) has F_R(q) = Σ f exp(i q·R r) = F(Rᵀ q), so the paths rotate the
q vectors, q' = Rᵀ q (as rows: q' = q @ R), and never the atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..atoms import Atoms
from ..errors import ConfigError
from ..formfactors import FormFactors

PRECISIONS = ("double", "single")


@dataclass(frozen=True)
class ElementGroups:
    """Atoms sorted by element, with their form factors at one photon energy.

    Attributes:
        positions: (N, 3) float64, Å, sorted by element.
        occupancies: (N,) float64, in the same order.
        element_index: (N,) int32, row of the form-factor table of each atom.
        starts: (n_elements + 1,) int64; atoms of element e are rows starts[e]:starts[e + 1].
        form_factors: :class:`~spisim.formfactors.FormFactors` of the elements present.
    """

    positions: np.ndarray
    occupancies: np.ndarray
    element_index: np.ndarray
    starts: np.ndarray
    form_factors: FormFactors

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def group(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n_e, 3) Å and occupancies (n_e,) of element row `e`."""
        sl = slice(int(self.starts[e]), int(self.starts[e + 1]))
        return self.positions[sl], self.occupancies[sl]


def group_atoms(atoms: Atoms, photon_energy_ev: float, anomalous: bool = True) -> ElementGroups:
    """Sort `atoms` by element and tabulate their form factors at `photon_energy_ev` (eV)."""
    if not isinstance(atoms, Atoms):
        raise ConfigError(f"expected spisim.atoms.Atoms, got {type(atoms).__name__}")
    ff = FormFactors(atoms.atomic_numbers, photon_energy_ev, anomalous=anomalous)
    idx = ff.index(atoms.atomic_numbers) if len(atoms) else np.zeros(0, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    counts = np.bincount(idx, minlength=len(ff))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ElementGroups(
        positions=np.ascontiguousarray(atoms.positions[order]),
        occupancies=np.ascontiguousarray(atoms.occupancies[order]),
        element_index=np.ascontiguousarray(idx[order].astype(np.int32)),
        starts=starts,
        form_factors=ff,
    )


def check_q(q: np.ndarray) -> np.ndarray:
    """`q` as C-contiguous float64 (P, 3) Å⁻¹; ConfigError if the shape is wrong or a value is not finite."""
    arr = np.ascontiguousarray(q, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ConfigError(f"q vectors must have shape (P, 3) in 1/Å, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError("q vectors contain NaN or infinite values")
    return arr


def check_rotation(rotation: np.ndarray | None, atol: float = 1e-6) -> np.ndarray:
    """`rotation` as float64 (3, 3) (identity for None); ConfigError unless it is a proper rotation."""
    if rotation is None:
        return np.eye(3)
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3):
        raise ConfigError(f"rotation must be a (3, 3) matrix, got shape {r.shape}")
    if np.abs(r.T @ r - np.eye(3)).max() > atol or abs(np.linalg.det(r) - 1.0) > atol:
        raise ConfigError("rotation is not a proper rotation matrix (RᵀR = 1, det R = +1)")
    return r


def check_precision(precision: str) -> str:
    """`precision` if it is "double" or "single", else ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def rotate_q(q: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """q' = Rᵀ q for each row of `q` (P, 3): the particle-frame q of a particle turned by R."""
    return q @ rotation
