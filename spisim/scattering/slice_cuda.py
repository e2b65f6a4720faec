"""Slicing a reciprocal volume on an NVIDIA GPU (numba.cuda): the twin of :mod:`.slice_cpu`.

One thread per pixel, the same arithmetic as the CPU kernels (cubic B-spline or trilinear, phase of
the particle centre restored). The grid is copied to the device once per volume and kept there
(:class:`~spisim.scattering.volume.ReciprocalVolume` caches it); the pixel q may stay there as well (a
device array in, a device array out), so that per particle only its rotation and centre go to the device.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..backend import is_device_array

THREADS = 128
"""Threads per block."""


@cuda.jit(device=True)
def _bspline3(t, a):  # pragma: no cover - device code
    s = 1.0 - t
    if a == 0:
        return s * s * s / 6.0
    if a == 1:
        return (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0
    if a == 2:
        return (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
    return t * t * t / 6.0


@cuda.jit
def _slice_kernel(grid, cubic, q, rot, dq, half, centre, out):  # pragma: no cover - device code
    p = cuda.grid(1)
    if p >= q.shape[0]:
        return
    n = grid.shape[0]
    k0 = rot[0, 0] * q[p, 0] + rot[1, 0] * q[p, 1] + rot[2, 0] * q[p, 2]
    k1 = rot[0, 1] * q[p, 0] + rot[1, 1] * q[p, 1] + rot[2, 1] * q[p, 2]
    k2 = rot[0, 2] * q[p, 0] + rot[1, 2] * q[p, 1] + rot[2, 2] * q[p, 2]
    u0 = k0 / dq + half
    u1 = k1 / dq + half
    u2 = k2 / dq + half
    i0 = int(math.floor(u0))
    i1 = int(math.floor(u1))
    i2 = int(math.floor(u2))
    t0 = u0 - i0
    t1 = u1 - i1
    t2 = u2 - i2
    lo = 1 if cubic else 0
    taps = 4 if cubic else 2
    if i0 < lo or i1 < lo or i2 < lo or i0 - lo + taps > n or i1 - lo + taps > n or i2 - lo + taps > n:
        out[p] = complex(math.nan, math.nan)
        return
    acc_re = 0.0
    acc_im = 0.0
    for a in range(taps):
        wa = _bspline3(t0, a) if cubic else (t0 if a else 1.0 - t0)
        for b in range(taps):
            wb = _bspline3(t1, b) if cubic else (t1 if b else 1.0 - t1)
            for c in range(taps):
                wc = _bspline3(t2, c) if cubic else (t2 if c else 1.0 - t2)
                v = grid[i0 - lo + a, i1 - lo + b, i2 - lo + c]
                w = wa * wb * wc
                acc_re += w * v.real
                acc_im += w * v.imag
    ph = k0 * centre[0] + k1 * centre[1] + k2 * centre[2]
    c_ph = math.cos(ph)
    s_ph = math.sin(ph)
    out[p] = complex(acc_re * c_ph - acc_im * s_ph, acc_re * s_ph + acc_im * c_ph)


def slice_cuda(
    grid_device,
    cubic: bool,
    q,
    rotation: np.ndarray,
    dq: float,
    half: float,
    centre: np.ndarray,
):
    """As :func:`~spisim.scattering.slice_cpu.slice_cpu` with the grid already on the device.

    `grid_device`: numba device array (n, n, n) complex128. `q`: (P, 3) float64 Å⁻¹, on the host (numpy) or
    already on the device (numba device array or CuPy array: nothing crosses the bus then).
    Returns complex128 (P,): a numpy array for host `q`, a numba device array (which CuPy takes without a
    copy, ``cupy.asarray``) for device `q`.
    """
    on_device = is_device_array(q)
    n_pix = q.shape[0]
    if n_pix == 0:
        return cuda.device_array(0, dtype=np.complex128) if on_device else np.zeros(0, dtype=np.complex128)
    d_q = q if on_device else cuda.to_device(np.ascontiguousarray(q, dtype=np.float64))
    d_rot = cuda.to_device(np.ascontiguousarray(rotation, dtype=np.float64))
    d_c = cuda.to_device(np.asarray(centre, dtype=np.float64))
    d_out = cuda.device_array(n_pix, dtype=np.complex128)
    blocks = (n_pix + THREADS - 1) // THREADS
    _slice_kernel[blocks, THREADS](grid_device, bool(cubic), d_q, d_rot, float(dq), float(half), d_c, d_out)
    return d_out if on_device else d_out.copy_to_host()
