"""The incident X-ray pulse: photon energy, pulse size, focal spot profile and polarisation.

SI inside (m, J, photons/m²); the photon energy is given in eV and the wavelength reported in Å as
well as m. The focus lies in the x–y plane at z = 0 around the beam axis; its transverse profile is

* ``gaussian``: J(r) = N / (2πσ²) · exp(−r² / 2σ²) with FWHM = ``focus_diameter_m`` = 2√(2 ln 2) σ;
* ``flattop``: J(r) = N / (π R²) for r ≤ R = ``focus_diameter_m`` / 2, else 0;

so that the fluence integrates over the plane to the N photons of the pulse.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import EV, HC_EV_ANGSTROM
from .errors import ConfigError

PROFILES: tuple[str, ...] = ("gaussian", "flattop")
"""Focal spot profiles understood by :class:`Beam`."""

POLARIZATIONS: tuple[str, ...] = ("horizontal", "vertical", "none")
"""Polarisations understood by :class:`Beam` (and ``Detector.polarization_factor``)."""

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _positive(value: Any, name: str, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"beam {name} must be a number ({unit}), got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"beam {name} must be positive and finite ({unit}), got {value!r}")
    return v


@dataclass(frozen=True)
class Beam:
    """One X-ray pulse at the interaction point.

    Give the pulse size as ``pulse_energy_j`` (J) or as ``pulse_photons`` (photons), exactly one.

    Attributes:
        photon_energy_ev: photon energy (eV).
        pulse_energy_j: energy of the pulse at the sample (J), or None.
        pulse_photons: photons in the pulse at the sample, or None.
        focus_diameter_m: FWHM of a gaussian focus or diameter of a flat-top focus (m).
        profile: ``"gaussian"`` or ``"flattop"``.
        polarization: ``"horizontal"`` (along x), ``"vertical"`` (along y) or ``"none"``.
        sample_radius_m: radius (m) of the disk in which :meth:`sample_position` puts particles;
            None means half the FWHM (gaussian) or the focus radius (flat-top).

    Raises:
        ConfigError: a non-positive or non-finite quantity, both or neither pulse sizes, an unknown
            profile or polarisation.
    """

    photon_energy_ev: float
    pulse_energy_j: float | None = None
    pulse_photons: float | None = None
    focus_diameter_m: float = 1e-6
    profile: str = "gaussian"
    polarization: str = "horizontal"
    sample_radius_m: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "photon_energy_ev", _positive(self.photon_energy_ev, "photon_energy_ev", "eV"))
        if (self.pulse_energy_j is None) == (self.pulse_photons is None):
            raise ConfigError("give exactly one of beam pulse_energy_j (J) and pulse_photons (photons per pulse)")
        if self.pulse_energy_j is not None:
            object.__setattr__(self, "pulse_energy_j", _positive(self.pulse_energy_j, "pulse_energy_j", "J"))
        else:
            object.__setattr__(self, "pulse_photons", _positive(self.pulse_photons, "pulse_photons", "photons"))
        object.__setattr__(self, "focus_diameter_m", _positive(self.focus_diameter_m, "focus_diameter_m", "m"))
        profile = str(self.profile).strip().lower().replace("-", "").replace("_", "")
        profile = {"gauss": "gaussian", "tophat": "flattop"}.get(profile, profile)
        if profile not in PROFILES:
            raise ConfigError(f"unknown beam profile {self.profile!r}: use gaussian or flattop")
        object.__setattr__(self, "profile", profile)
        pol = str(self.polarization).strip().lower()
        pol = {"unpolarized": "none", "unpolarised": "none", "x": "horizontal", "y": "vertical"}.get(pol, pol)
        if pol not in POLARIZATIONS:
            raise ConfigError(f"unknown beam polarization {self.polarization!r}: use horizontal, vertical or none")
        object.__setattr__(self, "polarization", pol)
        if self.sample_radius_m is not None:
            object.__setattr__(self, "sample_radius_m", _positive(self.sample_radius_m, "sample_radius_m", "m"))

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_wavelength(cls, wavelength_angstrom: float, **kw: Any) -> Beam:
        """A beam of wavelength ``wavelength_angstrom`` (Å); other fields as keywords."""
        lam = _positive(wavelength_angstrom, "wavelength", "Å")
        return cls(photon_energy_ev=HC_EV_ANGSTROM / lam, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Beam:
        """A beam from a mapping of field names (as in a manifest); ConfigError on unknown keys.

        ``wavelength_angstrom`` may replace ``photon_energy_ev``.
        """
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"wavelength_angstrom"}
        if unknown:
            raise ConfigError(
                f"unknown beam option(s) {sorted(unknown)}; allowed: {sorted(names | {'wavelength_angstrom'})}"
            )
        if "wavelength_angstrom" in d:
            if "photon_energy_ev" in d:
                raise ConfigError("give the beam photon_energy_ev or wavelength_angstrom, not both")
            return cls.from_wavelength(d.pop("wavelength_angstrom"), **d)
        if "photon_energy_ev" not in d:
            raise ConfigError("beam needs photon_energy_ev (eV) or wavelength_angstrom (Å)")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Beam:
        """A copy with some fields changed (validated again)."""
        if "pulse_photons" in changes and "pulse_energy_j" not in changes:
            changes["pulse_energy_j"] = None
        elif "pulse_energy_j" in changes and "pulse_photons" not in changes:
            changes["pulse_photons"] = None
        return dataclasses.replace(self, **changes)

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def wavelength_angstrom(self) -> float:
        """λ (Å)."""
        return HC_EV_ANGSTROM / self.photon_energy_ev

    @property
    def wavelength_m(self) -> float:
        """λ (m)."""
        return self.wavelength_angstrom * 1e-10

    @property
    def wavenumber_per_angstrom(self) -> float:
        """|k| = 2π/λ (Å⁻¹)."""
        return 2.0 * math.pi / self.wavelength_angstrom

    @property
    def photon_energy_j(self) -> float:
        """Energy of one photon (J)."""
        return self.photon_energy_ev * EV

    @property
    def photons_per_pulse(self) -> float:
        """N, photons in the pulse."""
        if self.pulse_photons is not None:
            return float(self.pulse_photons)
        return float(self.pulse_energy_j) / self.photon_energy_j  # type: ignore[arg-type]

    @property
    def pulse_energy(self) -> float:
        """Pulse energy (J), whichever way the pulse was given."""
        return self.photons_per_pulse * self.photon_energy_j

    @property
    def sigma_m(self) -> float:
        """Gaussian σ of the focus (m); for a flat-top focus the σ of a gaussian of equal FWHM."""
        return self.focus_diameter_m / _FWHM_PER_SIGMA

    @property
    def peak_fluence(self) -> float:
        """Fluence at the centre of the focus (photons/m²)."""
        n = self.photons_per_pulse
        if self.profile == "gaussian":
            return n / (2.0 * math.pi * self.sigma_m**2)
        return n / (math.pi * (self.focus_diameter_m / 2.0) ** 2)

    @property
    def focus_radius_for_samples_m(self) -> float:
        """Radius (m) of the disk used by :meth:`sample_position`."""
        if self.sample_radius_m is not None:
            return float(self.sample_radius_m)
        return self.focus_diameter_m / 2.0

    def fluence_at(self, xy: np.ndarray) -> np.ndarray:
        """Fluence (photons/m²) at transverse positions ``xy`` (..., 2) m; returns (...).

        A trailing axis of 3 (x, y, z) is accepted and z ignored (the focus is taken as longer than the
        particle's distance from z = 0). Integrates over the plane to :attr:`photons_per_pulse`.
        """
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim == 0 or xy.shape[-1] not in (2, 3):
            raise ConfigError(f"positions for fluence_at must have a last axis of 2 (x, y) or 3, got shape {xy.shape}")
        r2 = xy[..., 0] ** 2 + xy[..., 1] ** 2
        if self.profile == "gaussian":
            return self.peak_fluence * np.exp(-r2 / (2.0 * self.sigma_m**2))
        return np.where(r2 <= (self.focus_diameter_m / 2.0) ** 2, self.peak_fluence, 0.0)

    def sample_position(self, rng: np.random.Generator) -> np.ndarray:
        """(3,) m, a particle position drawn uniformly from the disk of radius
        :attr:`focus_radius_for_samples_m` about the beam axis, at z = 0.
        """
        radius = self.focus_radius_for_samples_m * math.sqrt(rng.random())
        phi = 2.0 * math.pi * rng.random()
        return np.array([radius * math.cos(phi), radius * math.sin(phi), 0.0])

    def sample_positions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 3) m, ``n`` independent draws of :meth:`sample_position`."""
        radius = self.focus_radius_for_samples_m * np.sqrt(rng.random(n))
        phi = 2.0 * math.pi * rng.random(n)
        return np.stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros(n)], axis=-1)
