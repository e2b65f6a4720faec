"""Slicing a reciprocal volume on the CPU (numba): interpolate F at rotated q, one pixel per iteration.

The grid holds F (linear) or its cubic B-spline coefficients (cubic) at q = Δq·(i − h, j − h, k − h).
For a pixel at laboratory q and particle rotation R the kernel evaluates the grid at k = Rᵀ q and
multiplies by exp(i k·c), which restores the phase of the particle's centre c (the grid is computed
for atoms at r − c so that it is as smooth as the particle allows). Pixels whose stencil leaves the
grid get NaN (the caller checks |q| ≤ q_max first).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .trig import sincos64


@njit(inline="always", cache=True)
def bspline3_weights(t: float) -> tuple[float, float, float, float]:
    """Cubic B-spline weights of the taps at −1, 0, 1, 2 for a fractional position t ∈ [0, 1)."""
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    return s * s * s / 6.0, (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0, (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0, t3 / 6.0


@njit(inline="always", cache=True)
def _plane(coef, i0, j0, k0, w0, w1, w2, w3):
    """Σ_c w_c · coef[i0, j0, k0 − 1 + c], c = 0..3 (one row of the 4×4×4 stencil)."""
    return w0 * coef[i0, j0, k0 - 1] + w1 * coef[i0, j0, k0] + w2 * coef[i0, j0, k0 + 1] + w3 * coef[i0, j0, k0 + 2]


@njit(inline="always", cache=True)
def _column(coef, i0, j0, k0, v0, v1, v2, v3, w0, w1, w2, w3):
    """Σ_b v_b Σ_c w_c coef[i0, j0 − 1 + b, k0 − 1 + c]."""
    return (
        v0 * _plane(coef, i0, j0 - 1, k0, w0, w1, w2, w3)
        + v1 * _plane(coef, i0, j0, k0, w0, w1, w2, w3)
        + v2 * _plane(coef, i0, j0 + 1, k0, w0, w1, w2, w3)
        + v3 * _plane(coef, i0, j0 + 2, k0, w0, w1, w2, w3)
    )


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _slice_cubic(coef, q, rot, dq, half, centre, out):  # pragma: no cover - numba
    n = coef.shape[0]
    inv_dq = 1.0 / dq
    for p in prange(q.shape[0]):
        k0 = rot[0, 0] * q[p, 0] + rot[1, 0] * q[p, 1] + rot[2, 0] * q[p, 2]
        k1 = rot[0, 1] * q[p, 0] + rot[1, 1] * q[p, 1] + rot[2, 1] * q[p, 2]
        k2 = rot[0, 2] * q[p, 0] + rot[1, 2] * q[p, 1] + rot[2, 2] * q[p, 2]
        u0 = k0 * inv_dq + half
        u1 = k1 * inv_dq + half
        u2 = k2 * inv_dq + half
        i0 = int(math.floor(u0))
        i1 = int(math.floor(u1))
        i2 = int(math.floor(u2))
        if i0 < 1 or i1 < 1 or i2 < 1 or i0 + 2 >= n or i1 + 2 >= n or i2 + 2 >= n:
            out[p] = complex(np.nan, np.nan)
            continue
        a0, a1, a2, a3 = bspline3_weights(u0 - i0)
        b0, b1, b2, b3 = bspline3_weights(u1 - i1)
        c0, c1, c2, c3 = bspline3_weights(u2 - i2)
        acc = (
            a0 * _column(coef, i0 - 1, i1, i2, b0, b1, b2, b3, c0, c1, c2, c3)
            + a1 * _column(coef, i0, i1, i2, b0, b1, b2, b3, c0, c1, c2, c3)
            + a2 * _column(coef, i0 + 1, i1, i2, b0, b1, b2, b3, c0, c1, c2, c3)
            + a3 * _column(coef, i0 + 2, i1, i2, b0, b1, b2, b3, c0, c1, c2, c3)
        )
        s_ph, c_ph = sincos64(k0 * centre[0] + k1 * centre[1] + k2 * centre[2])
        out[p] = acc * complex(c_ph, s_ph)


@njit(parallel=True, fastmath={"contract"}, cache=True)
def _slice_linear(values, q, rot, dq, half, centre, out):  # pragma: no cover - numba
    n = values.shape[0]
    inv_dq = 1.0 / dq
    for p in prange(q.shape[0]):
        k0 = rot[0, 0] * q[p, 0] + rot[1, 0] * q[p, 1] + rot[2, 0] * q[p, 2]
        k1 = rot[0, 1] * q[p, 0] + rot[1, 1] * q[p, 1] + rot[2, 1] * q[p, 2]
        k2 = rot[0, 2] * q[p, 0] + rot[1, 2] * q[p, 1] + rot[2, 2] * q[p, 2]
        u0 = k0 * inv_dq + half
        u1 = k1 * inv_dq + half
        u2 = k2 * inv_dq + half
        i0 = int(math.floor(u0))
        i1 = int(math.floor(u1))
        i2 = int(math.floor(u2))
        if i0 < 0 or i1 < 0 or i2 < 0 or i0 + 1 >= n or i1 + 1 >= n or i2 + 1 >= n:
            out[p] = complex(np.nan, np.nan)
            continue
        t0 = u0 - i0
        t1 = u1 - i1
        t2 = u2 - i2
        acc = 0j
        for a in range(2):
            wa = t0 if a else 1.0 - t0
            for b in range(2):
                wb = t1 if b else 1.0 - t1
                acc += wa * wb * ((1.0 - t2) * values[i0 + a, i1 + b, i2] + t2 * values[i0 + a, i1 + b, i2 + 1])
        s_ph, c_ph = sincos64(k0 * centre[0] + k1 * centre[1] + k2 * centre[2])
        out[p] = acc * complex(c_ph, s_ph)


def slice_cpu(
    grid: np.ndarray, cubic: bool, q: np.ndarray, rotation: np.ndarray, dq: float, half: float, centre: np.ndarray
) -> np.ndarray:
    """Interpolated F, complex128 (P,), at laboratory q (P, 3) Å⁻¹ for a particle rotated by `rotation`.

    `grid` (n, n, n) complex128: B-spline coefficients if `cubic`, else samples; grid index h is q = 0.
    """
    out = np.empty(q.shape[0], dtype=np.complex128)
    kernel = _slice_cubic if cubic else _slice_linear
    kernel(grid, q, rotation, float(dq), float(half), np.asarray(centre, dtype=np.float64), out)
    return out
