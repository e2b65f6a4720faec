"""The beam centre of a diffraction pattern from its centrosymmetry (Friedel's law).

Far-field diffraction of a weakly absorbing object obeys I(q) = I(−q) (Friedel), and on a flat detector
normal to the beam the small-angle pattern is symmetric under the point reflection about the beam
position c: I(c + r) = I(c − r). :func:`fit_centre` finds the c that makes a pattern (typically the mean
of many frames, which keeps the symmetry and averages the shot noise away) agree best with its own point
reflection:

1. J = √I on good pixels (√ makes Poisson noise uniform, so bright and faint rings weigh alike),
   smoothed by a Gaussian of ``smooth`` px (2 by default; normalised by the smoothed good-pixel
   indicator w, so masks do not darken their neighbours). Smoothing keeps the symmetry and takes most
   of the shot noise out of the comparison: without it the noise of the faint outer pixels makes the
   mismatch ragged from one candidate centre to the next (errors up to 1.5 px on sparse 1024² frames,
   0.16 px with it);
2. a search over every half-pixel centre at once: the mismatch of the point reflection about c over
   the pixel pairs (p, 2c − p) that are both good,

       R(c) = 1 − ρ(c),  ρ = (⟨J J′⟩ − ⟨J⟩²) / (⟨J²⟩ − ⟨J⟩²),

   (ρ is the correlation of J with its reflection; the pairs are the same set both ways, so both sides
   share mean and variance) needs four correlations, Σ w w′, Σ wJ wJ′, Σ wJ w′ and Σ wJ² w′, which are
   convolutions in 2c computed by FFT for every 2c on the integer grid. A correlation, not a plain
   difference, so that a flat region (a far-off centre whose pairs all see background) does not look
   symmetric: candidates whose pairs vary less than 5 % of the image's variance, or keep fewer than
   :data:`MIN_OVERLAP` of the good pixels, are not considered;
3. a 2-D quadratic through the 3 × 3 values of R around the best half-pixel centre: its vertex is the
   sub-pixel centre (fine rings make the minimum only a few half-pixel steps wide, where a wider window
   would fit a shape that is not quadratic). Pixels are never interpolated (interpolation smooths the
   mirror side only, which favours centres whose mirror points fall between pixels: a bias of a quarter
   pixel on noisy data).

The standard errors of one fit combine the scatter of R about the quadratic and a Gauss-Newton estimate
from the pair residuals; they reflect shot noise only. :func:`fit_centre_groups` gives jackknife errors
over frame groups, which also count what changes from frame to frame (use those on real data, where
the errors of one fit are several times too small).

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
"""Least fraction of the good pixels whose point reflection must land on good pixels in the search."""

MIN_STRUCTURE = 0.05
"""Least variance of √I over a candidate's pixel pairs, as a fraction of its variance over the image."""

SMOOTH_PX = 2.0
"""Default σ (px) of the Gaussian that smooths √I before the comparison."""


