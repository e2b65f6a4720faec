"""sin and cos together, written so that LLVM can vectorise loops that call them (numba CPU kernels).

numba calls the C library's scalar ``sin``/``cos`` unless Intel SVML is present (it is not in the
pip wheels), which leaves the exact-path inner loop scalar. These versions use only arithmetic and
``floor``: Cody–Waite reduction by π/2 in three parts, then the Cephes minimax polynomials on
[−π/4, π/4], then a quadrant swap done with selects. Accuracy: double ≤ 2.3e-16 absolute for
|x| ≤ 1e5 (reduction exact while |x| < 2²⁰·π/2); single ≤ 1e-7 absolute for |x| ≤ 1e3
(x taken as exact).
`sincos(x)` picks the float32 or float64 version from the argument's type.

The exact-path kernels use :func:`sincospi_parity` instead: the argument is in half-turns (x/π, so the
caller folds 1/π into q once), the reduction is one rounding, r = t − rint(t) ∈ [−½, ½] (exact), and
the two polynomials are evaluated in Estrin's form (short dependency chains, which keep the vector
units busy); the sign (−1)^rint(t) comes back as a parity for the caller to fold into a weight. No
selects, 19 FMA-port operations in double. Accuracy: double ≤ 4.5e-16 absolute in r (the argument
taken as exact; reduction exact while |t| < 2⁵²); single ≤ 1.6e-7 absolute.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

# π/2 in three parts; the first has 33 significant bits so that n·PIO2_1 is exact for |n| < 2²⁰.
_PIO2_1 = 1.57079632673412561417e00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624879595063154e-21
_TWO_OVER_PI = 0.63661977236758134308

# Cephes sin.c / cos polynomials for |r| ≤ π/4 (double).
_S0, _S1, _S2 = 1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6
_S3, _S4, _S5 = -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1
_C0, _C1, _C2 = -1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7
_C3, _C4, _C5 = 2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2

# float32: π/2 in three parts with few significant bits (Cephes sinf.c DP1..DP3 doubled).
_F = np.float32
_PIO2F_1, _PIO2F_2, _PIO2F_3 = _F(1.5703125), _F(4.837512969970703125e-4), _F(7.54978995489188216e-8)
_TWO_OVER_PIF = _F(0.63661977236758134308)
_SF0, _SF1, _SF2 = _F(-1.9515295891e-4), _F(8.3321608736e-3), _F(-1.6666654611e-1)
_CF0, _CF1, _CF2 = _F(2.443315711809948e-5), _F(-1.388731625493765e-3), _F(4.166664568298827e-2)
_HALF_F, _ONE_F, _TWO_F, _FOUR_F, _QUARTER_F = _F(0.5), _F(1.0), _F(2.0), _F(4.0), _F(0.25)


@njit(inline="always", fastmath={"contract"}, cache=True)
def sincos64(x: float) -> tuple[float, float]:
    """(sin x, cos x) of a float64 x (radians)."""
    n = np.floor(x * _TWO_OVER_PI + 0.5)
    r = ((x - n * _PIO2_1) - n * _PIO2_2) - n * _PIO2_3
    z = r * r
    s = r + r * z * (((((_S0 * z + _S1) * z + _S2) * z + _S3) * z + _S4) * z + _S5)
    c = 1.0 - 0.5 * z + z * z * (((((_C0 * z + _C1) * z + _C2) * z + _C3) * z + _C4) * z + _C5)
    m = n - 4.0 * np.floor(n * 0.25)  # quadrant 0..3
    odd = (m == 1.0) or (m == 3.0)
    so = c if odd else s
    co = s if odd else c
    so = -so if m >= 2.0 else so
    co = -co if (m == 1.0 or m == 2.0) else co
    return so, co


@njit(inline="always", fastmath={"contract"}, cache=True)
def sincos32(x: np.float32) -> tuple[np.float32, np.float32]:
    """(sin x, cos x) of a float32 x (radians), computed in float32."""
    n = np.floor(x * _TWO_OVER_PIF + _HALF_F)
    r = ((x - n * _PIO2F_1) - n * _PIO2F_2) - n * _PIO2F_3
    z = r * r
    s = r + r * z * ((_SF0 * z + _SF1) * z + _SF2)
    c = _ONE_F - _HALF_F * z + z * z * ((_CF0 * z + _CF1) * z + _CF2)
    m = n - _FOUR_F * np.floor(n * _QUARTER_F)
    odd = (m == _ONE_F) or (m == _F(3.0))
    so = c if odd else s
    co = s if odd else c
    so = -so if m >= _TWO_F else so
    co = -co if (m == _ONE_F or m == _TWO_F) else co
    return so, co


# sin(π r) = r·S(r²), cos(π r) = C(r²) for |r| ≤ ½: least-squares fits (relative weight) on 300 Chebyshev
# nodes in 40-digit arithmetic (mpmath), coefficients rounded to double: sin ≤ 4.5e-16, cos ≤ 3e-16 absolute.
_SP0, _SP1, _SP2, _SP3 = 3.1415926535897927, -5.167712780049753, 2.550164039859758, -0.5992645287752849
_SP4, _SP5, _SP6, _SP7 = 0.08214587825182912, -0.007370361044587664, 0.00046597753966745733, -2.1122865974926816e-05
_CP0, _CP1, _CP2, _CP3 = 1.0, -4.93480220054467, 4.058712126416015, -1.3352627688291052
_CP4, _CP5, _CP6, _CP7 = 0.23533062991756074, -0.0258068870211906, 0.0019295485261199151, -0.00010454824229038534
_CP8 = 4.1318999912102444e-06
# The same in single precision (fits rounded to float32): sin ≤ 1.6e-7, cos ≤ 1.2e-7 absolute.
_SPF0, _SPF1, _SPF2 = _F(3.1415927410125732), _F(-5.167709827423096), _F(2.550069570541382)
_SPF3, _SPF4 = _F(-0.5982412099838257), _F(0.07755863666534424)
_CPF0, _CPF1, _CPF2 = _F(1.0), _F(-4.934802055358887), _F(4.0587053298950195)
_CPF3, _CPF4, _CPF5 = _F(-1.335174560546875), _F(0.234777569770813), _F(-0.024154862388968468)


SINCOSPI_COEFS64 = np.array(
    [_SP0, _SP1, _SP2, _SP3, _SP4, _SP5, _SP6, _SP7, _CP0, _CP1, _CP2, _CP3, _CP4, _CP5, _CP6, _CP7, _CP8]
)
"""Coefficients for :func:`sincospi_parity` in double: S0..S7, then C0..C8."""

SINCOSPI_COEFS32 = np.array(
    [_SPF0, _SPF1, _SPF2, _SPF3, _SPF4, 0, 0, 0, _CPF0, _CPF1, _CPF2, _CPF3, _CPF4, _CPF5, 0, 0, 0], dtype=np.float32
)
"""Coefficients for :func:`sincospi_parity` in single: S0..S4, three zeros, C0..C5, three zeros."""


@njit(inline="always", fastmath={"contract"}, cache=True)
def sincospi_parity64(t: float, cf: np.ndarray) -> tuple[float, float, float]:
    """(s, c, p) for a float64 t (half-turns), `cf` = :data:`SINCOSPI_COEFS64`; see :func:`sincospi_parity`."""
    h = np.rint(t)
    r = t - h
    z = r * r
    z2 = z * z
    z4 = z2 * z2
    s = r * (((cf[0] + cf[1] * z) + z2 * (cf[2] + cf[3] * z)) + z4 * ((cf[4] + cf[5] * z) + z2 * (cf[6] + cf[7] * z)))
    c = ((cf[8] + cf[9] * z) + z2 * (cf[10] + cf[11] * z)) + z4 * (
        (cf[12] + cf[13] * z) + z2 * (cf[14] + z * (cf[15] + z * cf[16]))
    )
    p = h - 2.0 * np.floor(h * 0.5)
    return s, c, p


@njit(inline="always", fastmath={"contract"}, cache=True)
def sincospi_parity32(t: np.float32, cf: np.ndarray) -> tuple[np.float32, np.float32, np.float32]:
    """(s, c, p) for a float32 t (half-turns), `cf` = :data:`SINCOSPI_COEFS32`, all in float32."""
    h = np.rint(t)
    r = t - h
    z = r * r
    z2 = z * z
    s = r * ((cf[0] + cf[1] * z) + z2 * ((cf[2] + cf[3] * z) + z2 * cf[4]))
    c = (cf[8] + cf[9] * z) + z2 * ((cf[10] + cf[11] * z) + z2 * (cf[12] + cf[13] * z))
    p = h - _TWO_F * np.floor(h * _HALF_F)
    return s, c, p


def sincospi_parity(t, cf):  # pragma: no cover - replaced inside numba by the overload below
    """(s, c, p) for t in half-turns (angle πt): sin(πt) = (1 − 2p)·s, cos(πt) = (1 − 2p)·c, p ∈ {0, 1}.

    `cf` is :data:`SINCOSPI_COEFS64` (float64 t) or :data:`SINCOSPI_COEFS32` (float32 t). The
    coefficients come in as an array rather than as globals so that LLVM keeps them as vectors in
    registers or on the stack instead of rebuilding each from the constant pool on every pass (~8 %).
    Inside numba kernels the float32 or float64 version is picked by the type of t.
    """
    h = round(t)
    return math.sin(math.pi * (t - h)), math.cos(math.pi * (t - h)), float(h % 2)


@overload(sincospi_parity, inline="always")
def _sincospi_parity_overload(t, cf):
    if isinstance(t, types.Float) and t.bitwidth == 32:
        return lambda t, cf: sincospi_parity32(t, cf)
    if isinstance(t, types.Float):
        return lambda t, cf: sincospi_parity64(t, cf)
    return None


def sincos(x):  # pragma: no cover - replaced inside numba by the overload below
    """(sin x, cos x); inside numba kernels the float32 or float64 version by argument type."""
    return math.sin(x), math.cos(x)


@overload(sincos, inline="always")
def _sincos_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: sincos32(x)
    if isinstance(x, types.Float):
        return lambda x: sincos64(x)
    return None
