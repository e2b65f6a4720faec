"""Expected photon counts from structure factors: the one home of N = J · r_e² · P · ΔΩ · |F|².

J is the incident fluence at the particle (photons/m²), r_e the classical electron radius (m), P the
polarisation factor, ΔΩ the pixel's solid angle (sr) and F the structure factor in electrons. The
result is a mean count (photons per pixel); detector noise is applied elsewhere.
"""

from __future__ import annotations

from typing import Any

from .constants import R_E


def expected_photons(F: Any, fluence: Any, solid_angle: Any, polarization: Any = 1.0) -> Any:
    """Mean photons per pixel N = J r_e² P ΔΩ |F|², float, broadcast shape of the inputs.

    Args:
        F: structure factor (electrons), complex, any shape, numpy or CuPy (the result follows it).
        fluence: J, photons/m² at the particle (scalar or broadcastable array).
        solid_angle: ΔΩ of each pixel (sr), broadcastable to F.
        polarization: P of each pixel (dimensionless, 0..1), broadcastable to F.
    """
    intensity = F.real * F.real + F.imag * F.imag
    return (fluence * R_E**2) * polarization * solid_angle * intensity
