"""Structure factors of a particle: exact paths (numba CPU, numba.cuda, NUFFT) and the reciprocal volume.

Every path returns F in electrons, complex128, for q = k_out − k_in in Å⁻¹, with one rotation
convention: a particle turned by R (r → R r) has F_R(q) = F(Rᵀ q).
"""

from .exact import METHODS, structure_factor
from .volume import DEFAULT_OVERSAMPLING, ReciprocalVolume, first_minimum_q, relative_error

__all__ = [
    "DEFAULT_OVERSAMPLING",
    "METHODS",
    "ReciprocalVolume",
    "first_minimum_q",
    "relative_error",
    "structure_factor",
]
