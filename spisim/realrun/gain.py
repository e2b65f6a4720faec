"""Detector gain (ADU per photon) from the photon peaks of a run's pixel histogram.

A direct-detection pixel detector in the single-photon regime records k photons as about
offset + k·g ADU plus read noise, so the histogram of all (good) pixel values of a run is a comb of
peaks at offset, offset + g, offset + 2g, ... with the read-noise width σ. SPI frames are mostly empty,
so the zero peak is huge and the 1- and 2-photon peaks are clear.

The estimate (:func:`fit_photon_peaks`) is a least-squares fit to the histogram counts over
[offset − 5σ, offset + 2.5 g] of three Gaussian peaks (k = 0, 1, 2 photons) with means offset + k·g, a
common read-noise width σ and free heights, each integrated over its bins (exact for integer ADU in
1-ADU bins). Residuals are Pearson-weighted, (model − counts)/√model. Start values: the zero peak's mode
and its left half-width (the side no photon reaches), and the first prominent peak of the histogram
left after the zero peak is removed. The uncertainty of g is the spread of refits over frame groups
resampled with replacement (a bootstrap over frames: neighbouring pixels of a frame are not
independent, frames are), and also the fit's covariance scaled by its reduced χ² for reference.

:class:`GainAccumulator` builds the histogram frame by frame (bounded memory): it keeps the first
frames' values until the zero peak's place and width fix the bins, then only counts. Photons that are
shared between pixels (charge sharing), pixel-to-pixel gain spread and non-Gaussian noise make the
photon peaks broader than the zero peak; the common-width model then puts σ between the two and g at
the peaks' centroid (within a few per cent; the real pnCCD frames give 7.8 ADU, the 1-, 2- and
3-photon peaks sit near 8, 15.5 and 23 ADU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

N_PEAKS = 3
"""Photon peaks in the model: k = 0, 1, 2."""

N_GROUPS = 20
"""Frame groups (frame i goes to group i mod N_GROUPS) kept apart for the bootstrap."""

BOOTSTRAP = 40
"""Refits of the bootstrap over frame groups."""

SCALE_VALUES = 2_000_000
"""Pixel values kept to place the histogram bins before counting starts."""

TAIL_RATIO = 2.0 / 3.0
"""Height of the unfitted 3-photon peak (whose tail reaches the fitted range) as TAIL_RATIO·A₂²/A₁: the
Poisson ratios P(3)/P(2) = (2/3)·P(2)/P(1) for a single mean count."""

BINS_PER_SIGMA = 8
"""Histogram bins per read-noise σ (at least 1 ADU wide for integer data)."""

RANGE_SIGMAS = (8.0, 400.0)
"""Histogram range below and above the zero peak, in read-noise σ."""


@dataclass(frozen=True)
class GainFit:
    """Gain, offset and read noise of a run's pixels (ADU unless said).

    Attributes:
        gain: g, ADU per photon.
        gain_sd: its standard error (bootstrap over frame groups, or the fit covariance; see ``sd_method``).
        offset: mean of the zero-photon peak (ADU).
        offset_sd: its standard error.
        read_noise: σ, the common width of the peaks (ADU).
        read_noise_sd: its standard error.
        gain_sd_fit: standard error of g from the fit covariance scaled by the reduced χ².
        sd_method: how ``gain_sd`` was obtained.
        peak_fractions: (3,) fraction of the fitted pixels in the 0-, 1- and 2-photon peaks.
        n_values: pixel values in the histogram.
        n_frames: frames they came from.
        reduced_chi2: of the fit (≫ 1 means the peaks are not quite Gaussian: real detectors).
    """

    gain: float
    gain_sd: float
    offset: float
    offset_sd: float
    read_noise: float
    read_noise_sd: float
    gain_sd_fit: float
    sd_method: str
    peak_fractions: tuple[float, ...]
    n_values: int
    n_frames: int
    reduced_chi2: float

    @property
    def read_noise_photons(self) -> float:
        """σ / g: the read noise in photons."""
        return self.read_noise / self.gain

    @property
    def offset_photons(self) -> float:
        """offset / g: the zero peak's place in photons."""
        return self.offset / self.gain

    def as_dict(self) -> dict:
        """Every fact as a JSON-ready dict (ADU, photons)."""
        return {"adu_per_photon": self.gain, "adu_per_photon_sd": self.gain_sd, "adu_per_photon_sd_fit":
                self.gain_sd_fit, "sd_method": self.sd_method, "offset_adu": self.offset, "offset_adu_sd":
                self.offset_sd, "offset_photons": self.offset_photons, "read_noise_adu": self.read_noise,
                "read_noise_adu_sd": self.read_noise_sd, "read_noise_photons": self.read_noise_photons,
                "peak_fractions": list(self.peak_fractions), "n_values": self.n_values, "n_frames": self.n_frames,
                "reduced_chi2": self.reduced_chi2}

    def summary(self) -> str:
        """One line for people: gain ± sd, offset and read noise in ADU and photons."""
        return (f"gain {self.gain:.4g} ± {self.gain_sd:.2g} ADU/photon ({self.sd_method}); zero peak at "
                f"{self.offset:+.3g} ADU ({self.offset_photons:+.3g} photons); read noise {self.read_noise:.3g} ADU "
                f"({self.read_noise_photons:.3g} photons)")


