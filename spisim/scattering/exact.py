"""The exact path: F(q) = Σ_j occ_j f_j(|q|) exp(i q·r_j) at any q, for one particle orientation.

Rotation convention (shared by every path, see :mod:`.inputs`): a particle turned by R, r → R r, has
F_R(q) = Σ_j f_j exp(i q·R r_j) = F(Rᵀ q). Passing `rotation=R` is the same as scattering from
``atoms.transformed(R)``.
"""

from __future__ import annotations

import numpy as np

from ..atoms import Atoms
from ..backend import cufinufft_available, numba_cuda_available, require_numba_cuda
from ..errors import ConfigError
from .direct_cpu import structure_factor_cpu
from .direct_cuda import structure_factor_cuda
from .inputs import check_precision, check_q, check_rotation, group_atoms, rotate_q
from .nufft import DEFAULT_TOL, structure_factor_cufinufft, structure_factor_nufft
from .select import choose_method

METHODS = ("auto", "cpu", "cuda", "nufft")


def structure_factor(
    atoms: Atoms,
    q: np.ndarray,
    photon_energy_ev: float,
    *,
    rotation: np.ndarray | None = None,
    anomalous: bool = True,
    method: str = "auto",
    precision: str = "double",
    nufft_tol: float | None = None,
) -> np.ndarray:
    """Structure factor F (electrons), complex128 (P,), of `atoms` at scattering vectors `q`.

    Args:
        atoms: the particle (positions in Å, its own frame).
        q: (P, 3) scattering vectors q = k_out − k_in in the laboratory frame, Å⁻¹.
        photon_energy_ev: photon energy (eV), for f′ and f″.
        rotation: (3, 3) proper rotation R of the particle (r → R r); None for the identity.
            F is evaluated at Rᵀ q.
        anomalous: include f′ + i f″ (breaks Friedel's law); else f = f0.
        method: "cpu" (numba direct sum), "cuda" (numba.cuda direct sum; the simulator when
            NUMBA_ENABLE_CUDASIM=1), "nufft" (FINUFFT type 3; cuFINUFFT when a GPU is present), or
            "auto" (by the cost model in :mod:`.select`). "nufft" uses cuFINUFFT when a GPU and the
            cufinufft package are present, else FINUFFT on the CPU.
        precision: "double" (relative error ~1e-15 direct, ~1e-9 NUFFT at its default tol 1e-9) or
            "single" (~1e-5; float32 phases and sums).
        nufft_tol: NUFFT tolerance (default 1e-9 double, 1e-5 single); ignored by direct methods.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    precision = check_precision(precision)
    qr = rotate_q(check_q(q), check_rotation(rotation))
    groups = group_atoms(atoms, photon_energy_ev, anomalous)
    if method == "auto":
        tol = DEFAULT_TOL[precision] if nufft_tol is None else nufft_tol
        pos = groups.positions
        method = choose_method(
            groups.n_atoms,
            qr.shape[0],
            n_elements=len(groups.form_factors),
            atom_half_widths=(np.ptp(pos, axis=0) / 2) if pos.size else np.zeros(3),
            q_half_widths=np.abs(qr).max(axis=0) if qr.size else np.zeros(3),
            precision=precision,
            tol=tol,
            gpu=numba_cuda_available(),
        )
    if method == "cpu":
        return structure_factor_cpu(groups, qr, precision)
    if method == "cuda":
        require_numba_cuda("method 'cuda'", "method='cpu' or 'auto'")
        return structure_factor_cuda(groups, qr, precision)
    if numba_cuda_available() and cufinufft_available():
        return structure_factor_cufinufft(groups, qr, precision, nufft_tol)
    return structure_factor_nufft(groups, qr, precision, nufft_tol)
