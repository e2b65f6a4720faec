"""Fits that turn a real run into simulation settings: sphere sizes, fluence and hit spread, background.

Everything here works on radial profiles (:class:`spisim.realrun.profiles.RadialBins`):

* :func:`fit_spheres` fits each shot's profile by a uniform sphere, y(q) = A·W(q)·Φ(qR)² + b·g(q), with
  Φ(x) = 3(sin x − x cos x)/x³, W the mean polarisation × solid angle of the shell (sr), g the shape of the
  background (flat per pixel, or a template's profile). R is searched on a fine logarithmic grid (steps of
  0.1 %, refined by a parabola), A and b ≥ 0 by weighted least squares for each R, and the grid point with the
  smallest squared log residual wins: ring positions, not the bright centre, decide the size. The fit's
  *quality* is the share of the profile's structure the sphere explains beyond a smooth curve (a quadratic in
  log q): near 1 for a single sphere-like particle, near 0 for a speckled aggregate or a featureless blob.
* :func:`fluence_from_amplitude` turns A into the fluence the particle saw (photons/m²): A = J r_e² N_e²,
  N_e = ρ·(4/3)πR³ electrons (ρ the electron density, e/Å³; J and ρ² cannot be told apart from photon counts,
  so ρ is an assumption the matched manifest repeats).
* :func:`hit_spread` reads the fluences of single hits as a Gaussian focus sampled uniformly over a disk:
  ln J = ln J₀ − c·U + σ·Z (U uniform in [0, 1], Z standard normal for the pulse jitter σ), so
  var(ln J) = c²/12 + σ², and c = 4 ln 2 · h²/w² gives the hit radius h for a focus of FWHM w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..constants import R_E
from ..continuum import UniformPolyhedron
from ..errors import InputFileError, SpiError
from .profiles import RadialBins

SPHERE_MINIMA = (4.4934, 7.7253, 10.9041, 14.0662)
"""First zeros of the sphere form factor Φ(x) (tan x = x)."""

MODEL_ERROR = 0.1
"""Relative error of a shell's value that no sphere model removes (shape, alignment): caps the weight of bright
shells in the log residual, so that rings far out count beside the bright centre."""

RADIUS_STEP = 1e-3
"""Relative step of the fine radius grid of :func:`fit_spheres`."""

COARSE_STEP = 0.015
"""Relative step of the coarse radius grid that :func:`fit_spheres` searches first (a ring period is ~π/R, so a
1.5 % step moves the third minimum by a twentieth of a period)."""


def sphere_phi2(x: np.ndarray) -> np.ndarray:
    """Φ(x)² of a uniform sphere, Φ(x) = 3(sin x − x cos x)/x³ (Φ(0) = 1), for any shape of x ≥ 0."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-2
    xs = np.where(small, 1.0, x)
    phi = np.where(small, 1.0 - x * x / 10.0, 3.0 * (np.sin(xs) - xs * np.cos(xs)) / xs**3)
    return phi * phi


@dataclass(frozen=True)
class SphereFit:
    """The sphere that best explains one shot's radial profile.

    Attributes:
        radius: R, Å (NaN when no sphere fits).
        amplitude: A, photons per steradian at Φ = 1 (the forward scattering J r_e² N_e²).
        background: b, photons per pixel (times the background shape g).
        quality: share of the profile's structure the sphere explains beyond a smooth curve (≤ 1; < 0: worse).
        residual: rms log residual of the sphere fit.
        visibility: share of the forward scattering in the sharp sphere (1: rings as deep as a perfect sphere's,
            0: no rings).
    """

    radius: float
    amplitude: float
    background: float
    quality: float
    residual: float
    visibility: float


def radius_limits(bins: RadialBins) -> tuple[float, float]:
    """(smallest, largest) sphere radius (Å) a profile on ``bins`` can measure.

    The smallest has its first maximum after the first minimum (qR = 5.76) inside the detector; the largest
    still has three shells per ring period π/R.
    """
    q_max = float(bins.q.max())
    return 5.8 / q_max, math.pi / (3.0 * bins.width)


def _smooth_residual(logy: np.ndarray, q: np.ndarray, weight: np.ndarray) -> float:
    """Weighted squared log residual of the best quadratic in ln q: a profile's structure beyond a smooth curve."""
    x = np.log(q)
    coef = np.polyfit(x, logy, 2, w=np.sqrt(weight))
    return float(np.sum(weight * (logy - np.polyval(coef, x)) ** 2))


SMEAR_SD = 0.15
"""Relative rms size spread of the smeared sphere profile (the ring-free part of a shot's model)."""


