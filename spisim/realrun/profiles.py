"""Radial profiles of shots: mean photons per pixel in shells of |q|, and what they say about a shot.

A shot's azimuthal average is what the fits of :mod:`spisim.realrun.fit` and the realism report of
:mod:`spisim.realrun.realism` read. :class:`RadialBins` is made once for a detector (pixel |q|, the
pixel's polarisation × solid angle, the mask) and then bins any number of frames fast (one ``bincount``
per frame). Shells are one pixel step of |q| wide, so a shell resolves the rings of the largest particle
the detector can sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputFileError

MIN_PIXELS_PER_SHELL = 8
"""Shells with fewer valid pixels are left out of profiles (too noisy)."""

MIN_SHELL_COVERAGE = 0.3
"""Shells covered by fewer valid pixels than this share of a typical shell's (pixels per unit |q|, relative to
the median over shells) are left out: beyond the detector's inscribed circle a shell covers only its corners,
and its mean says little about the pattern."""


@dataclass(frozen=True)
class RadialBins:
    """Shells of |q| over the valid pixels of a detector.

    Attributes:
        q: (K,) Å⁻¹, centre of each shell (shells with too few pixels are left out).
        width: Å⁻¹, the width of every shell.
        index: (P,) shell of each valid pixel (−1: outside every shell).
        valid: (M, SS, FS) bool, the pixels that count (not masked, with a position).
        count: (K,) valid pixels per shell.
        weight: (K,) mean polarisation × solid angle (sr) of the pixels of each shell.
        q_pixel: (M, SS, FS) |q| per pixel, Å⁻¹ (0 where not valid).
    """

    q: np.ndarray
    width: float
    index: np.ndarray
    valid: np.ndarray
    count: np.ndarray
    weight: np.ndarray
    q_pixel: np.ndarray

    @classmethod
    def from_detector(cls, q_abs: np.ndarray, weight: np.ndarray, valid: np.ndarray,
                      width: float | None = None) -> RadialBins:
        """Shells for pixels with |q| ``q_abs`` (M, SS, FS) Å⁻¹, P·ΔΩ ``weight`` (M, SS, FS) and ``valid`` mask.

        ``width`` (Å⁻¹): shell width; default the median |q| step between neighbouring pixels.
        """
        q_abs = np.asarray(q_abs, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool) & np.isfinite(q_abs)
        if not valid.any():
            raise InputFileError("no valid pixel to make a radial profile of")
        if width is None:
            steps = [np.abs(np.diff(q_abs, axis=a))[(valid[..., 1:, :] & valid[..., :-1, :]) if a == 1
                                                     else (valid[..., 1:] & valid[..., :-1])]
                     for a in (1, 2) if q_abs.shape[a] > 1]
            steps = np.concatenate([s for s in steps if s.size]) if steps else np.zeros(0)
            width = float(np.median(steps[steps > 0])) if np.any(steps > 0) else float(q_abs[valid].max()) / 50
        q_valid = q_abs[valid]
        lo, hi = float(q_valid.min()), float(q_valid.max())
        edges = np.arange(lo, hi + width, width)
        if len(edges) < 2:
            edges = np.array([lo, hi + width])
        which = np.clip(np.digitize(q_valid, edges) - 1, 0, len(edges) - 2)
        k = len(edges) - 1
        count = np.bincount(which, minlength=k)
        w = np.bincount(which, weights=np.asarray(weight, dtype=np.float64)[valid], minlength=k)
        centres = 0.5 * (edges[:-1] + edges[1:])
        density = count / np.maximum(centres, 1e-12)  # a full ring holds pixels in proportion to |q|
        typical = float(np.median(density[count > 0]))
        keep = (count >= MIN_PIXELS_PER_SHELL) & (density >= MIN_SHELL_COVERAGE * typical)
        index = np.where(keep[which], which, -1)
        # renumber the kept shells 0..K'-1
        new = np.cumsum(keep) - 1
        index = np.where(index >= 0, new[np.maximum(index, 0)], -1)
        if not keep.any():
            raise InputFileError(f"no shell of |q| holds {MIN_PIXELS_PER_SHELL} valid pixels")
        return cls(q=centres[keep], width=float(width), index=index, valid=valid, count=count[keep],
                   weight=w[keep] / np.maximum(count[keep], 1), q_pixel=np.where(valid, q_abs, 0.0))

    @property
    def n_shells(self) -> int:
        return int(len(self.q))

    def profiles(self, frames: np.ndarray) -> np.ndarray:
        """Mean photons per valid pixel in each shell: frames (N, M, SS, FS) → (N, K)."""
        frames = np.asarray(frames)
        flat = frames.reshape(len(frames), -1)[:, self.valid.reshape(-1)]
        inside = self.index >= 0
        out = np.empty((len(frames), self.n_shells))
        for i, row in enumerate(flat):
            values = np.where(np.isfinite(row), row, 0.0)
            out[i] = np.bincount(self.index[inside], weights=values[inside], minlength=self.n_shells)
        return out / self.count

    def expand(self, profile: np.ndarray) -> np.ndarray:
        """A per-shell value (K,) painted onto the pixels (M, SS, FS) (0 outside every shell)."""
        out = np.zeros(self.valid.shape)
        vals = np.where(self.index >= 0, np.asarray(profile)[np.maximum(self.index, 0)], 0.0)
        out[self.valid] = vals
        return out


def photon_totals(frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) photons per frame over the valid pixels (non-finite values count as 0)."""
    frames = np.asarray(frames)
    flat = frames.reshape(len(frames), -1)[:, np.asarray(valid).reshape(-1)]
    return np.where(np.isfinite(flat), flat, 0.0).sum(axis=1)


def first_minimum_contrast(profile: np.ndarray, q: np.ndarray, radius_angstrom: float) -> float:
    """Depth of a sphere-like shot's first ring minimum: profile at the first minimum over the next maximum.

    The positions come from the fitted radius R (qR = 4.493 for the minimum, 5.763 for the maximum after it);
    the value at each is the mean of the shells within ±0.3/R. 0 means a perfect zero, 1 no ring at all. NaN
    when the detector does not cover both positions.
    """
    def near(x: float) -> float:
        sel = np.abs(q * radius_angstrom - x) <= 0.3
        return float(np.mean(profile[sel])) if sel.any() else np.nan

    low, high = near(4.4934), near(5.7635)
    return low / high if high > 0 else np.nan


def high_q_level(profile: np.ndarray, q: np.ndarray, fraction: float = 0.25) -> float:
    """Mean photons per pixel over the outer ``fraction`` of the shells (the high-q tail of a shot)."""
    n = max(1, int(round(len(q) * fraction)))
    return float(np.mean(profile[-n:]))
