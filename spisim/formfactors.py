"""Atomic scattering factors f(|q|, E) = f0(|q|) + f′(E) + i f″(E), in electrons.

* f0 is the non-resonant (Thomson) part from the International Tables Vol. C 1992 (IT92) fit
  f0(s) = Σ_{i=1..4} a_i exp(−b_i s²) + c, with s = sin θ / λ = |q| / 4π (Å⁻¹), taken from gemmi
  (``gemmi.Element(Z).it92``). The fit holds for s ≤ 2 Å⁻¹ (|q| ≲ 25 Å⁻¹).
* f′ and f″ are the anomalous (resonant) corrections at the photon energy from gemmi's
  Cromer–Liberman implementation (``gemmi.cromer_liberman``), which covers Z = 3 (Li) … 92 (U);
  for H and He they are zero (negligible).

q here is the scattering vector q = k_out − k_in with |q| = 4π sin θ / λ in Å⁻¹.
"""

from __future__ import annotations

from collections.abc import Iterable

import gemmi
import numpy as np

from .errors import ConfigError

FOUR_PI = 4.0 * np.pi
MAX_Z_IT92 = 98
"""Largest atomic number with IT92 coefficients in gemmi (Cf)."""

MAX_Z_ANOMALOUS = 92
"""Largest atomic number gemmi's Cromer–Liberman tables cover (U)."""


def atomic_number(element: int | str) -> int:
    """Atomic number of an element given as Z (int) or symbol (str, any case); ConfigError if unknown."""
    if isinstance(element, str) and element.strip().isdigit():
        element = int(element)
    if isinstance(element, str):
        z = gemmi.Element(element.strip()).atomic_number if element.strip() else 0
        if z == 0:
            raise ConfigError(f"unknown element symbol {element!r}")
        return int(z)
    z = int(element)
    if not 1 <= z <= MAX_Z_IT92:
        raise ConfigError(f"unknown element: atomic number {z} (form factors exist for Z = 1..{MAX_Z_IT92})")
    return z


def it92_coefficients(element: int | str) -> tuple[np.ndarray, np.ndarray, float]:
    """IT92 coefficients of one element: a (4,), b (4,) in Å², c, for f0(s) = Σ a exp(−b s²) + c."""
    coef = gemmi.Element(atomic_number(element)).it92
    if coef is None:  # pragma: no cover - gemmi has all of 1..98
        raise ConfigError(f"no IT92 form-factor coefficients for element {element!r}")
    a = np.asarray(coef.a, dtype=np.float64)
    b = np.asarray(coef.b, dtype=np.float64)
    return a, b, float(coef.c)


def f0(element: int | str, q_abs: np.ndarray | float) -> np.ndarray:
    """Non-resonant form factor f0 (electrons) of one element at |q| (Å⁻¹), same shape as `q_abs`."""
    a, b, c = it92_coefficients(element)
    s2 = (np.asarray(q_abs, dtype=np.float64) / FOUR_PI) ** 2
    return (a[:, None] * np.exp(-b[:, None] * s2.reshape(1, -1))).sum(0).reshape(np.shape(q_abs)) + c


def anomalous_correction(element: int | str, photon_energy_ev: float) -> tuple[float, float]:
    """(f′, f″) in electrons of one element at `photon_energy_ev` (eV), Cromer–Liberman via gemmi.

    Zero for H and He. ConfigError for Z > 92 (no tables) or a non-positive energy.
    """
    z = atomic_number(element)
    if not photon_energy_ev > 0:
        raise ConfigError(f"photon energy must be positive, got {photon_energy_ev} eV")
    if z > MAX_Z_ANOMALOUS:
        raise ConfigError(f"no anomalous (f′, f″) data for Z = {z} > {MAX_Z_ANOMALOUS}; compute with anomalous=False")
    fp, fpp = gemmi.cromer_liberman(z=z, energy=float(photon_energy_ev))
    return float(fp), float(fpp)


