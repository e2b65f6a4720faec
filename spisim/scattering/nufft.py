"""Structure factors by non-uniform FFT (FINUFFT on the CPU, cuFINUFFT on a GPU).

* Arbitrary q (detector pixels): a type-3 transform per element (non-uniform atoms → non-uniform q),
  S_e(q) = Σ_{j∈e} occ_j exp(+i q·r_j), then F(q) = Σ_e f_e(|q|) S_e(q).
* A Cartesian q grid (the reciprocal volume): a type-1 transform per element (non-uniform atoms →
  uniform modes k), with x_j = Δq·r_j so that mode k sits at q = k Δq.

`tol` is FINUFFT's requested relative precision (of each S_e in the ℓ2 sense over the outputs).
Measured on random atoms: tol 1e-9 gives ‖ΔF‖/‖F‖ ≈ 5e-10, tol 1e-6 ≈ 1e-7; single precision accepts
tol ≥ 1e-6 and gives ≈ 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError
from .inputs import ElementGroups
from .select import MAX_NUFFT_GRID_POINTS, nufft_grid_points

DEFAULT_TOL = {"double": 1e-9, "single": 1e-5}
"""Default NUFFT tolerance per precision."""


def _check_tol(tol: float, precision: str) -> float:
    lowest = 1e-15 if precision == "double" else 1e-6
    if not lowest <= tol < 1:
        raise ConfigError(f"NUFFT tolerance must lie in [{lowest:g}, 1) for {precision} precision, got {tol:g}")
    return float(tol)


def _check_grid(groups: ElementGroups, q: np.ndarray, tol: float) -> None:
    """ConfigError when the type-3 grid would be too large (a large particle at high q)."""
    points = nufft_grid_points(np.ptp(groups.positions, axis=0) / 2, np.abs(q).max(axis=0), tol)
    if points > MAX_NUFFT_GRID_POINTS:
        raise ConfigError(
            f"the NUFFT grid for this particle size and q range would have {points:.2g} points "
            f"(limit {MAX_NUFFT_GRID_POINTS:.2g}); use method='cpu' or 'cuda' (direct sum)"
        )


ElementSum = Callable[[list[Any], np.ndarray, list[Any], float, Any], np.ndarray]
"""(x, y, z of one element's atoms, their occupancies (n,), the q components s, t, u, tolerance, complex dtype)
-> S_e(q) = Σ_j occ_j exp(+i q·r_j), (P,) on the host."""


def _type3_sum(groups: ElementGroups, q: np.ndarray, precision: str, tol: float | None, to_array: Callable,
               element_sum: ElementSum) -> np.ndarray:
    """F = Σ_e f_e(|q|) S_e(q), complex128 (P,), with ``element_sum`` giving S_e by a type-3 transform.

    The set-up the CPU and GPU paths share: tolerance, dtypes, the empty cases, the grid-size check, the
    form-factor table; ``to_array(values, dtype)`` puts coordinates where ``element_sum`` wants them.
    """
    tol = _check_tol(DEFAULT_TOL[precision] if tol is None else tol, precision)
    real, cplx = (np.float32, np.complex64) if precision == "single" else (np.float64, np.complex128)
    out = np.zeros(q.shape[0], dtype=np.complex128)
    if groups.n_atoms == 0 or q.shape[0] == 0:
        return out
    _check_grid(groups, q, tol)
    ff = groups.form_factors.table(np.linalg.norm(q, axis=1))
    stu = [to_array(q[:, k], real) for k in range(3)]
    for e in range(len(groups.form_factors)):
        pos, occ = groups.group(e)
        if pos.shape[0] == 0:
            continue
        xyz = [to_array(pos[:, k], real) for k in range(3)]
        out += ff[e] * element_sum(xyz, occ, stu, tol, cplx)
    return out


def structure_factor_nufft(
    groups: ElementGroups,
    q: np.ndarray,
    precision: str = "double",
    tol: float | None = None,
    nthreads: int | None = None,
) -> np.ndarray:
    """F (electrons), complex128 (P,), at particle-frame q (P, 3) Å⁻¹ by FINUFFT type 3 per element."""
    import finufft

    opts = {} if nthreads is None else {"nthreads": int(nthreads)}

    def element_sum(xyz: list, occ: np.ndarray, stu: list, eps: float, cplx: Any) -> np.ndarray:
        return finufft.nufft3d3(*xyz, occ.astype(cplx), *stu, eps=eps, isign=1, **opts)

    return _type3_sum(groups, q, precision, tol, lambda a, dtype: np.ascontiguousarray(a, dtype=dtype), element_sum)


def structure_factor_cufinufft(
    groups: ElementGroups, q: np.ndarray, precision: str = "double", tol: float | None = None
) -> np.ndarray:
    """As :func:`structure_factor_nufft`, on the GPU with cuFINUFFT type 3 (needs cupy and cufinufft ≥ 2.3).

    Not exercised on the development machine (no GPU); the test is marked ``gpu``.
    """
    try:
        import cufinufft
        import cupy as cp
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError(f"method 'nufft' on the GPU needs cupy and cufinufft >= 2.3 ({exc})") from exc

    def element_sum(xyz: list, occ: np.ndarray, stu: list, eps: float, cplx: Any) -> np.ndarray:
        plan = cufinufft.Plan(3, 3, eps=eps, isign=1, dtype=np.dtype(cplx).name)
        plan.setpts(*xyz, *stu)
        return cp.asnumpy(plan.execute(cp.asarray(occ, dtype=cplx)))

    return _type3_sum(groups, q, precision, tol, lambda a, dtype: cp.asarray(a, dtype=dtype), element_sum)


def grid_sum_nufft(
    positions: np.ndarray,
    occupancies: np.ndarray,
    dq: float,
    n: int,
    centre: np.ndarray,
    tol: float = 1e-9,
    nthreads: int | None = None,
    upsampfac: float = 1.25,
) -> np.ndarray:
    """Sum over atoms on a cubic q grid by FINUFFT type 1: complex128 (n, n, n).

    Entry [i, j, k] is S(q) = Σ_j occ_j exp(i q·(r_j − centre)) at q = Δq·(i − h, j − h, k − h),
    h = (n − 1) / 2, for `positions` (N, 3) Å, `occupancies` (N,), `n` odd, `dq` in Å⁻¹, `centre` (3,) Å.
    Needs Δq·|r − centre| < π (Nyquist) so that the 2π-periodic transform does not fold.
    `upsampfac` 1.25 (FINUFFT's low-memory setting, good to tol ≈ 1e-9) is ~3× faster than 2.0 here.
    """
    import finufft

    if n % 2 != 1:
        raise ValueError("grid size n must be odd")  # internal misuse, not a user error
    _check_tol(tol, "double")
    out = np.zeros((n, n, n), dtype=np.complex128)
    if positions.shape[0] == 0:
        return out
    opts = {"upsampfac": float(upsampfac)}
    if nthreads is not None:
        opts["nthreads"] = int(nthreads)
    scaled = (np.asarray(positions, dtype=np.float64) - np.asarray(centre, dtype=np.float64)) * dq
    x, y, z = (np.ascontiguousarray(scaled[:, k]) for k in range(3))
    c = np.asarray(occupancies).astype(np.complex128)
    finufft.nufft3d1(x, y, z, c, (n, n, n), out=out, eps=tol, isign=1, **opts)
    return out
