"""Corrections of a match by simulation: the particles' stretch spread so that simulated single hits have the run's
ring depth (:func:`calibrate_aspect`), then radius and peak fluence so that their rings and photon counts sit at
the run's (:func:`calibrate_scale`); :func:`simulate_single` and :func:`simulate_profiles` (reduced as they are
made, memory bounded) make the single hits of a matched manifest."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import parse_manifest
from ..simulator import Simulator
from .analysis import MatchResult
from .fit import SphereFit, fit_spheres
from .matchfile import manifest_text, write_companion
from .profiles import first_minimum_contrast, photon_totals


def calibrate_scale(result: MatchResult) -> tuple[float, float]:
    """Put the simulated rings and photon counts where the run's are, and return the two corrections.

    A spread of stretches moves the median apparent ring radius of simulated shots (a stretched sphere's rings
    are ellipses; the sphere fitted to their average lies between the two axes), and a spread of sizes moves
    their photon counts (∝ R⁶ near the centre). One simulation of ``calibration_shots`` single hits with the
    fitted settings measures both against the run's single-like hits; the radius is divided by the ring ratio
    and the peak fluence by the photon ratio (each applied when it exceeds 0.2 %).

    Returns:
        (simulated / real median fitted radius, simulated / real median photons), before the correction.
    """
    a = result.analysis
    sim = simulate_profiles(result, result.options.calibration_shots)
    radius_range = (0.7 * result.radius * 1e10, 1.4 * result.radius * 1e10)
    fits = fit_spheres(sim.profiles, a.bins, radius_range=radius_range, pixel_noise=a.read_noise)
    ring = float(np.median([f.radius for f in fits])) / float(np.median(a.radii[result.single]))
    photons = float(np.median(sim.totals)) / float(np.median(a.totals[result.single]))
    if abs(ring - 1.0) > 0.002:
        result.radius /= ring
    if abs(photons - 1.0) > 0.002:
        result.peak_fluence /= photons
    result.corrections = (1.0 / ring, 1.0 / photons)
    result.notes.append(f"radius and fluence corrected by {1 / ring:.4f} and {1 / photons:.4f} so that simulated "
                        f"rings and photon counts sit at the run's ({result.options.calibration_shots} simulated "
                        "single hits)")
    return ring, photons


ASPECT_TRIALS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
"""rms stretches tried by :func:`calibrate_aspect` (the manifest's ``aspect_sd`` allows up to 1)."""


@dataclass
class SimulatedShots:
    """Single hits of a matched manifest, reduced as they are made (memory does not grow with their number).

    Attributes:
        profiles: (n, K) mean photons per pixel in the run's shells.
        totals: (n,) photons per shot on the run's valid pixels.
        examples: (m, M, SS, FS) the first ``keep`` frames, kept whole (for pictures).
    """

    profiles: np.ndarray
    totals: np.ndarray
    examples: np.ndarray


def _each_single(result: MatchResult, shots: int, aspect_sd: float | None, seed: int | None):  # noqa: ANN202
    """Yield the frames (M, SS, FS) of ``shots`` single hits of the matched manifest, one at a time."""
    saved = result.aspect_sd
    if aspect_sd is not None:
        result.aspect_sd = aspect_sd
    try:
        with tempfile.TemporaryDirectory() as tmp:
            companion = Path(tmp) / "trial.detector.h5"
            write_companion(result, companion)
            text = manifest_text(result, companion.name)
            m = parse_manifest(text, source="<matched>", base_dir=Path(tmp),
                               overrides={"shots": shots, "hits": {"single": 1.0}, "seed": seed})
            sim = Simulator(m).prepare()
            for i in range(shots):
                yield sim.shot(i)[0]
    finally:
        result.aspect_sd = saved


def simulate_single(result: MatchResult, shots: int, *, aspect_sd: float | None = None, seed: int | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``shots`` single hits (n, M, SS, FS) photons of the matched manifest (optionally another ``aspect_sd`` or
    seed; calibrations use the manifest's seed, the report another one, so that it checks them independently).
    Holds every frame: :func:`simulate_profiles` reduces them as they come."""
    frames = []
    for frame in _each_single(result, shots, aspect_sd, seed):
        frames.append(frame)
        if progress is not None:
            progress(1)
    return np.array(frames, dtype=np.float32)


def simulate_profiles(result: MatchResult, shots: int, *, aspect_sd: float | None = None, seed: int | None = None,
                      keep: int = 0, progress: Callable[[int], None] | None = None) -> SimulatedShots:
    """Like :func:`simulate_single`, but each frame is reduced to its radial profile (the run's shells) and its
    photons at once; ``keep`` frames, spread over the run, are kept whole."""
    a = result.analysis
    pick = set(np.linspace(0, shots - 1, min(keep, shots)).round().astype(int).tolist()) if keep else set()
    profiles = np.empty((shots, a.bins.n_shells))
    totals = np.empty(shots)
    examples = []
    for i, frame in enumerate(_each_single(result, shots, aspect_sd, seed)):
        profiles[i] = a.bins.profiles(frame[None])[0]
        totals[i] = photon_totals(frame[None], a.valid)[0]
        if i in pick:
            examples.append(frame)
        if progress is not None:
            progress(1)
    empty = np.zeros((0, *a.valid.shape), np.float32)
    return SimulatedShots(profiles, totals, np.array(examples, dtype=np.float32) if examples else empty)


def median_contrast(profiles: np.ndarray, fits: list[SphereFit], q: np.ndarray) -> float:
    """Median over shots of the first-minimum contrast (minimum over next maximum) at each shot's fitted radius."""
    values = [first_minimum_contrast(p, q, f.radius) for p, f in zip(profiles, fits, strict=True)
              if math.isfinite(f.radius)]
    values = [v for v in values if math.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def calibrate_aspect(result: MatchResult) -> tuple[float, float, float]:
    """The ``aspect_sd`` whose simulated single hits have the run's ring depth.

    Real particles are not perfect spheres: their rings, averaged round the beam, are shallower. A spread of
    stretches along a random axis does the same to simulated spheres (an exact spheroid per shot). Each value of
    :data:`ASPECT_TRIALS` is simulated (``calibration_shots`` single hits with the matched noise and background),
    fitted like the run, and the median first-minimum contrast (minimum over next maximum) interpolated to the
    run's.

    Returns:
        (aspect_sd, the run's median contrast, the simulated one at that setting).
    """
    a = result.analysis
    target = median_contrast(a.profiles[result.single], [a.fits[i] for i in result.single], a.bins.q)
    if not math.isfinite(target):
        result.notes.append("the first ring minimum is not on the detector: aspect_sd left at 0")
        return 0.0, target, math.nan
    radius_range = (0.7 * result.radius * 1e10, 1.4 * result.radius * 1e10)
    seen = []
    for sd in ASPECT_TRIALS:
        profiles = simulate_profiles(result, result.options.calibration_shots, aspect_sd=sd).profiles
        fits = fit_spheres(profiles, a.bins, radius_range=radius_range, pixel_noise=a.read_noise)
        seen.append(median_contrast(profiles, fits, a.bins.q))
        if seen[-1] >= target:
            break
    trials = np.array(ASPECT_TRIALS[: len(seen)])
    depth = np.array(seen)
    if target <= depth[0]:
        return 0.0, target, float(depth[0])
    if target > depth[-1]:
        result.notes.append(f"the run's first ring minimum ({target:.2f} of the next maximum) is shallower than the "
                            f"largest stretch tried gives ({depth[-1]:.2f}); aspect_sd set to {trials[-1]}")
        return float(trials[-1]), target, float(depth[-1])
    # the contrast rises with the stretch: interpolate between the two trials that bracket the target
    k = int(np.flatnonzero(depth >= target)[0])
    t = (target - depth[k - 1]) / (depth[k] - depth[k - 1]) if depth[k] != depth[k - 1] else 1.0
    return float(trials[k - 1] + t * (trials[k] - trials[k - 1])), target, target
