"""The hand-vectorised pieces of the CPU paths: sincospi_parity, the exact kernel, the SIMD tricubic tap sum.

Each is checked against an independent numpy formula on random, non-degenerate inputs, and the
parallel kernels are checked to give the same bits for one and for two threads.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numba import njit

from spisim.atoms import Atoms
from spisim.scattering._fast_tricubic import tap_sum
from spisim.scattering.direct_cpu import BLOCK, structure_factor_cpu
from spisim.scattering.inputs import group_atoms
from spisim.scattering.slice_cpu import slice_cpu
from spisim.scattering.trig import SINCOSPI_COEFS32, SINCOSPI_COEFS64, sincospi_parity

ENERGY = 7000.0  # eV


@njit
def _eval_sincospi(t, cf, s, c):
    for i in range(t.size):
        si, ci, p = sincospi_parity(t[i], cf)
        s[i] = (1 - 2 * p) * si
        c[i] = (1 - 2 * p) * ci


def _half_turns(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate(
        [rng.uniform(-3e4, 3e4, 20000), rng.uniform(-3, 3, 20000), np.arange(-40, 41) * 0.25, [0.5, -0.5, 1.5, 2.5]]
    )


def test_sincospi_parity_double_is_accurate() -> None:
    t = _half_turns(np.random.default_rng(1))
    s, c = np.empty_like(t), np.empty_like(t)
    _eval_sincospi(t, SINCOSPI_COEFS64, s, c)
    # reference: reduce exactly in numpy (t − 2·round(t/2) is exact), then libm at |x| ≤ π
    x = np.pi * (t - 2 * np.round(t / 2))
    assert np.abs(s - np.sin(x)).max() < 6e-16
    assert np.abs(c - np.cos(x)).max() < 6e-16
    assert np.abs(s[-4:] - [1.0, -1.0, -1.0, 1.0]).max() < 1e-15  # sin(π/2), sin(−π/2), sin(3π/2), sin(5π/2)


def test_sincospi_parity_single_is_accurate_and_stays_single() -> None:
    t = _half_turns(np.random.default_rng(2))
    t32 = t[np.abs(t) < 300].astype(np.float32)
    s, c = np.empty_like(t32), np.empty_like(t32)
    _eval_sincospi(t32, SINCOSPI_COEFS32, s, c)
    assert s.dtype == np.float32
    t64 = t32.astype(np.float64)  # the float32 argument taken as exact
    x = np.pi * (t64 - 2 * np.round(t64 / 2))
    assert np.abs(s - np.sin(x)).max() < 3e-7
    assert np.abs(c - np.cos(x)).max() < 3e-7


def _random_atoms(rng: np.random.Generator, n: int) -> Atoms:
    return Atoms(rng.normal(size=(n, 3)) * 15 + [4.0, -2.0, 9.0], rng.choice([1, 6, 7, 8, 16, 26], n),
                 rng.uniform(0.3, 1.0, n))  # fmt: skip


def _numpy_f(groups, q: np.ndarray) -> np.ndarray:
    """Σ_e f_e(|q|) Σ_j occ_j exp(i q·r_j) with numpy's exp, from the same grouped atoms and form factors."""
    ff = groups.form_factors.table(np.linalg.norm(q, axis=1))
    out = np.zeros(len(q), dtype=np.complex128)
    for e in range(len(groups.starts) - 1):
        pos, occ = groups.group(e)
        out += ff[e] * (np.exp(1j * (q @ pos.T)) @ occ)
    return out


def test_exact_kernel_matches_numpy_across_partial_blocks_and_elements() -> None:
    rng = np.random.default_rng(3)
    groups = group_atoms(_random_atoms(rng, 157), ENERGY)
    n_pix = 3 * BLOCK + 17  # a partial last block
    d = rng.normal(size=(n_pix, 3))
    q = d / np.linalg.norm(d, axis=1)[:, None] * rng.uniform(0.0, 3.0, (n_pix, 1))  # phases up to ~300 rad
    ref = _numpy_f(groups, q)
    f = structure_factor_cpu(groups, q, "double")
    assert np.linalg.norm(f - ref) / np.linalg.norm(ref) < 1e-13
    f32 = structure_factor_cpu(groups, q, "single")
    err32 = np.linalg.norm(f32 - ref) / np.linalg.norm(ref)
    assert 1e-10 < err32 < 1e-4  # really computed in float32, and still accurate


def _threads(n: int):
    """Context manager running numba kernels with `n` threads (at most the machine's count)."""

    class _Ctx:
        def __enter__(self):
            self.old = numba.get_num_threads()
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

        def __exit__(self, *exc):
            numba.set_num_threads(self.old)

    return _Ctx()


