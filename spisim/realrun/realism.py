"""How alike real and simulated shots are: the numbers and pictures of ``spi match --report``.

Both sets are reduced the same way (:class:`ShotSet`: radial profiles on the run's shells, photons per
shot, sphere fits) and compared where a classifier looks:

* ring positions: the median fitted sphere radius (a ring's |q| scales as 1/R);
* photons per shot: medians and histograms;
* ring depth: the first minimum over the next maximum of each shot's profile
  (:func:`spisim.realrun.profiles.first_minimum_contrast`), and the fits' ring visibility;
* the high-q tail: mean photons per pixel over the outer quarter of the shells;
* a two-sample score (:func:`two_sample_auc`): a logistic regression trained to tell real shots from simulated
  ones by their normalised log profile and log photon count, cross-validated on balanced subsets; its ROC AUC
  is 0.5 when the sets cannot be told apart, 1 when every shot can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import save_figure
from .fit import SphereFit, fit_spheres
from .profiles import RadialBins, first_minimum_contrast, high_q_level, photon_totals


@dataclass
class ShotSet:
    """A set of shots reduced for comparison.

    Attributes:
        name: "real" or "simulated".
        profiles: (n, K) mean photons per pixel per shell.
        totals: (n,) photons per shot on valid pixels.
        fits: sphere fit per shot.
        examples: (m, M, SS, FS) a few frames for pictures.
    """

    name: str
    profiles: np.ndarray
    totals: np.ndarray
    fits: list[SphereFit]
    examples: np.ndarray

    @classmethod
    def from_frames(cls, name: str, frames: np.ndarray, bins: RadialBins, pixel_noise: float = 0.0,
                    n_examples: int = 6, radius_range: tuple[float, float] | None = None) -> ShotSet:
        """Reduce frames (n, M, SS, FS) in photons; ``radius_range`` (Å) bounds the sphere fits."""
        profiles = bins.profiles(frames)
        fits = fit_spheres(profiles, bins, pixel_noise=pixel_noise, radius_range=radius_range)
        pick = np.unique(np.linspace(0, len(frames) - 1, min(n_examples, len(frames))).round().astype(int))
        return cls(name, profiles, photon_totals(frames, bins.valid), fits, np.asarray(frames)[pick])

    @classmethod
    def from_profiles(cls, name: str, profiles: np.ndarray, totals: np.ndarray, examples: np.ndarray,
                      bins: RadialBins, pixel_noise: float = 0.0,
                      radius_range: tuple[float, float] | None = None) -> ShotSet:
        """A set already reduced to profiles (n, K) and photons (n,), with a few frames for pictures."""
        fits = fit_spheres(profiles, bins, pixel_noise=pixel_noise, radius_range=radius_range)
        return cls(name, np.asarray(profiles), np.asarray(totals), fits, np.asarray(examples))

    @property
    def radii(self) -> np.ndarray:
        """(n,) fitted sphere radii, Å."""
        return np.array([f.radius for f in self.fits])

    def contrast(self, q: np.ndarray) -> np.ndarray:
        """(n,) first-minimum contrast of each shot at its own fitted radius."""
        return np.array([first_minimum_contrast(p, q, f.radius) if math.isfinite(f.radius) else np.nan
                         for p, f in zip(self.profiles, self.fits, strict=True)])

    def tail(self, q: np.ndarray) -> np.ndarray:
        """(n,) mean photons per pixel over the outer quarter of the shells."""
        return np.array([high_q_level(p, q) for p in self.profiles])


def _features(s: ShotSet, bins: RadialBins, n_features: int = 48) -> np.ndarray:
    """(n, n_features + 1): the log profile relative to the shot's photons, resampled, and the log photons."""
    eps = 1.0 / bins.count
    logp = np.log(np.maximum(s.profiles, 0.0) + eps) - np.log(np.maximum(s.totals, 1.0))[:, None]
    edges = np.linspace(0, bins.n_shells, n_features + 1).round().astype(int)
    pooled = np.stack([logp[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a],
                      axis=1)
    return np.concatenate([pooled, np.log(np.maximum(s.totals, 1.0))[:, None]], axis=1)


def two_sample_auc(real: np.ndarray, sim: np.ndarray, repeats: int = 20, seed: int = 0) -> tuple[float, float, int]:
    """ROC AUC of a classifier that tells real from simulated feature rows, with its spread.

    Each repeat draws as many simulated rows as there are real ones (a balanced set), scores every row by
    stratified k-fold cross-validation (k = min(5, rows per class)) of a standardised logistic regression, and
    computes the AUC of those held-out scores.

    Returns:
        (mean AUC, sd over repeats, rows per class); NaNs when either set has fewer than 3 rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(sim))
    if n < 3:
        return math.nan, math.nan, n
    rng = np.random.default_rng([seed, 0xA0C])
    aucs = []
    for r in range(repeats):
        a = real[rng.choice(len(real), n, replace=False)]
        b = sim[rng.choice(len(sim), n, replace=False)]
        x = np.concatenate([a, b])
        y = np.concatenate([np.ones(n), np.zeros(n)])
        folds = StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=int(rng.integers(2**31)))
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        score = cross_val_predict(model, x, y, cv=folds, method="decision_function")
        aucs.append(roc_auc_score(y, score))
        if r == 0 and n == len(sim) == len(real):  # nothing to redraw
            break
    return float(np.mean(aucs)), float(np.std(aucs)), n


def _median(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def _band(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return (float(np.percentile(x, 16)), float(np.percentile(x, 84))) if x.size else (math.nan, math.nan)


def compare(real: ShotSet, sim: ShotSet, bins: RadialBins, seed: int = 0) -> dict:
    """The realism numbers of two shot sets (see the module doc), as a flat dict of floats."""
    q = bins.q
    out: dict = {"n_real": len(real.totals), "n_sim": len(sim.totals)}
    for key, fn in (("photons", lambda s: s.totals), ("radius_nm", lambda s: s.radii / 10.0),
                    ("first_min_contrast", lambda s: s.contrast(q)), ("high_q_photons_per_pixel", lambda s: s.tail(q)),
                    ("ring_visibility", lambda s: np.array([f.visibility for f in s.fits]))):
        for s in (real, sim):
            values = fn(s)
            out[f"{key}_{s.name}"] = _median(values)
            lo, hi = _band(values)
            out[f"{key}_{s.name}_16"], out[f"{key}_{s.name}_84"] = lo, hi
    out["photons_ratio"] = out["photons_simulated"] / out["photons_real"]
    out["radius_ratio"] = out["radius_nm_simulated"] / out["radius_nm_real"]
    auc, sd, n = two_sample_auc(_features(real, bins), _features(sim, bins), seed=seed)
    out["auc"], out["auc_sd"], out["auc_rows_per_class"] = auc, sd, n
    return out


# ----------------------------------------------------------------------------------------------------- pictures


def _images(frames: np.ndarray, detector: object) -> np.ndarray:
    if frames.shape[1] == 1:
        return frames[:, 0]
    images, _ = detector.assemble(frames)  # type: ignore[attr-defined]
    return images


def write_figures(folder: Path, real: ShotSet, sim: ShotSet, bins: RadialBins, detector: object) -> dict[str, Path]:
    """Montage, radial profiles, photon histograms and ring/tail distributions as PNG files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    paths: dict[str, Path] = {}
    valid = bins.valid
    masked_real = np.where(valid[None], real.examples, np.nan)
    masked_sim = np.where(valid[None], sim.examples, np.nan)
    imgs_r, imgs_s = _images(masked_real, detector), _images(masked_sim, detector)
    vmax = float(np.nanpercentile(np.concatenate([imgs_r.ravel(), imgs_s.ravel()]), 99.7))
    norm = LogNorm(vmin=0.1, vmax=max(vmax, 1.0))
    cols = max(len(imgs_r), len(imgs_s))
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.8), squeeze=False)
    for row, (imgs, name) in enumerate(((imgs_r, "real"), (imgs_s, "simulated"))):
        for c in range(cols):
            ax = axes[row, c]
            ax.axis("off")
            if c < len(imgs):
                im = ax.imshow(np.clip(imgs[c], 0.1, None), norm=norm, cmap="magma", interpolation="nearest")
                ax.set_title(f"{name} {c + 1}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="photons per pixel (one colour scale)")
    paths["montage"] = folder / "montage.png"
    save_figure(fig, paths["montage"], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for s, colour in ((real, "#1f77b4"), (sim, "#d62728")):
        p = np.maximum(s.profiles, 1e-4)
        ax.fill_between(bins.q, np.percentile(p, 16, axis=0), np.percentile(p, 84, axis=0), color=colour, alpha=0.25)
        ax.plot(bins.q, np.mean(p, axis=0), color=colour, label=f"{s.name} (n = {len(p)}), mean and 16-84 %")
    ax.set_yscale("log")
    ax.set_xlabel("|q| (1/Å)")
    ax.set_ylabel("photons per pixel")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["profiles"] = folder / "profiles.png"
    save_figure(fig, paths["profiles"], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    both = np.concatenate([real.totals, sim.totals])
    both = both[both > 0]
    edges = np.logspace(np.log10(both.min()), np.log10(both.max()), 25) if both.size else 10
    for s, colour in ((real, "#1f77b4"), (sim, "#d62728")):
        axes[0].hist(s.totals, bins=edges, color=colour, alpha=0.5, density=True, label=s.name)
        axes[1].hist(s.contrast(bins.q)[np.isfinite(s.contrast(bins.q))], bins=20, range=(0, 1), color=colour,
                     alpha=0.5, density=True, label=s.name)
        axes[2].hist(s.tail(bins.q), bins=20, color=colour, alpha=0.5, density=True, label=s.name)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("photons per shot")
    axes[1].set_xlabel("first ring minimum / next maximum")
    axes[2].set_xlabel("photons per pixel, outer quarter of |q|")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["distributions"] = folder / "distributions.png"
    save_figure(fig, paths["distributions"], dpi=110)
    plt.close(fig)
    return paths