def zero_peak(values: np.ndarray) -> tuple[float, float]:
    """Place (mode) and width σ of the zero-photon peak from a sample of pixel values (ADU).

    The mode comes from a fine histogram around the median; σ from the left half of the peak (values
    below the mode, which photons do not reach): median(mode − v) = 0.6745 σ for a Gaussian.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 100:
        raise ConfigError(f"cannot estimate the gain: only {v.size} good pixel values")
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    if mad == 0:
        below = v[v < med]
        mad = 1.4826 * float(np.median(med - below)) if below.size else 0.0
    if mad == 0 or not math.isfinite(mad):
        raise ConfigError("cannot estimate the gain: the zero-photon peak has no width (are the frames already "
                          "in photons? then leave out --gain)")
    counts, edges = np.histogram(v, bins=200, range=(med - 4 * mad, med + 4 * mad))
    smooth = np.convolve(counts, np.ones(5) / 5, mode="same")
    k = int(np.argmax(smooth))
    mode = 0.5 * (edges[k] + edges[k + 1])
    below = v[(v < mode) & (v > mode - 10 * mad)]
    sigma = float(np.median(mode - below)) / 0.6745 if below.size > 10 else mad
    if sigma <= 0 or not math.isfinite(sigma):
        raise ConfigError("cannot estimate the gain: the zero-photon peak has no width")
    return float(mode), sigma


def histogram_edges(mode: float, sigma: float, *, integer: bool) -> np.ndarray:
    """Bin edges for the pixel histogram: from mode − 8σ to mode + 400σ, σ/8 wide (about 3300 bins).

    Integer data get bins a whole number of ADU wide with edges at half-integers (no aliasing).
    """
    lo = mode - RANGE_SIGMAS[0] * sigma
    hi = mode + RANGE_SIGMAS[1] * sigma
    width = sigma / BINS_PER_SIGMA
    if integer:
        width = max(1.0, float(round(width)))
        lo = math.floor(lo) - 0.5
        n = int(math.ceil((hi - lo) / width))
        return lo + width * np.arange(n + 1)
    n = int(math.ceil((hi - lo) / width))
    return lo + width * np.arange(n + 1)


def _peak_model(params: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Expected counts per bin: Σ_k A_k [Φ((e₊ − μ_k)/σ) − Φ((e₋ − μ_k)/σ)], μ_k = offset + k·g."""
    from scipy.special import ndtr

    offset, gain, sigma = params[:3]
    amps = list(params[3:])
    if len(amps) == N_PEAKS and amps[1] > 0:
        amps.append(TAIL_RATIO * amps[2] ** 2 / amps[1])  # the next peak's tail, tied to the last two
    out = np.zeros(len(edges) - 1)
    for k, amp in enumerate(amps):
        cdf = ndtr((edges - offset - k * gain) / sigma)
        out += amp * np.diff(cdf)
    return out