class FormFactors:
    """Scattering factors of a set of elements at one photon energy.

    Args:
        atomic_numbers: elements present, as Z or symbols, any order, repeats allowed (e.g. every
            atom's Z); they are reduced to the sorted unique set :attr:`elements`.
        photon_energy_ev: photon energy (eV), used for f′ and f″.
        anomalous: include f′ + i f″; without it f = f0 is real (Friedel's law holds).

    Attributes:
        elements: (n_elements,) int, sorted unique atomic numbers; row i of :meth:`table` is elements[i].
        a, b: (n_elements, 4) IT92 coefficients (b in Å²); c: (n_elements,).
        f_prime, f_double_prime: (n_elements,) electrons (zeros when anomalous is False).
    """

    def __init__(
        self, atomic_numbers: Iterable[int | str] | np.ndarray, photon_energy_ev: float, anomalous: bool = True
    ) -> None:
        raw = np.asarray(atomic_numbers).ravel()
        if raw.dtype.kind in "US":
            zs = {atomic_number(str(s)) for s in raw}
        else:
            zs = {atomic_number(int(z)) for z in np.unique(raw)}
        if not photon_energy_ev > 0:
            raise ConfigError(f"photon energy must be positive, got {photon_energy_ev} eV")
        self.elements = np.array(sorted(zs), dtype=np.int64)
        self.photon_energy_ev = float(photon_energy_ev)
        self.anomalous = bool(anomalous)
        n = self.elements.size
        self.a = np.empty((n, 4))
        self.b = np.empty((n, 4))
        self.c = np.empty(n)
        self.f_prime = np.zeros(n)
        self.f_double_prime = np.zeros(n)
        for i, z in enumerate(self.elements):
            self.a[i], self.b[i], self.c[i] = it92_coefficients(int(z))
            if anomalous:
                self.f_prime[i], self.f_double_prime[i] = anomalous_correction(int(z), photon_energy_ev)

    def __len__(self) -> int:
        return int(self.elements.size)

    def index(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """Row of :meth:`table` for each atomic number in `atomic_numbers` (any shape, int64 result)."""
        z = np.asarray(atomic_numbers)
        idx = np.searchsorted(self.elements, z)
        idx_c = np.clip(idx, 0, max(len(self) - 1, 0))
        if len(self) == 0 or np.any(self.elements[idx_c] != z):
            missing = sorted(set(np.unique(z).tolist()) - set(self.elements.tolist()))
            raise ConfigError(f"elements {missing} are not in this FormFactors set {self.elements.tolist()}")
        return idx_c.astype(np.int64)

    def f0_table(self, q_abs: np.ndarray) -> np.ndarray:
        """f0 (electrons), float64 (n_elements, P), at |q| = `q_abs` (P,) Å⁻¹."""
        q = np.asarray(q_abs, dtype=np.float64).ravel()
        s2 = (q / FOUR_PI) ** 2
        out = np.repeat(self.c[:, None], q.size, axis=1)
        for k in range(4):
            out += self.a[:, k : k + 1] * np.exp(-self.b[:, k : k + 1] * s2[None, :])
        return out

    def table(self, q_abs: np.ndarray) -> np.ndarray:
        """f = f0 + f′ + i f″ (electrons), complex128 (n_elements, P), at |q| = `q_abs` (P,) Å⁻¹."""
        f = self.f0_table(q_abs).astype(np.complex128)
        f += (self.f_prime + 1j * self.f_double_prime)[:, None]
        return f

    def row(self, e: int, q_abs: np.ndarray) -> np.ndarray:
        """f of element row `e` only (electrons), complex128 of the shape of `q_abs` (Å⁻¹)."""
        s2 = np.square(np.asarray(q_abs, dtype=np.float64) / FOUR_PI)
        f0 = np.full(s2.shape, self.c[e])
        tmp = np.empty_like(s2)
        for k in range(4):
            np.multiply(s2, -self.b[e, k], out=tmp)
            np.exp(tmp, out=tmp)
            tmp *= self.a[e, k]
            f0 += tmp
        f = f0.astype(np.complex128)
        f += self.f_prime[e] + 1j * self.f_double_prime[e]
        return f

    def forward(self) -> np.ndarray:
        """f at q = 0 (electrons), complex128 (n_elements,)."""
        return self.table(np.zeros(1))[:, 0]