def smeared_phi2(x: np.ndarray, sd: float = SMEAR_SD, points: int = 201) -> np.ndarray:
    """Φ(s·x)² averaged over a Gaussian size factor s of mean 1 and rms ``sd``: a sphere's profile without rings.

    Equal to Φ² at small x (1 at x = 0) and to its ring-averaged envelope at large x; the fits use it for the
    part of a shot whose minima are filled (non-sphericity, pixel integration, internal structure). Computed by
    Gauss–Hermite quadrature (``points`` nodes resolve the rings up to x of several hundred).
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    keep = weights > 1e-30 * weights.max()
    s = np.clip(1.0 + sd * nodes[keep], 0.05, None)
    x = np.asarray(x, dtype=np.float64)
    return np.tensordot(weights[keep] / weights[keep].sum(), sphere_phi2(s.reshape(-1, *([1] * x.ndim)) * x),
                        axes=1)


_SMEARED_STEP = 0.005
_SMEARED_TABLE: np.ndarray | None = None


def _smeared_interp(x: np.ndarray) -> np.ndarray:
    """:func:`smeared_phi2` at the default spread, from a table (x steps of 0.005, linear interpolation)."""
    global _SMEARED_TABLE
    top = float(np.max(x)) if np.size(x) else 0.0
    if _SMEARED_TABLE is None or (len(_SMEARED_TABLE) - 1) * _SMEARED_STEP < top:
        n = int(math.ceil(max(top, 200.0) * 1.5 / _SMEARED_STEP)) + 1
        x_all = np.arange(n) * _SMEARED_STEP
        # in pieces: the quadrature holds (nodes x points) temporaries
        _SMEARED_TABLE = np.concatenate([smeared_phi2(x_all[i:i + 8192]) for i in range(0, n, 8192)])
    return np.interp(x, np.arange(len(_SMEARED_TABLE)) * _SMEARED_STEP, _SMEARED_TABLE)


def _best_nonnegative(columns: list[np.ndarray], y: np.ndarray, w: np.ndarray, logy: np.ndarray,
                      eps: np.ndarray, log_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every radius, the non-negative least-squares mix of ``columns`` and its squared log residual.

    Args:
        columns: model columns, each (R, K) or (K,) (broadcast); column 0 is the sharp sphere and must be > 0.
        y, w, logy, eps: (K,) data, weights, log data and log floor.
        log_weight: (K,) weight of each shell's squared log residual.

    Returns:
        (coefficients (R, C), residual (R,)); residual inf where no mix has a positive sphere term.
    """
    n_r = max(c.shape[0] for c in columns if c.ndim == 2)
    cols = [np.broadcast_to(c, (n_r, len(y))) for c in columns]
    best_res = np.full(n_r, np.inf)
    best_coef = np.zeros((n_r, len(cols)))
    subsets = [s for s in ((0, 1, 2), (0, 2), (0, 1), (0,)) if max(s) < len(cols)]
    for subset in subsets:
        x = np.stack([cols[i] for i in subset], axis=-1)  # (R, K, c)
        scale = np.sqrt(np.einsum("rkc,k->rc", x * x, w)) + 1e-300  # columns of unit weighted norm
        xs = x / scale[:, None, :]
        xtw = xs * w[None, :, None]
        normal = np.einsum("rkc,rkd->rcd", xtw, xs) + np.eye(len(subset))[None] * 1e-12
        rhs = np.einsum("rkc,k->rc", xtw, y)
        coef = np.linalg.solve(normal, rhs[..., None])[..., 0] / scale
        ok = np.all(coef >= 0, axis=1) & (coef[:, 0] > 0)
        pred = np.einsum("rkc,rc->rk", x, coef)
        res = (log_weight * (logy[None, :] - np.log(np.maximum(pred, 0.0) + eps[None, :])) ** 2).sum(1)
        better = ok & (res < best_res)
        best_res = np.where(better, res, best_res)
        full = np.zeros((n_r, len(cols)))
        full[:, list(subset)] = coef
        best_coef = np.where(better[:, None], full, best_coef)
    return best_coef, best_res