def _zero_peak_fit(edges: np.ndarray, counts: np.ndarray, mode: float, sigma: float) -> np.ndarray:
    """(offset, σ, A): a Gaussian fitted to the zero peak's photon-free side, [mode − 4σ, mode + σ]."""
    from scipy.optimize import least_squares

    i0 = max(int(np.searchsorted(edges, mode - 4 * sigma, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(edges, mode + sigma, side="left")), len(counts))
    e, c = edges[i0 : i1 + 1], np.asarray(counts[i0:i1], dtype=np.float64)
    amp = max(float(c.sum()), 1.0) * 1.2
    if c.size < 4:
        return np.array([mode, sigma, amp])

    def residuals(p: np.ndarray) -> np.ndarray:
        m = _peak_model(np.array([p[0], 1.0, p[1], p[2]]), e)
        return (m - c) / np.sqrt(np.maximum(m, 1.0))

    bounds = ([-np.inf, 0.05 * sigma, 0.0], [np.inf, 20.0 * sigma, np.inf])
    fit = least_squares(residuals, [mode, sigma, amp], bounds=bounds)
    return fit.x


def first_photon_peak(edges: np.ndarray, counts: np.ndarray, mode: float, sigma: float
                      ) -> tuple[float, float, float]:
    """Start values (offset, g, σ) in ADU: a Gaussian fitted to the zero peak's photon-free side, and the
    first prominent local maximum above offset + 3σ of the histogram left once that peak is taken away
    (smoothed over σ).

    Raises:
        ConfigError: no peak above the zero peak (noise as wide as a photon, or no photons in the run).
    """
    from scipy.signal import find_peaks

    centres = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1] - edges[0]
    offset, sigma, amp = _zero_peak_fit(edges, counts, mode, sigma)
    zero = _peak_model(np.array([offset, 1.0, sigma, amp]), edges)
    rest = np.asarray(counts, dtype=np.float64) - zero
    n_smooth = max(1, int(round(sigma / width)))
    kernel = np.exp(-0.5 * (np.arange(-3 * n_smooth, 3 * n_smooth + 1) / n_smooth) ** 2)
    smooth = np.convolve(rest, kernel / kernel.sum(), mode="same")
    start = int(np.searchsorted(centres, offset + 3.0 * sigma))
    region = smooth[start:]
    peaks, props = find_peaks(region, prominence=max(float(region.max(initial=0.0)) * 0.02, 1e-9))
    if peaks.size == 0:
        raise ConfigError(f"cannot estimate the gain: no photon peak found above the zero peak (read noise "
                          f"{sigma:.3g} ADU); give --gain ADU_PER_PHOTON")
    prom = props["prominences"]
    first = start + peaks[np.nonzero(prom >= 0.25 * prom.max())[0][0]]
    return float(offset), float(centres[first] - offset), float(sigma)


