"""A manifest whose simulation looks like a real run (``spi match``).

From the run's frames alone (its labels where it has them), :func:`match_run` fits

* the particle: a uniform sphere per single-like hit (:func:`spisim.realrun.fit.fit_spheres`); the mean radius
  and its relative spread become ``shape: sphere``, ``radius``, ``size_sd``; how deep the rings are (the fits'
  visibility) is reported beside;
* the beam: the fluence each single hit saw, from its photons and size, read as a Gaussian focus sampled over a
  disk (:func:`spisim.realrun.fit.hit_spread`) → ``beam.fluence`` (peak), ``beam.hit_radius``;
* the background: the mean of the run's no-hit frames (labelled, or the weakest frames when they hold under a
  tenth of a single hit's photons); in a run of hits only, read off the single hits where their spheres scatter
  least: the level at their ring minima extrapolated to no particle, and the high-q tail (a radial template);
* the detector: the run's own geometry and mask, the read noise it was imported with, and pixel-area
  integration (``detector.oversample``) where a pixel is not small against a ring period;
* non-single hits: aggregates of the fitted particle, droplets sized from the run's non-single hits.

Single-like hits are the frames labelled single (``single`` of the four hit types or of single vs
not_single) or, without labels, those a sphere explains well (fit quality ≥ ``min_quality``) whose radius lies
within 15 % of the median of such fits and whose residual is within twice that of the best-fitting quarter of
them (aggregates of the same particles fit a sphere of the same size, but worse).

Corrections by simulation: the particles' stretch spread is calibrated so that simulated single hits have the
run's ring depth (:func:`calibrate_aspect`), then radius and peak fluence so that their rings and photon counts
sit at the run's (:func:`calibrate_scale`); on a one-module detector the beam centre is fitted to the frames
and the detector moved where it is off. :func:`write_match` writes the manifest and a companion HDF5 file with
the detector (geometry, mask) and the background template, both atomically; :func:`write_report` the realism
report (fresh shots of another seed, never those of the calibrations).

The parts: :mod:`.analysis` (what the frames say, and the types), :mod:`.calibrate` (the corrections by
simulation), :mod:`.matchfile` (manifest and companion file), :mod:`.matchreport` (the realism report); their
public names stay importable from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..cxi import CXIReader
from ..detector import Detector
from ..errors import SpiError
from .analysis import CENTRE_GROUPS, DEFAULT_OPTIONS, MatchOptions, MatchResult, RunAnalysis, analyse_run
from .calibrate import (
    ASPECT_TRIALS,
    SimulatedShots,
    calibrate_aspect,
    calibrate_scale,
    median_contrast,
    simulate_profiles,
    simulate_single,
)
from .fit import (
    SHAPES,
    SPHERE_MINIMA,
    fit_spheres,
    fluence_from_amplitude,
    hit_spread,
    smeared_phi2,
    sphere_equivalent_factor,
    sphere_phi2,
)
from .matchfile import BACKGROUND_NAME, companion_path, manifest_text, write_companion, write_match
from .matchreport import report_markdown, write_report
from .profiles import RadialBins

__all__ = [
    "ASPECT_TRIALS", "BACKGROUND_NAME", "CENTRE_GROUPS", "CENTRE_TOLERANCE", "MIN_WEAK_FRAMES", "RADIUS_CLUSTER",
    "RESIDUAL_FACTOR", "SHAPES", "WEAK_FRACTION", "MatchOptions", "MatchResult", "RunAnalysis", "analyse_run",
    "calibrate_aspect", "calibrate_scale", "choose_oversample", "companion_path", "manifest_text", "match_run",
    "median_contrast", "report_markdown", "select_single", "simulate_single", "simulate_profiles", "SimulatedShots",
    "sphere_equivalent_factor",
    "write_companion", "write_match", "write_report",
]

RADIUS_CLUSTER = 0.15
"""Single-like hits found by fit lie within this relative distance of the median fitted radius."""

CENTRE_TOLERANCE = 0.5
"""Pixels: a fitted beam centre farther than this (and than 3 standard errors) from the geometry's moves it."""