def test_exact_kernel_gives_the_same_bits_for_any_thread_count() -> None:
    rng = np.random.default_rng(4)
    groups = group_atoms(_random_atoms(rng, 90), ENERGY)
    q = rng.normal(size=(5 * BLOCK + 3, 3))
    with _threads(1):
        one = structure_factor_cpu(groups, q, "double")
    with _threads(2):
        two = structure_factor_cpu(groups, q, "double")
    assert np.array_equal(one, two)


@njit
def _tap_sum_all(g, idx, w):
    out = np.empty((idx.shape[0], 2))
    for p in range(idx.shape[0]):
        re, im = tap_sum(
            g, idx[p, 0], idx[p, 1], idx[p, 2],
            (w[p, 0, 0], w[p, 0, 1], w[p, 0, 2], w[p, 0, 3]),
            (w[p, 1, 0], w[p, 1, 1], w[p, 1, 2], w[p, 1, 3]),
            (w[p, 2, 0], w[p, 2, 1], w[p, 2, 2], w[p, 2, 3]),
        )  # fmt: skip
        out[p, 0] = re
        out[p, 1] = im
    return out


def test_simd_tap_sum_equals_the_tensor_product_sum() -> None:
    rng = np.random.default_rng(5)
    n = 9
    grid = rng.normal(size=(n, n, n)) + 1j * rng.normal(size=(n, n, n))
    idx = rng.integers(0, n - 3, size=(50, 3))
    w = rng.uniform(-1, 1, size=(50, 3, 4))
    got = _tap_sum_all(grid.view(np.float64), idx, w)
    for p in range(50):
        i, j, k = idx[p]
        block = grid[i : i + 4, j : j + 4, k : k + 4]
        ref = np.einsum("a,b,c,abc->", w[p, 0], w[p, 1], w[p, 2], block)
        assert abs(complex(*got[p]) - ref) < 1e-13 * max(1.0, abs(ref))


def _bspline3(t: np.ndarray) -> np.ndarray:
    """(P, 4) cubic B-spline weights at −1, 0, 1, 2 from the piecewise definition B(x) (independent form)."""
    x = np.abs(t[:, None] - np.arange(-1, 3)[None, :])
    return np.where(x < 1, 2 / 3 - x**2 + x**3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0))


def test_cubic_slice_equals_a_numpy_spline_evaluation_for_any_thread_count() -> None:
    rng = np.random.default_rng(6)
    n, dq = 15, 0.02
    half = (n - 1) // 2
    grid = rng.normal(size=(n, n, n)) + 1j * rng.normal(size=(n, n, n))
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rotation *= np.linalg.det(rotation)
    centre = np.array([3.0, -5.0, 11.0])
    d = rng.normal(size=(400, 3))
    q = d / np.linalg.norm(d, axis=1)[:, None] * rng.uniform(0, (half - 2.5) * dq, (400, 1))
    q[0] = [0.0, 0.0, (half + 1.5) * dq]  # stencil leaves the grid: NaN
    q[0] = q[0] @ rotation.T
    with _threads(1):
        one = slice_cpu(grid, True, q, rotation, dq, half, centre)
    with _threads(2):
        two = slice_cpu(grid, True, q, rotation, dq, half, centre)
    assert np.array_equal(one, two, equal_nan=True)
    assert np.isnan(one[0]) and np.all(np.isfinite(one[1:]))
    k = q[1:] @ rotation  # particle-frame q, Rᵀq as rows
    u = k / dq + half
    i = np.floor(u).astype(int)
    wa, wb, wc = (_bspline3(u[:, m] - i[:, m]) for m in range(3))
    ref = np.empty(len(k), dtype=np.complex128)
    for p in range(len(k)):
        block = grid[i[p, 0] - 1 : i[p, 0] + 3, i[p, 1] - 1 : i[p, 1] + 3, i[p, 2] - 1 : i[p, 2] + 3]
        ref[p] = np.einsum("a,b,c,abc->", wa[p], wb[p], wc[p], block) * np.exp(1j * k[p] @ centre)
    np.testing.assert_allclose(one[1:], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("precision", ["double", "single"])
def test_exact_kernel_has_no_per_call_state(precision: str) -> None:
    """Two calls on the same inputs give the same bits, and a call with pixels in another order permutes them."""
    rng = np.random.default_rng(7)
    groups = group_atoms(_random_atoms(rng, 40), ENERGY)
    q = rng.normal(size=(2 * BLOCK, 3))
    a = structure_factor_cpu(groups, q, precision)
    perm = rng.permutation(len(q))
    assert np.array_equal(a, structure_factor_cpu(groups, q, precision))
    assert np.array_equal(a[perm], structure_factor_cpu(groups, q[perm], precision))
