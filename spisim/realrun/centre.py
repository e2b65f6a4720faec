"""The beam centre of a diffraction pattern from its centrosymmetry (Friedel's law).

Far-field diffraction of a weakly absorbing object obeys I(q) = I(−q) (Friedel), and on a flat detector
normal to the beam the small-angle pattern is symmetric under the point reflection about the beam
position c: I(c + r) = I(c − r). :func:`fit_centre` finds the c that makes a pattern (typically the mean
of many frames, which keeps the symmetry and averages the shot noise away) agree best with its own point
reflection:

1. a coarse search over every half-pixel centre at once: with J = √I on good pixels (√ makes Poisson
   noise uniform, so bright and faint rings weigh alike) and w the good-pixel indicator, the relative
   mismatch of the point reflection about c,

       R(c) = Σ w w′ (J − J′)² / Σ w w′ (J² + J′²),   primes at 2c − p,

   is a ratio of three correlations that are convolutions in 2c, computed by FFT for every 2c on the
   integer grid (c on the half-pixel grid);
2. a sub-pixel refinement: least squares of the residuals J(p) − J(2c − p) (cubic-spline interpolation
   at the mirror point) over the pixel pairs valid near the coarse centre, with the standard errors from
   the Jacobian and the residual scatter (each pair appears twice, so the covariance is doubled).

Coordinates are data-array pixel coordinates, 0-based, pixel centres at integers: ``row`` along slow scan
(SS), ``col`` along fast scan (FS). Only the symmetry is used: no model of the particle, the
photon energy or the distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

MIN_OVERLAP = 0.10
"""Least fraction of the good pixels whose point reflection must land on good pixels in the coarse search."""


@dataclass(frozen=True)
class CentreFit:
    """A fitted beam centre in data-array pixel coordinates (0-based, pixel centres at integers).

    Attributes:
        row: slow-scan coordinate Y of the centre (px).
        col: fast-scan coordinate X of the centre (px).
        row_sd: standard error of ``row`` (px).
        col_sd: standard error of ``col`` (px).
        n_pairs: pixel pairs (p, 2c − p) compared.
        mismatch: relative mismatch R at the fitted centre (0 = perfectly centrosymmetric).
        sd_method: ``fit`` (shot noise of the pattern, from the residuals) or ``jackknife over G frame
            groups`` (:func:`fit_centre_groups`: also what varies from frame to frame).
    """

    row: float
    col: float
    row_sd: float
    col_sd: float
    n_pairs: int = 0
    mismatch: float = math.nan
    sd_method: str = "fit"

    def as_dict(self) -> dict:
        return {"row": self.row, "col": self.col, "row_sd": self.row_sd, "col_sd": self.col_sd,
                "n_pairs": self.n_pairs, "mismatch": self.mismatch, "sd_method": self.sd_method}


def _prepare(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image, dtype=np.float64)
    bad = np.asarray(mask, dtype=bool)
    if img.ndim != 2:
        raise ConfigError(f"fit_centre needs a 2-D image (SS, FS), got shape {img.shape}")
    if bad.shape != img.shape:
        raise ConfigError(f"fit_centre: mask shape {bad.shape} differs from image shape {img.shape}")
    good = ~bad & np.isfinite(img)
    if good.sum() < 16:
        raise ConfigError(f"fit_centre: only {int(good.sum())} good pixels: too few to find a centre")
    root = np.sqrt(np.clip(np.where(good, img, 0.0), 0.0, None))
    if not np.any(root[good] > 0):
        raise ConfigError("fit_centre: the image has no positive intensity on good pixels")
    return root, good


def _mismatch_grid(root: np.ndarray, good: np.ndarray, guess: tuple[float, float] | None,
                   search_radius: float | None) -> np.ndarray:
    """R at every 2c on the integer grid, (2·SS − 1, 2·FS − 1); +inf where not a candidate."""
    from scipy.signal import fftconvolve

    w = good.astype(np.float64)
    wj = w * root
    wj2 = wj * root
    overlap = fftconvolve(w, w)          # Σ w(p) w(s − p)
    cross = fftconvolve(wj, wj)          # Σ wJ(p) wJ(s − p)
    power = 2.0 * fftconvolve(wj2, w)    # Σ w w′ (J² + J′²)
    ok = (overlap >= MIN_OVERLAP * w.sum() - 0.5) & (power > 1e-12 * power.max())
    if guess is not None:
        radius = search_radius if search_radius is not None else max(8.0, min(root.shape) / 8.0)
        s_row, s_col = np.indices(overlap.shape)
        ok &= (s_row / 2.0 - guess[0]) ** 2 + (s_col / 2.0 - guess[1]) ** 2 <= radius**2
    elif search_radius is not None:
        raise ConfigError("fit_centre: search_radius needs a guess")
    mismatch = np.full(overlap.shape, np.inf)
    mismatch[ok] = (power[ok] - 2.0 * cross[ok]) / power[ok]
    return mismatch


def _quadratic_minimum(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Minimum of a 2-D quadratic fitted to a (2k+1)² grid centred at (0, 0), and its standard errors.

    Returns ``(offset (rows, cols), sd (rows, cols))`` in grid steps, or None (no minimum within 1.5 steps).
    The errors come from the scatter of the grid values about the quadratic, propagated to the vertex.
    """
    k = values.shape[0] // 2
    y, x = np.mgrid[-k : k + 1, -k : k + 1].astype(np.float64)
    ok = np.isfinite(values)
    if ok.sum() < 7:
        return None
    a = np.stack([np.ones_like(x), y, x, y * y, x * y, x * x], axis=-1)[ok]
    coef, *_ = np.linalg.lstsq(a, values[ok], rcond=None)

    def vertex(c: np.ndarray) -> np.ndarray:
        hess = np.array([[2 * c[3], c[4]], [c[4], 2 * c[5]]])
        return np.linalg.solve(hess, -c[1:3])

    hess = np.array([[2 * coef[3], coef[4]], [coef[4], 2 * coef[5]]])
    if np.linalg.det(hess) <= 0 or hess[0, 0] <= 0:
        return None
    off = vertex(coef)
    if np.any(np.abs(off) > 1.5):
        return None
    resid = values[ok] - a @ coef
    cov = float(resid @ resid) / max(int(ok.sum()) - 6, 1) * np.linalg.inv(a.T @ a)
    step = 1e-6 * np.maximum(np.abs(coef), 1e-12)
    dv = np.stack([(vertex(coef + np.eye(6)[i] * step[i]) - off) / step[i] for i in range(6)], axis=1)
    sd = np.sqrt(np.clip(np.diag(dv @ cov @ dv.T), 0.0, None))
    return off, sd