RESIDUAL_FACTOR = 2.0
"""Single-like hits found by fit have an rms log residual within this factor of the best-fitting quarter's."""

WEAK_FRACTION = 0.1
"""No-hit frames hold fewer photons than this share of the median single hit (and at most 3x the weakest frames)."""

MIN_WEAK_FRAMES = 3
"""No-hit frames needed for a per-pixel background template (else the radial tail method)."""


def select_single(analysis: RunAnalysis, min_quality: float) -> tuple[np.ndarray, str]:
    """Positions of the single-like hits and how they were found (``labels`` or ``fit``)."""
    labelled = np.array([n == "single" for n in analysis.labels])
    ok = np.isfinite(analysis.radii)
    if labelled.any():
        return np.flatnonzero(labelled & ok), "labels"
    good = ok & (analysis.quality >= min_quality)
    if not good.any():
        raise SpiError(f"{analysis.path}: no frame looks like a single sphere-like hit (best fit quality "
                       f"{np.nanmax(analysis.quality):.2f} < {min_quality}); label some single hits "
                       "(spi label) or lower --min-quality")
    median = float(np.median(analysis.radii[good]))
    close = good & (np.abs(analysis.radii / median - 1.0) <= RADIUS_CLUSTER)
    # aggregates of the same particles fit a sphere of the same size, but worse: keep the shots whose residual
    # is within a factor of the best-fitting quarter's (single hits fit alike; their spread sets the scale)
    residual = np.array([f.residual for f in analysis.fits])
    reference = float(np.percentile(residual[close], 25))
    return np.flatnonzero(close & (residual <= RESIDUAL_FACTOR * reference)), "fit"


