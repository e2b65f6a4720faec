"""Which exact-path method to run: a cost model of the direct sum and of the type-3 NUFFT.

Direct sum (numba CPU): time ≈ N·P · t_term. Type-3 NUFFT (FINUFFT), per element: a fixed set-up
cost, w³ spreading work for every atom and every q (w = kernel width, ≈ digits of tolerance + 1),
and an FFT on the upsampled grid whose size grows with the space–bandwidth product: per axis
2·(4·X·S/π + w), X the half-width of the atom positions (Å) and S that of the q vectors (Å⁻¹).

Constants measured on the development machine (2 shared AMD EPYC cores, AVX2, numba 0.68, finufft 2.5)
with 2cex (2,452 atoms) and random q, double precision at tol 1e-9:

=============  ========  =========  ===========  ============
q_max (Å⁻¹)    atoms     pixels     direct (s)   NUFFT (s)
=============  ========  =========  ===========  ============
0.5            2,452     10,000     0.049        0.112
0.5            2,452     100,000    0.49         0.54
0.5            10,000    10,000     0.19         0.26
2.0            2,452     100,000    0.48         1.03
2.0            10,000    10,000     0.39         10.6 (X ≈ 100 Å)
0.5            2,452     1,048,576  9.3 cpu-s    6.8 cpu-s (bench, busy machine)
=============  ========  =========  ===========  ============

So at tol 1e-9 the direct sum wins up to ~2.5e8 atom·pixel terms for a small protein, and the
NUFFT only pays off for many atoms (it does not scale with N·P): e.g. 1e5 atoms on 1e6 pixels at
q_max 0.5 Å⁻¹ is ~220 s direct and ~6 s by NUFFT. On a GPU the direct kernel is chosen (not measured
here: the development machine has no GPU).
"""

from __future__ import annotations

import math

import numpy as np

DIRECT_NS_PER_TERM = {"double": 2.2, "single": 1.0}
"""Measured direct-sum time per atom·pixel term (ns), 2 cores."""

NUFFT_NS_PER_OP = 1.0
"""Measured FINUFFT time per spreading operation or per FFT point·log2 (ns), 2 cores."""

NUFFT_NS_PER_CALL = 6e6
"""Measured fixed cost of one type-3 call (ns)."""


MAX_NUFFT_GRID_POINTS = 1 << 28
"""Largest upsampled type-3 grid (points, per element) the NUFFT path attempts (4 GiB complex128)."""


def nufft_grid_points(atom_half_widths: np.ndarray, q_half_widths: np.ndarray, tol: float) -> float:
    """Estimated points of the upsampled FFT grid of a type-3 NUFFT (half-widths (3,) in Å and Å⁻¹)."""
    w = nufft_kernel_width(tol)
    nf = 2.0 * (4.0 * np.asarray(atom_half_widths) * np.asarray(q_half_widths) / math.pi + w)
    return float(np.prod(np.maximum(nf, 8.0)))


def nufft_kernel_width(tol: float) -> int:
    """FINUFFT's spreading kernel width for tolerance `tol` (its rule: digits + 1, 2..16)."""
    return int(min(16, max(2, math.ceil(-math.log10(tol)) + 1)))


def estimate_direct_seconds(n_atoms: int, n_pixels: int, precision: str = "double") -> float:
    """Estimated seconds of the numba CPU direct sum."""
    return n_atoms * n_pixels * DIRECT_NS_PER_TERM[precision] * 1e-9


def estimate_nufft_seconds(
    n_atoms: int,
    n_pixels: int,
    n_elements: int,
    atom_half_widths: np.ndarray,
    q_half_widths: np.ndarray,
    tol: float,
) -> float:
    """Estimated seconds of the FINUFFT type-3 path; half-widths (3,) in Å and Å⁻¹."""
    w = nufft_kernel_width(tol)
    grid = nufft_grid_points(atom_half_widths, q_half_widths, tol)
    ops = (n_atoms + n_elements * n_pixels) * w**3 + n_elements * grid * math.log2(grid)
    return (n_elements * NUFFT_NS_PER_CALL + ops * NUFFT_NS_PER_OP) * 1e-9


def choose_method(
    n_atoms: int,
    n_pixels: int,
    *,
    n_elements: int,
    atom_half_widths: np.ndarray,
    q_half_widths: np.ndarray,
    precision: str = "double",
    tol: float = 1e-9,
    gpu: bool = False,
) -> str:
    """ "cuda" when `gpu`, else whichever of "cpu" (direct) and "nufft" the cost model says is faster."""
    if gpu:
        return "cuda"
    t_direct = estimate_direct_seconds(n_atoms, n_pixels, precision)
    t_nufft = estimate_nufft_seconds(n_atoms, n_pixels, n_elements, atom_half_widths, q_half_widths, tol)
    return "nufft" if t_nufft < t_direct else "cpu"
