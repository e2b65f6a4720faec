"""The fast path: F on a 3D Cartesian q grid computed once, then sliced for each orientation.

Grid. Atoms are taken about the centre c of their bounding box, so that F is as smooth as the
particle allows: with D = 2 max|r − c| the speckle is ~2π/D wide and F is band-limited by D. The
spacing is Δq = 2π / (oversampling · D) (oversampling 1 = Shannon sampling) and the grid runs over
|q_x|, |q_y|, |q_z| ≤ q_max plus a margin for the interpolation stencil, n = 2h + 1 points per axis
with q = 0 at index h. It is filled by FINUFFT type 1 (atoms → uniform modes; ``method="nufft"``)
or by the exact direct sum at the grid points (``"cpu"``, ``"cuda"``).

Slicing. For rotation R and laboratory q the particle-frame k = Rᵀ q is interpolated in the grid
(real and imaginary parts together) and multiplied by exp(i k·c) to put the centre back, which makes
F_slice(q) ≈ :func:`~spisim.scattering.exact.structure_factor` (q, rotation=R) for the same atoms.
``interpolation="cubic"`` (default) is a cubic B-spline (grid prefiltered once with
scipy.ndimage.spline_filter; error ∝ (Δq·D)⁴); ``"linear"`` is trilinear (error ∝ (Δq·D)²).

Accuracy. Error := ‖F_slice − F_exact‖₂ / ‖F_exact‖₂ over the pixels with q_first ≤ |q| ≤ q_max,
q_first = 4.493/R_s the first minimum of the sphere with the same R_g (R_s = √(5/3)·R_g), for one random
orientation; the same on |F|² is the intensity error. Measured on 2cex (2,363 atoms without waters,
D = 72.6 Å) on a 80×80 flat detector:

=============  ==============  =====  ==========  ==========  ==================
q_max (Å⁻¹)    interpolation   os     grid n      error F     error |F|²
=============  ==============  =====  ==========  ==========  ==================
0.5            cubic           2.0    37          1.7e-3      2.6e-3
0.5            cubic           2.5    43          6.2e-4      9.9e-4
0.5            cubic           3.0    49          2.8e-4      4.5e-4
0.5            cubic           4.0    61          8.5e-5      1.4e-4
0.5            linear          6      73          1.1e-2      1.9e-2
0.5            linear          12     143         2.7e-3      4.9e-3
1.5            cubic           2.5    101         5.8e-4      1.0e-3
=============  ==============  =====  ==========  ==========  ==================

The defaults (cubic 2.5, linear 12) stay under 1% with a margin of ~10× (cubic) and ~2× (linear);
single pixels near speckle minima can be off by a few per cent of their own (small) value.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import ndimage

from ..atoms import Atoms
from ..backend import is_device_array, numba_cuda_available, require_numba_cuda
from ..errors import ConfigError
from .direct_cpu import structure_factor_cpu
from .direct_cuda import structure_factor_cuda
from .inputs import ElementGroups, check_q, check_rotation, group_atoms
from .nufft import grid_sum_nufft
from .slice_cpu import slice_cpu

DEFAULT_OVERSAMPLING = {"cubic": 2.5, "linear": 12.0}
"""Default Δq = 2π/(oversampling·D) per interpolation; both keep the error defined above under 1%
(tests/test_volume.py checks the cubic default on 2cex with waters, 2,452 atoms)."""

DEFAULT_MAX_BYTES = 1 << 30
"""Largest grid (bytes of complex128 values) that :meth:`ReciprocalVolume.build` makes (1 GiB);
building needs about four times this in working memory."""

MARGIN = {"cubic": 6, "linear": 1}
"""Grid points beyond q_max on each side (the cubic margin also damps the prefilter's edge effect)."""

MIN_RADIUS = 2.5
"""Smallest particle radius (Å) used for the spacing, so that a lone atom's f(|q|) is still sampled."""


def first_minimum_q(atoms: Atoms) -> float:
    """|q| (Å⁻¹) of the first minimum of the sphere with the same R_g: 4.493 / (√(5/3)·R_g)."""
    rg = atoms.radius_of_gyration()
    return 4.4934 / (math.sqrt(5.0 / 3.0) * rg) if rg > 0 else 0.0


def relative_error(f_test: np.ndarray, f_ref: np.ndarray, q_abs: np.ndarray, q_low: float, q_high: float) -> float:
    """‖f_test − f_ref‖₂ / ‖f_ref‖₂ over pixels with q_low ≤ |q| ≤ q_high (the volume's accuracy measure)."""
    sel = (q_abs >= q_low) & (q_abs <= q_high)
    if not sel.any():
        raise ConfigError(f"no pixel has {q_low:g} <= |q| <= {q_high:g} 1/Å")
    return float(np.linalg.norm(f_test[sel] - f_ref[sel]) / np.linalg.norm(f_ref[sel]))


class ReciprocalVolume:
    """F of one particle on a cubic q grid, sliced by interpolation for any orientation.

    Attributes:
        grid: (n, n, n) complex128; B-spline coefficients (cubic) or F samples (linear), q = Δq·(index − h).
        dq: grid spacing Δq (Å⁻¹).
        q_max: largest |q| (Å⁻¹) a slice may ask for.
        centre: (3,) Å, particle-frame centre c the grid was computed about.
        diameter: D = 2 max|r − c| (Å, at least 2·MIN_RADIUS).
        oversampling: 2π / (Δq·D).
        interpolation: "cubic" or "linear".
        photon_energy_ev, anomalous: how the form factors were taken.
    """

    def __init__(
        self,
        grid: np.ndarray,
        dq: float,
        q_max: float,
        centre: np.ndarray,
        diameter: float,
        interpolation: str,
        photon_energy_ev: float,
        anomalous: bool,
    ) -> None:
        self.grid = grid
        self.dq = float(dq)
        self.q_max = float(q_max)
        self.centre = np.asarray(centre, dtype=np.float64)
        self.diameter = float(diameter)
        self.interpolation = interpolation
        self.photon_energy_ev = float(photon_energy_ev)
        self.anomalous = bool(anomalous)
        self._device_grid = None
        self._device_q: Any = None

    def __getstate__(self) -> dict:
        """Pickled without the GPU copy of the grid (a device array belongs to one process and context)."""
        state = self.__dict__.copy()
        state["_device_grid"] = None
        state["_device_q"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        """Restored without device copies (also from volume stores written before q could live on the GPU)."""
        self.__dict__.update(state)
        self._device_grid = None
        self._device_q = None

    def _check_q_range(self, qa: np.ndarray) -> np.ndarray:
        """`qa` (P, 3) Å⁻¹ unchanged; ConfigError if some |q| exceeds :attr:`q_max`."""
        q_largest = float(np.sqrt(np.einsum("ij,ij->i", qa, qa).max())) if qa.size else 0.0
        if q_largest > self.q_max * (1 + 1e-9):
            raise ConfigError(
                f"q up to {q_largest:.4g} 1/Å exceeds the volume's q_max {self.q_max:.4g};"
                " build it with a larger q_max"
            )
        return qa

    def _checked_device_q(self, q: Any) -> Any:
        """Device `q` after the checks of host q, run on a host copy once per array object (the last one)."""
        if self._device_q is not None and self._device_q is q:
            return q
        dtype = np.dtype(q.dtype)
        if dtype != np.float64 or len(q.shape) != 2 or q.shape[1] != 3:
            raise ConfigError(f"GPU q vectors must be float64 (P, 3) in 1/Å, got {dtype} {tuple(q.shape)}")
        if hasattr(q, "copy_to_host"):
            host = q.copy_to_host()
        else:
            from numba import cuda

            host = cuda.as_cuda_array(q).copy_to_host()
        self._check_q_range(check_q(host))
        self._device_q = q
        return q

    @property
    def n(self) -> int:
        """Grid points per axis."""
        return int(self.grid.shape[0])

    @property
    def half(self) -> int:
        """Index of q = 0 along each axis."""
        return (self.n - 1) // 2

    @property
    def oversampling(self) -> float:
        return 2.0 * math.pi / (self.dq * self.diameter)

    @property
    def nbytes(self) -> int:
        return int(self.grid.nbytes)

    @staticmethod
    def grid_size(diameter: float, q_max: float, oversampling: float, interpolation: str = "cubic") -> int:
        """Points per axis n (odd) of a grid for a particle of `diameter` (Å) up to `q_max` (Å⁻¹)."""
        dq = 2.0 * math.pi / (oversampling * diameter)
        return 2 * (math.ceil(q_max / dq) + MARGIN[interpolation]) + 1

    @classmethod
    def build(
        cls,
        atoms: Atoms,
        photon_energy_ev: float,
        q_max: float,
        *,
        oversampling: float | None = None,
        interpolation: str = "cubic",
        method: str = "nufft",
        anomalous: bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        nufft_tol: float = 1e-9,
    ) -> ReciprocalVolume:
        """Compute the grid of F for `atoms` at `photon_energy_ev` (eV) for slices up to `q_max` (Å⁻¹).

        Args:
            oversampling: 2π/(Δq·D), ≥ 1 (Nyquist); default :data:`DEFAULT_OVERSAMPLING`.
            interpolation: "cubic" (B-spline) or "linear".
            method: how to fill the grid: "nufft" (FINUFFT type 1, fast), "cpu" or "cuda" (direct sum).
            max_bytes: refuse (ConfigError) a grid larger than this; the exact path needs no grid.
            nufft_tol: FINUFFT tolerance when method is "nufft".
        """
        if interpolation not in DEFAULT_OVERSAMPLING:
            raise ConfigError(f"interpolation must be 'cubic' or 'linear', got {interpolation!r}")
        if method not in ("nufft", "cpu", "cuda"):
            raise ConfigError(f"volume method must be 'nufft', 'cpu' or 'cuda', got {method!r}")
        if not q_max > 0:
            raise ConfigError(f"q_max must be positive (1/Å), got {q_max}")
        os_ = DEFAULT_OVERSAMPLING[interpolation] if oversampling is None else float(oversampling)
        if not os_ >= 1.0:
            raise ConfigError(f"oversampling must be >= 1 (Nyquist sampling of the speckle), got {os_}")
        if len(atoms) == 0:
            raise ConfigError("cannot build a reciprocal volume of a particle without atoms")
        lo, hi = atoms.positions.min(0), atoms.positions.max(0)
        centre = (lo + hi) / 2.0
        radius = max(float(np.sqrt(((atoms.positions - centre) ** 2).sum(1)).max()), MIN_RADIUS)
        diameter = 2.0 * radius
        dq = 2.0 * math.pi / (os_ * diameter)
        n = cls.grid_size(diameter, q_max, os_, interpolation)
        nbytes = n**3 * 16
        if nbytes > max_bytes:
            raise ConfigError(
                f"reciprocal volume of {n}³ points ({nbytes / 2**30:.2f} GiB) exceeds the limit of "
                f"{max_bytes / 2**30:.2f} GiB (particle {diameter:.0f} Å, q_max {q_max:g} 1/Å, oversampling {os_:g});"
                " use the exact path (structure_factor) or lower q_max, or raise max_bytes"
            )
        groups = group_atoms(atoms, photon_energy_ev, anomalous)
        if method == "nufft":
            grid = _fill_nufft(groups, dq, n, centre, nufft_tol)
        else:
            grid = _fill_direct(groups, dq, n, centre, method)
        if interpolation == "cubic":
            grid = _bspline_coefficients(grid)
        return cls(grid, dq, q_max, centre, diameter, interpolation, photon_energy_ev, anomalous)

    def slice(self, q: Any, rotation: np.ndarray | None = None, method: str = "auto") -> Any:
        """F (electrons), complex128 (P,), at laboratory q (P, 3) Å⁻¹ for the particle turned by `rotation`.

        `method`: "cpu" (numba), "cuda" (numba.cuda; the simulator when NUMBA_ENABLE_CUDASIM=1) or
        "auto" (cuda when a GPU is present). ConfigError if some |q| exceeds :attr:`q_max`.
        `q` may already be on the GPU (a CuPy or numba device array, float64): it is sliced there and F
        comes back as a numba device array (``cupy.asarray(F)`` takes it without a copy), so a detector's
        pixel q crosses the bus once (checked once per array object), not every shot.
        """
        rot = check_rotation(rotation)
        if is_device_array(q):
            if method not in ("auto", "cuda"):
                raise ConfigError(f"q is a GPU array: slice it with method 'cuda' (or 'auto'), not {method!r}")
            method, qa = "cuda", self._checked_device_q(q)
        else:
            qa = self._check_q_range(check_q(q))
        if method == "auto":
            method = "cuda" if numba_cuda_available() else "cpu"
        cubic = self.interpolation == "cubic"
        if method == "cpu":
            return slice_cpu(self.grid, cubic, qa, rot, self.dq, self.half, self.centre)
        if method == "cuda":
            require_numba_cuda("method 'cuda'", "method='cpu' or 'auto'")
            from numba import cuda

            from .slice_cuda import slice_cuda

            if self._device_grid is None:
                self._device_grid = cuda.to_device(self.grid)
            return slice_cuda(self._device_grid, cubic, qa, rot, self.dq, self.half, self.centre)
        raise ConfigError(f"slice method must be 'auto', 'cpu' or 'cuda', got {method!r}")


def _grid_q(dq: float, n: int) -> np.ndarray:
    """q values (Å⁻¹) along one axis of an n-point grid centred on 0."""
    return (np.arange(n) - (n - 1) // 2) * dq


def _fill_nufft(groups: ElementGroups, dq: float, n: int, centre: np.ndarray, tol: float) -> np.ndarray:
    axis = _grid_q(dq, n)
    q_abs = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    # FINUFFT's multithreaded spreader adds in a varying order, so its last bits change from run to run.
    # For byte-identical datasets each element's transform runs on one thread, elements in parallel,
    # and the element grids are added in a fixed order.
    def one_element(e: int) -> np.ndarray:
        positions, occupancies = groups.group(e)
        sums = grid_sum_nufft(positions, occupancies, dq, n, centre, tol, nthreads=1)
        sums *= groups.form_factors.row(e, q_abs)
        return sums

    n_elements = len(groups.form_factors)
    grid = np.zeros((n, n, n), dtype=np.complex128)
    with ThreadPoolExecutor(max_workers=max(1, min(n_elements, os.cpu_count() or 1))) as pool:
        for sums in pool.map(one_element, range(n_elements)):
            grid += sums
    return grid


def _fill_direct(groups: ElementGroups, dq: float, n: int, centre: np.ndarray, method: str) -> np.ndarray:
    axis = _grid_q(dq, n)
    q = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    shifted = ElementGroups(
        groups.positions - centre, groups.occupancies, groups.element_index, groups.starts, groups.form_factors
    )
    if method == "cuda":
        require_numba_cuda("method 'cuda'", "method='nufft' or 'cpu'")
        f = structure_factor_cuda(shifted, q)
    else:
        f = structure_factor_cpu(shifted, q)
    return f.reshape(n, n, n)


def _bspline_coefficients(values: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (same shape, complex128) that interpolate `values` at the grid points."""
    out = np.empty_like(values)
    out.real = ndimage.spline_filter(values.real, order=3, mode="mirror", output=np.float64)
    out.imag = ndimage.spline_filter(values.imag, order=3, mode="mirror", output=np.float64)
    return out
