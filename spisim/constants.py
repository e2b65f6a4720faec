"""Physical constants and unit conversions (CODATA 2018), SI unless the name says otherwise."""

R_E = 2.8179403262e-15
"""Classical electron radius r_e (m)."""

H = 6.62607015e-34
"""Planck constant (J s)."""

C = 299792458.0
"""Speed of light (m/s)."""

EV = 1.602176634e-19
"""One electronvolt (J)."""

HC_EV_ANGSTROM = H * C / EV * 1e10
"""h·c in eV·Å (≈ 12398.42): λ[Å] = HC_EV_ANGSTROM / E[eV]."""

ANGSTROM = 1e-10
"""One ångström (m)."""

NM = 1e-9
"""One nanometre (m)."""


def wavelength_angstrom(photon_energy_ev: float) -> float:
    """Wavelength (Å) of a photon of energy `photon_energy_ev` (eV)."""
    return HC_EV_ANGSTROM / photon_energy_ev


def photon_energy_ev(wavelength_angstrom_: float) -> float:
    """Photon energy (eV) of wavelength `wavelength_angstrom_` (Å)."""
    return HC_EV_ANGSTROM / wavelength_angstrom_