def _background(analysis: RunAnalysis, single: np.ndarray, radius: float) -> tuple[np.ndarray, str]:
    """Background photons per pixel per shot (M, SS, FS) and a sentence on how it was measured."""
    labels = np.array(analysis.labels)
    median_single = float(np.median(analysis.totals[single]))
    no_hit = np.flatnonzero(labels == "no_hit")
    if len(no_hit) >= MIN_WEAK_FRAMES:
        chosen, how = no_hit, f"mean of the {len(no_hit)} frames labelled no_hit"
    else:
        # the weakest population: under a tenth of a single hit, and within 3x the run's weakest frames (an empty
        # frame's photons vary only with the pulse; weak blobs of debris lie far above them)
        floor = float(np.percentile(analysis.totals, 5))
        weak = np.flatnonzero((analysis.totals < WEAK_FRACTION * median_single) & (analysis.totals <= 3.0 * floor))
        chosen = weak if len(weak) >= MIN_WEAK_FRAMES else None
        how = (f"mean of the {len(weak)} weakest frames (under {WEAK_FRACTION:.0%} of a single hit's photons and "
               "within 3x the weakest)" if chosen is not None else "")
    if chosen is not None:
        with CXIReader(analysis.path) as reader:
            total = np.zeros(reader.frame_shape)
            for start in range(0, len(chosen), 64):
                frames = reader.frames(analysis.indices[chosen[start:start + 64]])
                total += np.where(np.isfinite(frames), frames, 0.0).sum(axis=0)
        template = np.where(analysis.valid, np.maximum(total / len(chosen), 0.0), 0.0)
        return template, how
    # a run of hits only: no frame shows the background alone, so it is read off the single hits where their
    # spheres scatter least. At ring minimum n of hit i (q = x_n / R_i) the level is B_n + c_n·A_i over the hits:
    # the intercept B_n is what is there without the particle, the slope what the particle itself fills in.
    # Beyond the third minimum the rings have faded and what the fits leave is taken as it is.
    bins = analysis.bins
    residual = []
    for pos in single:
        f = analysis.fits[pos]
        x = bins.q * f.radius
        model = f.amplitude * (f.visibility * sphere_phi2(x) + (1.0 - f.visibility) * smeared_phi2(x))
        residual.append(np.maximum(analysis.profiles[pos] - bins.weight * model, 0.0))
    level = _smooth(np.median(np.array(residual), axis=0), 11)
    q_tail = SPHERE_MINIMA[2] / (radius * 1e10)
    points_q, points_b = [], []
    for x_min in SPHERE_MINIMA[:2]:
        qs, values, amps = [], [], []
        for pos in single:
            f = analysis.fits[pos]
            sel = np.abs(bins.q * f.radius - x_min) <= 0.15
            if sel.any():
                qs.append(x_min / f.radius)
                values.append(float(np.mean(analysis.profiles[pos][sel])))
                amps.append(f.amplitude)
        if not values:
            continue
        if len(values) >= 3 and np.ptp(amps) > 0:
            intercept = float(np.polyfit(amps, values, 1)[1])
            b = min(max(intercept, 0.0), min(values))
        else:
            b = min(values)
        points_q.append(float(np.median(qs)))
        points_b.append(b)
    tail = bins.q >= q_tail
    if not tail.any():
        tail = np.arange(bins.n_shells) >= bins.n_shells * 3 // 4
    start = int(np.flatnonzero(tail)[0])
    points_q.append(float(bins.q[start]))
    points_b.append(float(level[start]))
    order = np.argsort(points_q)
    pq, pb = np.log(np.array(points_q)[order]), np.log(np.maximum(np.array(points_b)[order], 1e-6))
    inner = np.exp(np.interp(np.log(bins.q), pq, pb))  # constant below the first point
    profile = np.where(tail, level, inner)
    return bins.expand(profile), ("from the single hits (no no-hit frames in the run): at their first two ring "
                                  "minima the level a hit without particle would have (intercept against the hit's "
                                  "brightness), beyond the third what their sphere fits leave; log-log interpolated")


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Running mean over ``width`` (odd) neighbours, the ends padded with their edge values."""
    half = width // 2
    return np.convolve(np.pad(values, half, mode="edge"), np.ones(width) / width, mode="valid")


def choose_oversample(bins: RadialBins, radius_m: float) -> int:
    """Sub-pixels per pixel side so that a pixel step of |q| is under a tenth of the ring period π/R per sub-pixel."""
    ratio = bins.width / (math.pi / (radius_m * 1e10))
    return int(min(4, max(1, math.ceil(ratio / 0.1))))


STRUCTURE_SHOTS = 24
"""Simulated single hits that measure a structure's ring radius on the run's detector."""


def structure_ring_radius(result: MatchResult) -> float:
    """Å: the sphere radius the run's fits would give for the structure of ``result.options.shape`` unscaled.

    A structure is not a sphere (a capsid is hollow, a protein lumpy); what must match is where its rings fall for
    the same fitter. The structure (its biological assembly) is simulated at the scale s₀ that gives it the
    fitted radius if it were a sphere of its radius of gyration (R₀ = √(5/3)·R_g), as
    :data:`STRUCTURE_SHOTS` single hits on the run's detector with the run's noise and background, fitted by
    :func:`spisim.realrun.fit.fit_spheres`; their median radius over s₀ is the structure's own. The manifest's
    ``scale`` is the run's radius over it.
    """
    from ..structure import load_structure

    atoms = load_structure(result.options.shape, assembly="auto")
    pos = np.asarray(atoms.positions, dtype=np.float64)
    r0 = math.sqrt(5.0 / 3.0 * float(np.mean(np.sum((pos - pos.mean(axis=0)) ** 2, axis=1))))
    s0 = result.radius * 1e10 / r0
    result.structure_radius = r0  # the manifest then scales the structure by s0
    a = result.analysis
    profiles = simulate_profiles(result, STRUCTURE_SHOTS, aspect_sd=0.0).profiles
    radius_range = (0.3 * result.radius * 1e10, 3.0 * result.radius * 1e10)
    fits = fit_spheres(profiles, a.bins, radius_range=radius_range, pixel_noise=a.read_noise)
    radii = np.array([f.radius for f in fits])
    radii = radii[np.isfinite(radii)]
    if not radii.size:
        raise SpiError(f"no simulated shot of {result.options.shape} could be fitted by a sphere on this detector")
    return float(np.median(radii)) / s0


def match_run(path: str | Path, options: MatchOptions = DEFAULT_OPTIONS,
              progress: Callable[[int], None] | None = None) -> MatchResult:
    """Fit simulation settings to a run (see the module doc); the manifest text is in the result."""
    if options.shape not in SHAPES and Path(options.shape).expanduser().is_file():  # the manifest may live elsewhere
        options = dataclasses.replace(options, shape=str(Path(options.shape).expanduser().resolve()))
    analysis = analyse_run(path, options, progress)
    notes = []
    offset = analysis.centre_offset
    if offset is not None:
        c = analysis.centre
        off = math.hypot(*offset)
        sd = math.hypot(c.row_sd, c.col_sd)
        if off > max(CENTRE_TOLERANCE, 3.0 * sd):
            # move the detector so that the fitted centre lies on the beam axis, and read the frames again
            (panel,) = Detector.from_cxi(analysis.path).panels
            point = panel.corner + (c.row - panel.ss_offset + 0.5) * panel.ss_vec + \
                (c.col - panel.fs_offset + 0.5) * panel.fs_vec
            analysis = analyse_run(path, options, None, shift=(-float(point[0]), -float(point[1])))
            notes.append(f"the frames' beam centre lies {offset[1]:+.2f}, {offset[0]:+.2f} px (fast, slow scan; "
                         f"± {c.col_sd:.2f}, {c.row_sd:.2f}) from the geometry's: the matched detector is moved there")
        else:
            notes.append(f"beam centre of the frames within {off:.2f} px of the geometry's (± {sd:.2f})")
    single, source = select_single(analysis, options.min_quality)
    if len(single) == 0:
        raise SpiError(f"{analysis.path}: no single hit to fit (the labelled single hits have no sphere fit)")
    radii = analysis.radii[single] * 1e-10
    radius = float(np.mean(radii))
    size_sd = float(np.std(radii, ddof=1) / radius) if len(radii) > 1 else 0.0
    if len(single) < 5:
        notes.append(f"only {len(single)} single-like hit(s): size spread and hit spread are rough")
    amplitudes = np.array([analysis.fits[i].amplitude for i in single])
    fluences = fluence_from_amplitude(amplitudes, analysis.radii[single], options.density)
    spread = hit_spread(fluences, options.focus_fwhm, options.jitter)
    background, how = _background(analysis, single, radius)
    visibility = float(np.median([analysis.fits[i].visibility for i in single]))
    others = np.setdiff1d(np.flatnonzero(analysis.totals > WEAK_FRACTION * np.median(analysis.totals[single])),
                          single)
    other_radii = analysis.radii[others]
    other_radii = other_radii[np.isfinite(other_radii)] * 1e-10
    if len(other_radii) >= 5:
        droplet = (float(np.percentile(other_radii, 10)), float(np.percentile(other_radii, 90)))
    else:
        droplet = (0.5 * radius, 2.0 * radius)
        notes.append("droplet sizes set to 0.5-2 x the particle radius (fewer than 5 non-single hits to size)")
    oversample = options.oversample or choose_oversample(analysis.bins, radius)
    result = MatchResult(analysis=analysis, options=options, single=single, single_source=source, radius=radius,
                         size_sd=size_sd, visibility=visibility, peak_fluence=spread.peak_fluence,
                         hit_radius=spread.hit_radius, background=background, background_method=how,
                         droplet_radius=droplet, oversample=oversample, notes=notes)
    if options.shape not in SHAPES:
        result.structure_radius = structure_ring_radius(result)
    if options.aspect_sd is not None:
        result.aspect_sd, result.aspect_source = options.aspect_sd, "given (--aspect-sd)"
    else:
        result.aspect_sd, real_depth, sim_depth = calibrate_aspect(result)
        result.aspect_source = (f"fitted: simulated rings as deep as the run's (first minimum / next maximum "
                                f"{real_depth:.2f} real, {sim_depth:.2f} simulated)")
    if options.calibrate and (result.aspect_sd > 0 or result.size_sd > 0 or options.shape not in SHAPES):
        calibrate_scale(result)
    result.manifest_text = manifest_text(result, companion="MATCHED.detector.h5")
    return result