def fit_spheres(profiles: np.ndarray, bins: RadialBins, *, radius_range: tuple[float, float] | None = None,
                background_shape: np.ndarray | None = None, pixel_noise: float = 0.0) -> list[SphereFit]:
    """Fit each profile (N, K) (mean photons per pixel per shell) by a sphere (see the module doc).

    The model of a shot is y = W·[A_s Φ(qR)² + A_f Φ̄(qR)²] + b·g: a sharp sphere, the same sphere with its
    rings smeared out (:func:`smeared_phi2`: minima filled by what a perfect sphere lacks) and a background;
    A_s, A_f, b ≥ 0 by weighted least squares at each R of a coarse grid (steps of 1.5 %), then of a fine one
    (0.1 %) about the best coarse radius.

    Args:
        profiles: (N, K) from :meth:`RadialBins.profiles`.
        bins: the shells.
        radius_range: (low, high) Å searched; default :func:`radius_limits`.
        background_shape: (K,) g, the background's profile shape; default flat (1 photon per pixel).
        pixel_noise: rms noise of one pixel that is not photon noise (read noise), photons; it sets, with one
            photon per shell, the floor below which a profile's value is not trusted in the log residual.
    """
    profiles = np.atleast_2d(np.asarray(profiles, dtype=np.float64))
    lo, hi = radius_limits(bins) if radius_range is None else radius_range
    if not 0 < lo < hi:
        raise InputFileError(f"no sphere size can be measured on this detector (radius range {lo:.3g}..{hi:.3g} Å)")
    g = np.ones(bins.n_shells) if background_shape is None else np.asarray(background_shape, dtype=np.float64)
    # the floor of relative errors: one photon in the shell, or three standard errors of its read noise
    eps = np.maximum(1.0, 3.0 * pixel_noise * np.sqrt(bins.count)) / bins.count
    coarse = _radius_grid(lo, hi, COARSE_STEP)
    coarse_cols = _columns(coarse, bins)
    out = []
    for y in profiles:
        y = np.where(np.isfinite(y), y, 0.0)
        yp = np.maximum(y, 0.0)
        logy = np.log(yp + eps)
        # a shell's log value is uncertain by Poisson noise (1/photons in it) and by what no model captures
        log_weight = 1.0 / (1.0 / ((yp + eps) * bins.count) + MODEL_ERROR**2)
        log_weight /= log_weight.mean()
        w = log_weight / (yp + eps) ** 2  # linear least squares on relative errors ~ the log residual
        _, res = _best_nonnegative([*coarse_cols, g], y, w, logy, eps, log_weight)
        if not np.isfinite(res).any():
            out.append(SphereFit(math.nan, 0.0, 0.0, -math.inf, math.inf, 0.0))
            continue
        # refine about the coarse optimum on the fine grid (steps of RADIUS_STEP, within two coarse steps)
        best = float(coarse[int(np.argmin(res))])
        span = 2.0 * COARSE_STEP
        radii = _radius_grid(max(lo, best * math.exp(-span)), min(hi, best * math.exp(span)), RADIUS_STEP)
        coef, res = _best_nonnegative([*_columns(radii, bins), g], y, w, logy, eps, log_weight)
        j = int(np.argmin(res))
        radius = float(radii[j])
        if 0 < j < len(radii) - 1 and np.all(np.isfinite(res[j - 1:j + 2])):  # parabola about the minimum, ln R
            r0, r1, r2 = res[j - 1], res[j], res[j + 1]
            den = r0 - 2 * r1 + r2
            if den > 0:
                radius *= math.exp(RADIUS_STEP * 0.5 * (r0 - r2) / den)
        smooth = _smooth_residual(logy, bins.q, log_weight)
        quality = 1.0 - float(res[j]) / smooth if smooth > 0 else 0.0
        a_sharp, a_smeared, b = (float(v) for v in coef[j])
        visibility = a_sharp / (a_sharp + a_smeared)
        out.append(SphereFit(radius, a_sharp + a_smeared, b, quality, math.sqrt(float(res[j]) / len(y)), visibility))
    return out


def _radius_grid(lo: float, hi: float, step: float) -> np.ndarray:
    n = max(3, int(math.ceil(math.log(hi / lo) / step)) + 1)
    return lo * np.exp(step * np.arange(n))


def _columns(radii: np.ndarray, bins: RadialBins) -> list[np.ndarray]:
    """The sharp and the smeared sphere columns W·Φ(qR)², W·Φ̄(qR)², each (len(radii), K)."""
    x = radii[:, None] * bins.q[None, :]
    return [bins.weight[None, :] * sphere_phi2(x), bins.weight[None, :] * _smeared_interp(x)]


def sphere_electrons(radius_angstrom: float | np.ndarray, density: float) -> float | np.ndarray:
    """N_e = ρ·(4/3)πR³: electrons of a uniform sphere of radius R (Å) and electron density ρ (e/Å³)."""
    return density * 4.0 / 3.0 * math.pi * np.asarray(radius_angstrom, dtype=np.float64) ** 3