def fit_centre(image: np.ndarray, mask: np.ndarray, guess: tuple[float, float] | None = None, *,
               search_radius: float | None = None) -> CentreFit:
    """The beam centre of a pattern from its centrosymmetry I(c + r) = I(c − r), to a fraction of a pixel.

    Args:
        image: (SS, FS) intensities (photons or ADU; any positive scale), e.g. the mean of a run's frames.
        mask: (SS, FS) bool, True = bad pixel (ignored, as are non-finite values).
        guess: optional (row, col) px; the search is then limited to ``search_radius`` px around it
            (default max(8, min(SS, FS)/8)). Without it every centre whose reflection keeps at least
            :data:`MIN_OVERLAP` of the good pixels on good pixels is tried.
        search_radius: px, with ``guess`` only.

    Returns:
        :class:`CentreFit` (row, col, their standard errors in px).

    Raises:
        ConfigError: wrong shapes, too few good pixels, no positive intensity, or no symmetric centre found.
    """
    from scipy.ndimage import gaussian_filter

    root, good = _prepare(image, mask)
    g = None if guess is None else (float(guess[0]), float(guess[1]))
    grid = _mismatch_grid(root, good, g, search_radius)
    s = np.unravel_index(int(np.argmin(grid)), grid.shape)
    if not np.isfinite(grid[s]):
        raise ConfigError("fit_centre: no candidate centre has enough good pixels on both sides (mask too large "
                          "or guess off the detector)")
    k = 2
    window = np.full((2 * k + 1, 2 * k + 1), np.nan)
    r0, r1 = max(s[0] - k, 0), min(s[0] + k + 1, grid.shape[0])
    c0, c1 = max(s[1] - k, 0), min(s[1] + k + 1, grid.shape[1])
    window[r0 - s[0] + k : r1 - s[0] + k, c0 - s[1] + k : c1 - s[1] + k] = grid[r0:r1, c0:c1]
    window[~np.isfinite(window)] = np.nan
    vertex = _quadratic_minimum(window)
    two_c = np.array(s, dtype=np.float64) + (vertex[0] if vertex is not None else 0.0)
    centre = two_c / 2.0
    vertex_sd = vertex[1] / 2.0 if vertex is not None else np.full(2, 0.5 / math.sqrt(12.0))

    # standard errors: Gauss-Newton on the residuals r_p = J(p) − J(2c − p), pairs at the grid minimum
    ss, fs = root.shape
    rows, cols = np.nonzero(good)
    mr, mc = s[0] - rows, s[1] - cols
    inside = (mr >= 0) & (mr < ss) & (mc >= 0) & (mc < fs)
    rows, cols, mr, mc = rows[inside], cols[inside], mr[inside], mc[inside]
    pair = good[mr, mc]
    rows, cols, mr, mc = rows[pair], cols[pair], mr[pair], mc[pair]
    resid = root[rows, cols] - root[mr, mc]
    weight = gaussian_filter(good.astype(np.float64), 1.0)
    smooth = gaussian_filter(root * good, 1.0) / np.maximum(weight, 1e-12)
    grad_r, grad_c = np.gradient(smooth)
    jac = -2.0 * np.stack([grad_r[mr, mc], grad_c[mr, mc]], axis=-1)
    n = rows.size
    sd = np.array([math.nan, math.nan])
    if n > 2:
        s2 = float(np.sum(resid**2)) / (n - 2)
        with np.errstate(all="ignore"):
            try:
                cov = 2.0 * s2 * np.linalg.inv(jac.T @ jac)  # each pair appears twice
                sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            except np.linalg.LinAlgError:
                pass
    sd = np.hypot(sd, vertex_sd)
    return CentreFit(row=float(centre[0]), col=float(centre[1]), row_sd=float(sd[0]), col_sd=float(sd[1]),
                     n_pairs=int(n // 2), mismatch=float(grid[s]))


def fit_centre_groups(sums: np.ndarray, counts: np.ndarray, mask: np.ndarray) -> CentreFit:
    """The centre of the mean pattern of several frame groups, with jackknife standard errors.

    The fit on the mean of all groups is :func:`fit_centre`'s; its errors come from the spread of the
    fits that leave one group out (jackknife: sd² = (G − 1)/G Σ (c₋ᵢ − c̄)²), which also counts what
    changes from frame to frame (particles, background), unlike the shot-noise errors of one fit. With
    fewer than 3 groups the fit's own errors are kept.

    Args:
        sums: (G, SS, FS) sum of the frames of each group (any intensity unit).
        counts: (G, SS, FS) frames that added a finite value to each pixel of each group.
        mask: (SS, FS) bool, True = bad.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.ndim != 3 or counts.shape != sums.shape:
        raise ConfigError(f"fit_centre_groups: sums {sums.shape} and counts {counts.shape} must be equal (G, SS, FS)")
    groups = [g for g in range(sums.shape[0]) if counts[g].any()]
    total, count = sums.sum(axis=0), counts.sum(axis=0)
    bad = np.asarray(mask, dtype=bool) | (count == 0)
    fit = fit_centre(np.where(bad, 0.0, total / np.maximum(count, 1)), bad)
    if len(groups) < 3:
        return fit
    rows, cols = [], []
    for g in groups:
        rest = count - counts[g]
        bad_g = bad | (rest == 0)
        f = fit_centre(np.where(bad_g, 0.0, (total - sums[g]) / np.maximum(rest, 1)), bad_g,
                       guess=(fit.row, fit.col), search_radius=8.0)
        rows.append(f.row)
        cols.append(f.col)
    k = len(groups)
    row_sd = math.sqrt((k - 1) / k * float(np.sum((np.array(rows) - np.mean(rows)) ** 2)))
    col_sd = math.sqrt((k - 1) / k * float(np.sum((np.array(cols) - np.mean(cols)) ** 2)))
    return CentreFit(row=fit.row, col=fit.col, row_sd=max(row_sd, fit.row_sd), col_sd=max(col_sd, fit.col_sd),
                     n_pairs=fit.n_pairs, mismatch=fit.mismatch, sd_method=f"jackknife over {k} frame groups")