def fit_photon_peaks(edges: np.ndarray, counts: np.ndarray, start: tuple[float, float, float]
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares fit of the 0-, 1-, 2-photon peaks (see the module doc) to a pixel histogram.

    Args:
        edges: (B + 1,) bin edges (ADU).
        counts: (B,) pixel counts.
        start: (offset, g, σ) start values (ADU).

    Returns:
        ``(params, cov, reduced_chi2)``: params (offset, g, σ, A₀, A₁, A₂), their covariance scaled by
        the reduced χ², and the reduced χ².
    """
    from scipy.optimize import least_squares

    counts = np.asarray(counts, dtype=np.float64)
    offset, gain, sigma = (float(s) for s in start)
    params = None
    for _ in range(3):  # the fitted range depends on g: refit until it settles
        lo, hi = offset - 5.0 * sigma, offset + (N_PEAKS - 0.5) * gain
        i0 = max(int(np.searchsorted(edges, lo, side="right")) - 1, 0)
        i1 = min(int(np.searchsorted(edges, hi, side="left")), len(counts))
        e, c = edges[i0 : i1 + 1], counts[i0:i1]
        if c.size < 3 * N_PEAKS + 3:
            raise ConfigError(f"cannot estimate the gain: the photon peaks span only {c.size} histogram bins")
        if params is None:
            centres = 0.5 * (e[1:] + e[:-1])
            amps = [max(float(c[np.argmin(np.abs(centres - offset - k * gain))]) * math.sqrt(2 * math.pi) * sigma
                        / (e[1] - e[0]), 1.0) for k in range(N_PEAKS)]
            params = np.array([offset, gain, sigma, *amps])

        def residuals(p: np.ndarray, e: np.ndarray = e, c: np.ndarray = c) -> np.ndarray:
            m = _peak_model(p, e)
            return (m - c) / np.sqrt(np.maximum(m, 1.0))

        lower = [-np.inf, 0.2 * gain, 0.05 * sigma, *([0.0] * N_PEAKS)]
        upper = [np.inf, 5.0 * gain, 20.0 * sigma, *([np.inf] * N_PEAKS)]
        params = np.clip(params, np.array(lower) + 1e-12, np.array(upper) - 1e-12)
        fit = least_squares(residuals, params, bounds=(lower, upper), x_scale="jac")
        settled = abs(fit.x[1] - gain) <= 0.02 * gain
        params = fit.x
        offset, gain, sigma = (float(v) for v in fit.x[:3])
        if settled:
            break
    dof = max(c.size - params.size, 1)
    chi2 = 2.0 * float(fit.cost) / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * max(chi2, 1.0)
    except np.linalg.LinAlgError:
        cov = np.full((params.size, params.size), np.nan)
    return params, cov, chi2


@dataclass
class GainAccumulator:
    """Pixel histogram of a run, built frame by frame, and the gain fit on it.

    Args:
        mask: (…, SS, FS) bool, True = bad pixel (left out); the frames' shape.
        integer: the frames hold whole ADU (bins then sit on half-integers).
        seed: seed of the bootstrap.
    """

    mask: np.ndarray
    integer: bool = False
    seed: int = 0
    n_frames: int = 0
    _pending: list = field(default_factory=list)
    _pending_frames: list = field(default_factory=list)
    _pending_size: int = 0
    edges: np.ndarray | None = None
    counts: np.ndarray | None = None
    scale: tuple[float, float] | None = None

    def add(self, frame: np.ndarray) -> None:
        """Count the good, finite pixels of one frame (ADU), shape of ``mask``."""
        good = ~np.asarray(self.mask, dtype=bool)
        values = np.asarray(frame)[good]
        values = values[np.isfinite(values)]
        group = self.n_frames % N_GROUPS
        self.n_frames += 1
        if self.edges is None:
            self._pending.append(values.astype(np.float32))
            self._pending_frames.append(group)
            self._pending_size += values.size
            if self._pending_size >= SCALE_VALUES:
                self._start()
            return
        self._count(values, group)

    def _start(self) -> None:
        sample = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        self.scale = zero_peak(sample)
        self.edges = histogram_edges(*self.scale, integer=self.integer)
        self.counts = np.zeros((N_GROUPS, len(self.edges) - 1), dtype=np.int64)
        for values, group in zip(self._pending, self._pending_frames, strict=True):
            self._count(values, group)
        self._pending, self._pending_frames, self._pending_size = [], [], 0

    def _count(self, values: np.ndarray, group: int) -> None:
        assert self.edges is not None and self.counts is not None
        lo, width = float(self.edges[0]), float(self.edges[1] - self.edges[0])
        idx = np.floor((np.asarray(values, dtype=np.float64) - lo) / width).astype(np.int64)
        idx = idx[(idx >= 0) & (idx < self.counts.shape[1])]
        self.counts[group] += np.bincount(idx, minlength=self.counts.shape[1])

    def fit(self) -> GainFit:
        """The gain fit on everything added so far (see the module doc).

        Raises:
            ConfigError: too few values, no zero-peak width, or no photon peak.
        """
        if self.edges is None:
            self._start()
        assert self.edges is not None and self.counts is not None and self.scale is not None
        total = self.counts.sum(axis=0)
        mode, sigma = self.scale
        params, cov, chi2 = fit_photon_peaks(self.edges, total, first_photon_peak(self.edges, total, mode, sigma))
        sd_fit = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        used = np.nonzero(self.counts.sum(axis=1))[0]
        sd = sd_fit[:3].copy()
        method = "fit covariance"
        if used.size >= 5:
            rng = np.random.default_rng(self.seed)
            refits = []
            for _ in range(BOOTSTRAP):
                pick = rng.choice(used, size=used.size, replace=True)
                try:
                    p, _, _ = fit_photon_peaks(self.edges, self.counts[pick].sum(axis=0), tuple(params[:3]))
                except ConfigError:
                    continue
                refits.append(p[:3])
            if len(refits) >= BOOTSTRAP // 2:
                sd = np.std(np.array(refits), axis=0, ddof=1)
                method = f"bootstrap over {used.size} frame groups"
        amps = np.asarray(params[3:], dtype=np.float64)
        fractions = tuple(float(a) for a in amps / amps.sum()) if amps.sum() > 0 else (math.nan,) * N_PEAKS
        return GainFit(gain=float(params[1]), gain_sd=float(sd[1]), offset=float(params[0]), offset_sd=float(sd[0]),
                       read_noise=float(params[2]), read_noise_sd=float(sd[2]), gain_sd_fit=float(sd_fit[1]),
                       sd_method=method, peak_fractions=fractions, n_values=int(self.counts.sum()),
                       n_frames=self.n_frames, reduced_chi2=float(chi2))


def estimate_gain(frames: np.ndarray, mask: np.ndarray | None = None, *, seed: int = 0) -> GainFit:
    """The gain of a stack of frames (N, …, SS, FS) in ADU (see the module doc).

    Args:
        frames: ADU, any real dtype; non-finite values are left out.
        mask: (…, SS, FS) bool, True = bad (left out); default none.
        seed: bootstrap seed.
    """
    frames = np.asarray(frames)
    shape = frames.shape[1:]
    acc = GainAccumulator(np.zeros(shape, bool) if mask is None else np.asarray(mask, bool),
                          integer=np.issubdtype(frames.dtype, np.integer), seed=seed)
    for frame in frames:
        acc.add(frame)
    return acc.fit()
