"""The atomic model of a particle: what every scattering path consumes.

An :class:`Atoms` holds positions in ångström (Å) in the particle frame, one atomic number and
one occupancy per atom. Structures read from files (:mod:`spisim.structure`) and the built-in
model particles (:mod:`spisim.particles`) both produce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Atoms:
    """Atoms of one particle.

    Attributes:
        positions: (N, 3) float64, Å, particle frame.
        atomic_numbers: (N,) int16, Z of each atom (1..98).
        occupancies: (N,) float64 in [0, 1]; scales each atom's scattering factor.
        name: label of the particle (PDB id, file stem or model shape).
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    occupancies: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = "particle"

    def __post_init__(self) -> None:
        pos = np.ascontiguousarray(self.positions, dtype=np.float64)
        z = np.ascontiguousarray(self.atomic_numbers, dtype=np.int16)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ConfigError(f"atom positions must have shape (N, 3), got {pos.shape}")
        if z.shape != (pos.shape[0],):
            raise ConfigError(f"atomic_numbers must have shape ({pos.shape[0]},), got {z.shape}")
        if z.size and (z.min() < 1 or z.max() > 98):
            raise ConfigError(f"atomic numbers must lie in 1..98, got {int(z.min())}..{int(z.max())}")
        occ = self.occupancies
        occ = np.ones(pos.shape[0]) if occ is None else np.ascontiguousarray(occ, dtype=np.float64)
        if occ.shape != (pos.shape[0],):
            raise ConfigError(f"occupancies must have shape ({pos.shape[0]},), got {occ.shape}")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "atomic_numbers", z)
        object.__setattr__(self, "occupancies", occ)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def elements(self) -> np.ndarray:
        """Sorted unique atomic numbers present, shape (n_elements,)."""
        return np.unique(self.atomic_numbers)

    def electron_weights(self) -> np.ndarray:
        """Electrons per atom, Z × occupancy, shape (N,)."""
        return self.atomic_numbers.astype(np.float64) * self.occupancies

    def electron_centre(self) -> np.ndarray:
        """Electron-density centre (Å), shape (3,)."""
        w = self.electron_weights()
        return (w[:, None] * self.positions).sum(0) / w.sum()

    def centred(self) -> Atoms:
        """A copy translated so that the electron-density centre lies at the origin."""
        return Atoms(self.positions - self.electron_centre(), self.atomic_numbers, self.occupancies, self.name)

    def radius_of_gyration(self) -> float:
        """Electron-weighted radius of gyration (Å)."""
        w = self.electron_weights()
        d = self.positions - self.electron_centre()
        return float(np.sqrt((w * (d**2).sum(1)).sum() / w.sum()))

    def max_radius(self) -> float:
        """Largest distance (Å) of an atom from the electron-density centre."""
        if len(self) == 0:
            return 0.0
        return float(np.sqrt(((self.positions - self.electron_centre()) ** 2).sum(1).max()))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray | None = None) -> Atoms:
        """Atoms at R·r + t: `rotation` (3, 3), `translation` (3,) in Å."""
        pos = self.positions @ np.asarray(rotation, dtype=np.float64).T
        if translation is not None:
            pos = pos + np.asarray(translation, dtype=np.float64)
        return Atoms(pos, self.atomic_numbers, self.occupancies, self.name)

    def by_element(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Positions (n, 3) Å and occupancies (n,) grouped by atomic number."""
        return {
            int(z): (self.positions[self.atomic_numbers == z], self.occupancies[self.atomic_numbers == z])
            for z in self.elements
        }