def fluence_from_amplitude(amplitude: np.ndarray, radius_angstrom: np.ndarray, density: float) -> np.ndarray:
    """J = A / (r_e² N_e²): the fluence (photons/m²) that gave a sphere's fitted forward scattering A (photons/sr)."""
    n_e = sphere_electrons(radius_angstrom, density)
    return np.asarray(amplitude, dtype=np.float64) / (R_E**2 * n_e * n_e)


@dataclass(frozen=True)
class HitSpread:
    """Peak fluence and hit radius that reproduce the fluences single hits saw.

    Attributes:
        peak_fluence: J₀, photons/m² at the focus centre (at mean pulse energy).
        hit_radius: h, m: hits lie uniformly within this distance of the beam axis.
        log_range: c = ln(J₀ / J at h).
        n_hits: shots the estimate rests on.
    """

    peak_fluence: float
    hit_radius: float
    log_range: float
    n_hits: int


def hit_spread(fluences: np.ndarray, focus_fwhm: float, jitter: float = 0.0) -> HitSpread:
    """Fit J₀ and h to the fluences (photons/m²) of single hits by the moments of ln J (module doc).

    Args:
        fluences: (n,) photons/m², n ≥ 1.
        focus_fwhm: w, m, the focus FWHM assumed (a Gaussian profile).
        jitter: relative rms pulse-energy jitter assumed (log-normal, mean 1); its share of the spread is
            not put down to hit positions.
    """
    j = np.asarray(fluences, dtype=np.float64)
    j = j[np.isfinite(j) & (j > 0)]
    if j.size == 0:
        raise InputFileError("no single hit with a positive photon count to fit the fluence to")
    log_j = np.log(j)
    sigma2 = math.log1p(jitter * jitter)
    var = float(np.var(log_j, ddof=1)) if j.size > 1 else 0.0
    c = math.sqrt(12.0 * max(var - sigma2, 0.0))
    # the mean of ln s for a log-normal pulse scale of mean 1 is −σ²/2
    log_j0 = float(np.mean(log_j)) + c / 2.0 + sigma2 / 2.0
    h = focus_fwhm * math.sqrt(c / (4.0 * math.log(2.0))) if c > 0 else 0.0
    return HitSpread(math.exp(log_j0), max(h, 0.01 * focus_fwhm), c, int(j.size))


def read_noise_from_negatives(frames: np.ndarray, valid: np.ndarray) -> float:
    """Read noise (rms, photons) of a pixel, from the values below zero, which only noise can make.

    Photon counts are ≥ 0, so values < 0 come from zero-photon pixels whose Gaussian read noise of width σ
    pushed them down: E[x² | x < 0] = σ² for those. Returns 0 when no value is negative.
    """
    flat = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)[:, np.asarray(valid).reshape(-1)]
    neg = flat[np.isfinite(flat) & (flat < 0)]
    return float(np.sqrt(np.mean(neg * neg))) if neg.size else 0.0


SHAPES = ("sphere", "icosahedron")
"""Particles ``spi match`` can write (both continuum)."""

_EQUIVALENT: dict[str, float] = {}


def sphere_equivalent_factor(shape: str) -> float:
    """Radius of the sphere whose rings best match the orientation-averaged profile of ``shape``, per unit size.

    The sphere fits of a run measure an equivalent sphere; a shape of size R (the icosahedron's circumradius)
    scatters like a sphere of radius factor·R. Found once per process: |F|² of the unit shape averaged over 4000
    directions on a q grid up to qR = 14, fitted by Φ(q r)² in log space (about 0.847 for the icosahedron).
    """
    if shape == "sphere":
        return 1.0
    if shape not in SHAPES:
        raise SpiError(f"unknown particle shape {shape!r} for spi match: use {' or '.join(SHAPES)}")
    if shape not in _EQUIVALENT:
        body = UniformPolyhedron.icosahedron(1.0, 1.0)
        rng = np.random.default_rng(0)
        d = rng.normal(size=(4000, 3))
        d /= np.linalg.norm(d, axis=1)[:, None]
        x = np.linspace(0.05, 14.0, 400)
        prof = np.array([np.mean(np.abs(body.form_factor(d * v)) ** 2) for v in x]) / body.volume**2
        trial = np.linspace(0.6, 1.0, 4001)
        res = [np.sum((np.log(prof + 1e-8) - np.log(sphere_phi2(r * x) + 1e-8)) ** 2) for r in trial]
        _EQUIVALENT[shape] = float(trial[int(np.argmin(res))])
    return _EQUIVALENT[shape]
