"""Exact structure factor on an NVIDIA GPU with numba.cuda: the twin of :mod:`.direct_cpu`.

One thread per pixel; a block of :data:`TILE` threads loads :data:`TILE` atoms at a time into shared
memory and every thread sums exp(i q·r) over them. Atoms arrive sorted by element (an element index
per atom); when the index changes a thread multiplies its running sum by that element's f(|q|) and
adds it to F, so each pixel reads each element's form factor once. Single precision uses float32
phases, sin/cos and per-element sums, as the CPU path does.

Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) the same code runs on the CPU, very slowly:
the tests use it with tens of atoms and pixels.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import cuda, float32, float64, int32

from .inputs import ElementGroups

TILE = 128
"""Threads per block = atoms per shared-memory tile."""


@cache
def _kernel(single: bool):
    """The structure-factor kernel for float32 (`single`) or float64 inputs, compiled on first launch."""
    real = float32 if single else float64

    @cuda.jit
    def kernel(qx, qy, qz, x, y, z, occ, elem, ff, out):  # pragma: no cover - runs on a device
        tx = cuda.threadIdx.x
        p = cuda.blockIdx.x * cuda.blockDim.x + tx
        n_pix = qx.shape[0]
        n_atoms = x.shape[0]
        sx = cuda.shared.array(TILE, real)
        sy = cuda.shared.array(TILE, real)
        sz = cuda.shared.array(TILE, real)
        so = cuda.shared.array(TILE, real)
        se = cuda.shared.array(TILE, int32)
        valid = p < n_pix
        px = qx[p] if valid else real(0)
        py = qy[p] if valid else real(0)
        pz = qz[p] if valid else real(0)
        re = real(0)
        im = real(0)
        tot_re = 0.0
        tot_im = 0.0
        cur = elem[0]
        for t0 in range(0, n_atoms, TILE):
            j = t0 + tx
            if j < n_atoms:
                sx[tx] = x[j]
                sy[tx] = y[j]
                sz[tx] = z[j]
                so[tx] = occ[j]
                se[tx] = elem[j]
            cuda.syncthreads()
            for k in range(min(TILE, n_atoms - t0)):
                e = se[k]
                if e != cur:
                    if valid:
                        f = ff[cur, p]
                        tot_re += f.real * re - f.imag * im
                        tot_im += f.real * im + f.imag * re
                    re = real(0)
                    im = real(0)
                    cur = e
                ph = px * sx[k] + py * sy[k] + pz * sz[k]
                re += so[k] * math.cos(ph)
                im += so[k] * math.sin(ph)
            cuda.syncthreads()
        if valid:
            f = ff[cur, p]
            tot_re += f.real * re - f.imag * im
            tot_im += f.real * im + f.imag * re
            out[p] = complex(tot_re, tot_im)

    return kernel


def structure_factor_cuda(groups: ElementGroups, q: np.ndarray, precision: str = "double") -> np.ndarray:
    """Exact F (electrons), complex128 (P,), at particle-frame q (P, 3) Å⁻¹ with the numba.cuda kernel.

    Same numbers as :func:`~spisim.scattering.direct_cpu.structure_factor_cpu` to rounding.
    Host arrays in and out; runs on the simulator when NUMBA_ENABLE_CUDASIM=1.
    """
    single = precision == "single"
    dtype = np.float32 if single else np.float64
    n_pix = q.shape[0]
    if groups.n_atoms == 0 or n_pix == 0:
        return np.zeros(n_pix, dtype=np.complex128)
    ff = groups.form_factors.table(np.linalg.norm(q, axis=1))
    pos = groups.positions.astype(dtype)
    args = [np.ascontiguousarray(q[:, k], dtype=dtype) for k in range(3)]
    args += [np.ascontiguousarray(pos[:, k]) for k in range(3)]
    args += [groups.occupancies.astype(dtype), groups.element_index.astype(np.int32), ff]
    d_args = [cuda.to_device(a) for a in args]
    d_out = cuda.device_array(n_pix, dtype=np.complex128)
    blocks = (n_pix + TILE - 1) // TILE
    _kernel(single)[blocks, TILE](*d_args, d_out)
    return d_out.copy_to_host()