@dataclass(frozen=True)
class CentreFit:
    """A fitted beam centre in data-array pixel coordinates (0-based, pixel centres at integers).

    Attributes:
        row: slow-scan coordinate Y of the centre (px).
        col: fast-scan coordinate X of the centre (px).
        row_sd: standard error of ``row`` (px).
        col_sd: standard error of ``col`` (px).
        n_pairs: pixel pairs (p, 2c − p) compared.
        mismatch: R = 1 − ρ at the best half-pixel centre (0 = perfectly centrosymmetric).
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
    from scipy import fft

    shape = [fft.next_fast_len(2 * n - 1, real=True) for n in good.shape]
    out = tuple(slice(0, 2 * n - 1) for n in good.shape)

    def correlate(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        full = fft.irfft2(fa * fb, shape, workers=-1)
        return np.ascontiguousarray(full[out])  # the padded transform is freed here

    # memory: about ten arrays of (2·SS − 1) × (2·FS − 1) float64 at the peak
    w = good.astype(np.float64)
    f_w = fft.rfft2(w, shape, workers=-1)
    f_wj = fft.rfft2(w * root, shape, workers=-1)
    n_good = float(w.sum())
    del w
    overlap = correlate(f_w, f_w)                                  # Σ w(p) w(s − p)
    ok = overlap >= MIN_OVERLAP * n_good - 0.5
    np.maximum(overlap, 1.0, out=overlap)
    product = correlate(f_wj, f_wj)                                # Σ wJ wJ′
    product /= overlap                                             # ⟨J J′⟩
    mean = correlate(f_wj, f_w)
    mean /= overlap                                                # ⟨J⟩
    del f_wj
    second = correlate(fft.rfft2(np.where(good, root * root, 0.0), shape, workers=-1), f_w)
    del f_w
    second /= overlap                                              # ⟨J²⟩
    del overlap
    variance = second - mean**2
    del mean
    ok &= variance > MIN_STRUCTURE * float(np.var(root[good]))
    if guess is not None:
        radius = search_radius if search_radius is not None else max(8.0, min(root.shape) / 8.0)
        s_row, s_col = np.ogrid[: ok.shape[0], : ok.shape[1]]
        ok &= (s_row / 2.0 - guess[0]) ** 2 + (s_col / 2.0 - guess[1]) ** 2 <= radius**2
    elif search_radius is not None:
        raise ConfigError("fit_centre: search_radius needs a guess")
    mismatch = np.full(ok.shape, np.inf)
    mismatch[ok] = (second[ok] - product[ok]) / variance[ok]
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
               search_radius: float | None = None, smooth: float = SMOOTH_PX) -> CentreFit:
    """The beam centre of a pattern from its centrosymmetry I(c + r) = I(c − r), to a fraction of a pixel.

    Args:
        image: (SS, FS) intensities (photons or ADU; any positive scale), e.g. the mean of a run's frames.
        mask: (SS, FS) bool, True = bad pixel (ignored, as are non-finite values).
        guess: optional (row, col) px; the search is then limited to ``search_radius`` px around it
            (default max(8, min(SS, FS)/8)). Without it every centre whose reflection keeps at least
            :data:`MIN_OVERLAP` of the good pixels on good pixels is tried.
        search_radius: px, with ``guess`` only.
        smooth: σ (px) of the Gaussian smoothing of √I (0: none).

    Returns:
        :class:`CentreFit` (row, col, their standard errors in px).

    Raises:
        ConfigError: wrong shapes, too few good pixels, no positive intensity, or no symmetric centre found.
    """
    from scipy.ndimage import gaussian_filter

    raw, good = _prepare(image, mask)
    root = raw
    if smooth > 0:
        weight = gaussian_filter(good.astype(np.float64), smooth)
        root = np.where(good, gaussian_filter(raw * good, smooth) / np.maximum(weight, 1e-12), 0.0)
    g = None if guess is None else (float(guess[0]), float(guess[1]))
    grid = _mismatch_grid(root, good, g, search_radius)
    s = np.unravel_index(int(np.argmin(grid)), grid.shape)
    if not np.isfinite(grid[s]):
        raise ConfigError("fit_centre: no candidate centre has enough good pixels on both sides (mask too large "
                          "or guess off the detector)")
    k = 1  # a 3 × 3 window: fine patterns make the minimum narrow (see the module doc)
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
    resid = raw[rows, cols] - raw[mr, mc]
    weight = gaussian_filter(good.astype(np.float64), 1.0)
    smoothed = gaussian_filter(raw * good, 1.0) / np.maximum(weight, 1e-12)
    grad_r, grad_c = np.gradient(smoothed)
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
    sums, counts = np.asarray(sums), np.asarray(counts)
    if sums.ndim != 3 or counts.shape != sums.shape:
        raise ConfigError(f"fit_centre_groups: sums {sums.shape} and counts {counts.shape} must be equal (G, SS, FS)")
    groups = [g for g in range(sums.shape[0]) if counts[g].any()]
    total, count = sums.sum(axis=0, dtype=np.float64), counts.sum(axis=0, dtype=np.float64)
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
