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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..constants import EV, wavelength_angstrom
from ..cxi import DETECTOR_PATH, SOURCE_PATH, CXIReader
from ..errors import InputFileError, OutputFileError, SpiError
from ..jsonutil import json_safe
from .fit import (
    SPHERE_MINIMA,
    SphereFit,
    fit_spheres,
    fluence_from_amplitude,
    hit_spread,
    read_noise_from_negatives,
    smeared_phi2,
    sphere_phi2,
)
from .profiles import RadialBins, first_minimum_contrast, photon_totals

RADIUS_CLUSTER = 0.15
"""Single-like hits found by fit lie within this relative distance of the median fitted radius."""

CENTRE_GROUPS = 8
"""Frame groups whose mean patterns give the beam centre's jackknife error."""

CENTRE_TOLERANCE = 0.5
"""Pixels: a fitted beam centre farther than this (and than 3 standard errors) from the geometry's moves it."""

RESIDUAL_FACTOR = 2.0
"""Single-like hits found by fit have an rms log residual within this factor of the best-fitting quarter's."""

WEAK_FRACTION = 0.1
"""No-hit frames hold fewer photons than this share of the median single hit (and at most 3x the weakest frames)."""

MIN_WEAK_FRAMES = 3
"""No-hit frames needed for a per-pixel background template (else the radial tail method)."""

BACKGROUND_NAME = "background"
"""Dataset of the companion file that holds the background template (photons per pixel per shot)."""


@dataclass(frozen=True)
class MatchOptions:
    """What ``spi match`` assumes where the frames cannot tell.

    Attributes:
        shape: the manifest's particle: ``sphere`` or ``icosahedron`` (continuum, circumradius from the fitted
            sphere radius by :func:`sphere_equivalent_factor`).
        density: electron density of the particle (e/Å³); photon counts fix J·ρ², so ρ is assumed and repeated
            in the manifest (0.43: protein).
        focus_fwhm: m, FWHM of the (Gaussian) focus assumed; the hit radius is fitted relative to it.
        jitter: relative rms pulse-energy jitter assumed (its share of the fluence spread is not put down to hit
            positions); written to the manifest.
        min_quality: fit quality a frame needs to count as a single-like hit when the run has no labels.
        max_frames: frames analysed at most (evenly spread over the run).
        radius_range: (low, high) m searched by the sphere fits; None: all the detector can measure.
        oversample: pixel-area integration of the manifest; None: chosen from the ratio of pixel to ring period.
        aspect_sd: the particles' rms stretch (``aspect_sd`` of the manifest); None: calibrated so that simulated
            single hits have the run's median ring visibility (:func:`calibrate_aspect`).
        calibrate: correct radius and peak fluence by a simulation (:func:`calibrate_scale`) where a size or
            stretch spread moves the simulated rings or photon counts.
        calibration_shots: simulated single hits per trial of the calibrations.
        seed: the manifest's seed.
    """

    shape: str = "sphere"
    density: float = 0.43
    focus_fwhm: float = 1.5e-6
    jitter: float = 0.0
    min_quality: float = 0.5
    max_frames: int = 2000
    radius_range: tuple[float, float] | None = None
    oversample: int | None = None
    aspect_sd: float | None = None
    calibrate: bool = True
    calibration_shots: int = 160
    seed: int = 0


@dataclass
class RunAnalysis:
    """What the frames of a run say, shot by shot (the analysed subset).

    Attributes:
        path: the run file.
        photon_energy_ev: eV.
        indices: (n,) analysed frame indices.
        bins: radial shells of the run's detector.
        profiles: (n, K) mean photons per pixel per shell.
        totals: (n,) photons per frame on valid pixels.
        fits: the sphere fit of each analysed frame.
        labels: (n,) class name per analysed frame ("" where unlabelled).
        read_noise: rms read noise per pixel, photons.
        read_noise_source: where it came from.
        valid: (M, SS, FS) pixels that count.
    """

    path: Path
    photon_energy_ev: float
    indices: np.ndarray
    bins: RadialBins
    profiles: np.ndarray
    totals: np.ndarray
    fits: list[SphereFit]
    labels: list[str]
    read_noise: float
    read_noise_source: str
    valid: np.ndarray
    pixel_position: np.ndarray
    mask: np.ndarray
    centre: object = None  # CentreFit of the frames (one-module detectors), or None
    beam_pixel: tuple[float, float] | None = None  # (row, col) where the geometry puts the beam

    @property
    def centre_offset(self) -> tuple[float, float] | None:
        """(row, col) pixels from the geometry's beam position to the one fitted to the frames, or None."""
        if self.centre is None or self.beam_pixel is None:
            return None
        return self.centre.row - self.beam_pixel[0], self.centre.col - self.beam_pixel[1]

    @property
    def radii(self) -> np.ndarray:
        """(n,) fitted radii, Å."""
        return np.array([f.radius for f in self.fits])

    @property
    def quality(self) -> np.ndarray:
        return np.array([f.quality for f in self.fits])


@dataclass
class MatchResult:
    """The fitted settings and the manifest text."""

    analysis: RunAnalysis
    options: MatchOptions
    single: np.ndarray  # positions (into analysis.indices) of the single-like hits
    single_source: str  # "labels" or "fit"
    radius: float  # m, mean
    size_sd: float  # relative rms
    visibility: float  # median ring visibility of the single-like hits
    peak_fluence: float  # photons/m^2
    hit_radius: float  # m
    background: np.ndarray  # (M, SS, FS) photons per pixel per shot
    background_method: str
    droplet_radius: tuple[float, float]  # m
    oversample: int
    aspect_sd: float = 0.0
    aspect_source: str = "assumed"
    corrections: tuple[float, float] = (1.0, 1.0)  # factors applied to radius and peak fluence by calibrate_scale
    notes: list[str] = field(default_factory=list)
    manifest_text: str = ""

    @property
    def background_photons(self) -> float:
        """Background photons per shot on valid pixels."""
        return float(self.background[self.analysis.valid].sum())


# ----------------------------------------------------------------------------------------------------- analysis


def _evenly(n: int, at_most: int) -> np.ndarray:
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(np.int64))


def analyse_run(path: str | Path, options: MatchOptions = MatchOptions(),
                progress: Callable[[int], None] | None = None, block: int = 64,
                shift: tuple[float, float] = (0.0, 0.0)) -> RunAnalysis:
    """Radial profiles, photon counts and sphere fits of (at most ``options.max_frames``) frames of a run.

    The run must be a CXI/HDF5 file in photons with pixel positions and a photon energy (as ``spi import``
    writes with ``--pixel-size/--distance/--energy`` or ``--geometry``). ``shift`` (m) moves the detector
    across the beam first (a corrected beam centre). On a one-module detector the beam centre is also fitted to
    the frames (:func:`spisim.realrun.centre.fit_centre_groups` on 8 groups of them) and compared with the
    geometry's.
    """
    from ..detector import Detector

    path = Path(path)
    with CXIReader(path) as reader:
        units = reader.data.attrs.get("units", "photons")
        units = units.decode() if isinstance(units, bytes) else str(units)
        if units.lower() == "adu":
            raise InputFileError(f"{path} holds frames in ADU: import it with `spi import --gain ADU_PER_PHOTON` "
                                 "(or --gain auto) so that its frames are photons")
        energy = reader.photon_energy_ev
        if energy is None or not math.isfinite(energy) or energy <= 0:
            raise InputFileError(f"{path} has no photon energy: import it with --energy (e.g. --energy 1.6keV)")
        if reader.pixel_position is None:
            raise InputFileError(f"{path} has no pixel positions: import it with --pixel-size and --distance, or "
                                 "--geometry")
        detector = Detector.from_cxi(path)
        if shift != (0.0, 0.0):
            detector = detector.shifted(shift[0], shift[1], 0.0)
        q = np.linalg.norm(detector.q_vectors(wavelength_angstrom(energy)), axis=-1)
        weight = detector.solid_angles() * detector.polarization_factor("horizontal")
        valid = ~detector.mask
        bins = RadialBins.from_detector(q, weight, valid)
        indices = _evenly(len(reader), options.max_frames)
        profiles, totals, keep = [], [], []
        noise_frames = []
        one_module = detector.shape[0] == 1
        group_sums = np.zeros((CENTRE_GROUPS, *detector.shape[1:])) if one_module else None
        group_counts = np.zeros((CENTRE_GROUPS, *detector.shape[1:])) if one_module else None
        for start in range(0, len(indices), block):
            sel = indices[start:start + block]
            frames = reader.frames(sel)
            if one_module:
                for k, f in enumerate(frames):
                    finite = np.isfinite(f[0])
                    group_sums[(start + k) % CENTRE_GROUPS] += np.where(finite, f[0], 0.0)
                    group_counts[(start + k) % CENTRE_GROUPS] += finite
            usable = np.array([np.isfinite(f[valid]).any() for f in frames])
            keep.append(sel[usable])
            profiles.append(bins.profiles(frames[usable]))
            totals.append(photon_totals(frames[usable], valid))
            if sum(len(f) for f in noise_frames) < 200:
                noise_frames.append(frames[usable][:8])
            if progress is not None:
                progress(len(sel))
        indices = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        if len(indices) == 0:
            raise InputFileError(f"{path}: no frame has a finite pixel")
        names = _labels_of(reader, indices)
        stored = _stored_read_noise(reader)
    if stored is not None:
        read_noise, source = stored, "the run's import (gain fit)"
    else:
        read_noise = read_noise_from_negatives(np.concatenate(noise_frames), valid)
        source = "the values below zero"
    profiles_arr = np.concatenate(profiles)
    radius_range = None if options.radius_range is None else tuple(r * 1e10 for r in options.radius_range)
    fits = fit_spheres(profiles_arr, bins, radius_range=radius_range, pixel_noise=read_noise)
    centre = None
    if one_module and group_counts.any():
        from .centre import fit_centre_groups

        with contextlib.suppress(SpiError):  # a pattern without centrosymmetry to fit: keep the geometry's
            centre = fit_centre_groups(group_sums, group_counts, detector.mask[0])
    return RunAnalysis(path=path, photon_energy_ev=float(energy), indices=indices, bins=bins, profiles=profiles_arr,
                       totals=np.concatenate(totals), fits=fits, labels=names, read_noise=read_noise,
                       read_noise_source=source, valid=valid, pixel_position=np.asarray(detector.pixel_positions),
                       mask=np.asarray(detector.mask), centre=centre, beam_pixel=_beam_pixel(detector))


def _beam_pixel(detector: object) -> tuple[float, float] | None:
    """(row, col) of the beam axis on a one-panel detector, in data-array pixels (0-based centres); else None."""
    panels = detector.panels  # type: ignore[attr-defined]
    if len(panels) != 1:
        return None
    p = panels[0]
    # corner + (row + ½) ss + (col + ½) fs has x = y = 0
    a = np.array([[p.ss_vec[0], p.fs_vec[0]], [p.ss_vec[1], p.fs_vec[1]]])
    row, col = np.linalg.solve(a, -p.corner[:2]) - 0.5
    return float(row + p.ss_offset), float(col + p.fs_offset)


def _labels_of(reader: CXIReader, indices: np.ndarray) -> list[str]:
    if not reader.has_labels:
        return [""] * len(indices)
    codes = reader.hit_type
    names = reader.class_names
    return [names[int(codes[i])] if codes[i] >= 0 else "" for i in indices]


def _stored_read_noise(reader: CXIReader) -> float | None:
    key = f"{DETECTOR_PATH}/read_noise_photons"
    if key in reader.file:
        value = float(reader.file[key][()])
        return value if math.isfinite(value) and value >= 0 else None
    return None


# ----------------------------------------------------------------------------------------------------- fitting


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
        from ..particles import UniformPolyhedron

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


def choose_oversample(bins: RadialBins, radius_m: float) -> int:
    """Sub-pixels per pixel side so that a pixel step of |q| is under a tenth of the ring period π/R per sub-pixel."""
    ratio = bins.width / (math.pi / (radius_m * 1e10))
    return int(min(4, max(1, math.ceil(ratio / 0.1))))


def match_run(path: str | Path, options: MatchOptions = MatchOptions(),
              progress: Callable[[int], None] | None = None) -> MatchResult:
    """Fit simulation settings to a run (see the module doc); the manifest text is in the result."""
    from ..detector import Detector

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
    if options.aspect_sd is not None:
        result.aspect_sd, result.aspect_source = options.aspect_sd, "given (--aspect-sd)"
    else:
        result.aspect_sd, real_depth, sim_depth = calibrate_aspect(result)
        result.aspect_source = (f"fitted: simulated rings as deep as the run's (first minimum / next maximum "
                                f"{real_depth:.2f} real, {sim_depth:.2f} simulated)")
    if options.calibrate and (result.aspect_sd > 0 or result.size_sd > 0):
        calibrate_scale(result)
    result.manifest_text = manifest_text(result, companion="MATCHED.detector.h5")
    return result


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
    frames = simulate_single(result, result.options.calibration_shots)
    radius_range = (0.7 * result.radius * 1e10, 1.4 * result.radius * 1e10)
    fits = fit_spheres(a.bins.profiles(frames), a.bins, radius_range=radius_range, pixel_noise=a.read_noise)
    ring = float(np.median([f.radius for f in fits])) / float(np.median(a.radii[result.single]))
    photons = float(np.median(photon_totals(frames, a.valid))) / float(np.median(a.totals[result.single]))
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


def simulate_single(result: MatchResult, shots: int, *, aspect_sd: float | None = None, seed: int | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``shots`` single hits (n, M, SS, FS) photons of the matched manifest (optionally another ``aspect_sd`` or
    seed; calibrations use the manifest's seed, the report another one, so that it checks them independently)."""
    import tempfile

    from ..generate import Simulator
    from ..manifest import parse_manifest

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
            frames = np.empty((shots, *sim.shape), dtype=np.float32)
            for i in range(shots):
                frames[i], _ = sim.shot(i)
                if progress is not None:
                    progress(1)
    finally:
        result.aspect_sd = saved
    return frames


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
        frames = simulate_single(result, result.options.calibration_shots, aspect_sd=sd)
        profiles = a.bins.profiles(frames)
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


# ----------------------------------------------------------------------------------------------------- writing


def companion_path(manifest: str | Path) -> Path:
    """Where :func:`write_match` puts the detector and background of a manifest ``NAME.yaml``: ``NAME.detector.h5``."""
    p = Path(manifest)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".detector.h5")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def manifest_text(result: MatchResult, companion: str) -> str:
    """The YAML of the matched manifest (with comments that say where each value came from)."""
    a, o = result.analysis, result.options
    radius_nm = result.radius * 1e9
    lines = [
        f"# Matched to {a.path.name} by spi match {__version__} on {datetime.now(UTC).date().isoformat()}:",
        f"# {len(a.indices)} frames analysed, {len(result.single)} single-like hits "
        f"({'labelled single' if result.single_source == 'labels' else 'found by sphere fits'}).",
        "# Values from the frames are marked 'fitted'; the others are assumptions (spi match --help).",
        f"seed: {o.seed}",
        "shots: 1000",
        "",
        "beam:",
        f"  photon_energy: {_fmt(a.photon_energy_ev)} eV      # the run's",
        f"  fluence: {_fmt(result.peak_fluence * 1e-12)} photons/um^2   # fitted: peak fluence single hits saw"
        + (f" (x {result.corrections[1]:.4f}: simulated photons at the run's)" if result.corrections[1] != 1 else ""),
        f"  focus_diameter: {_fmt(o.focus_fwhm * 1e6)} um       # assumed FWHM (the fit gives the hit radius "
        "relative to it)",
        "  profile: gaussian",
        "  polarization: horizontal",
        f"  hit_radius: {_fmt(result.hit_radius * 1e6)} um      # fitted: spread of the single hits' fluences",
        "",
        "detector:",
        f"  geometry: {companion}   # the run's pixels and mask",
        f"  oversample: {result.oversample}                 # sub-pixels per pixel side (pixel-area integration)",
        "",
        "particles:",
        f"  - name: matched-{o.shape}",
        f"    shape: {o.shape}",
        "    model: continuum",
        (f"    radius: {_fmt(radius_nm)} nm              # fitted: mean of the single-like hits"
         + (f" (x {result.corrections[0]:.4f}: simulated rings at the run's)" if result.corrections[0] != 1 else "")
         if o.shape == "sphere"
         else f"    radius: {_fmt(radius_nm / sphere_equivalent_factor(o.shape))} nm  # fitted: circumradius whose "
         f"rings match the hits' {_fmt(radius_nm)} nm sphere"),
        f"    size_sd: {_fmt(result.size_sd)}                # fitted: their relative spread",
        f"    aspect_sd: {_fmt(result.aspect_sd)}              # {result.aspect_source}",
        f"    density: {_fmt(o.density)} e/A^3          # assumed (photon counts fix fluence x density^2)",
        "",
        "hits: balanced",
        "",
        "multi:",
        "  n_min: 2",
        "  n_max: 4",
        "  placement: aggregate",
        "  overlap: 0.3",
        "  same_species: true",
        "",
        "unintended:",
        "  kinds: {droplet: 0.5, salt: 0.3, debris: 0.2}",
        f"  droplet: {{radius: [{_fmt(result.droplet_radius[0] * 1e9)} nm, {_fmt(result.droplet_radius[1] * 1e9)} "
        "nm], density: 0.334 e/A^3}",
        f"  salt: {{radius: [{_fmt(0.1 * radius_nm)} nm, {_fmt(0.5 * radius_nm)} nm]}}",
        "",
        "noise:",
        "  background:",
        "    kind: template",
        f"    template: {companion}:/{BACKGROUND_NAME}   # fitted: {result.background_method}",
        f"    photons: {_fmt(result.background_photons)}",
        f"  jitter: {_fmt(o.jitter)}                   # assumed pulse-energy jitter",
        "  poisson: true",
        f"  readout: {_fmt(a.read_noise)}               # photons rms, from {a.read_noise_source}",
        "",
        "output:",
        "  compression: gzip",
        "  shard_size: 16",
    ]
    return "\n".join(lines) + "\n"


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_companion(result: MatchResult, path: Path) -> None:
    """The detector (pixel positions, mask), photon energy and background template of a match, as HDF5."""
    a = result.analysis
    with h5py.File(path, "w") as f:
        det = f.require_group(DETECTOR_PATH)
        det.create_dataset("pixel_position", data=a.pixel_position, compression="gzip", shuffle=True)
        det.create_dataset("mask", data=a.mask.astype(np.uint8), compression="gzip", shuffle=True)
        det.create_dataset("distance", data=float(np.nanmean(a.pixel_position[..., 2])))
        src = f.require_group(SOURCE_PATH)
        src.create_dataset("energy", data=a.photon_energy_ev * EV)
        src["energy"].attrs["photon_energy_ev"] = a.photon_energy_ev
        bg = f.create_dataset(BACKGROUND_NAME, data=result.background, compression="gzip", shuffle=True)
        bg.attrs["units"] = "photons per pixel per shot at the nominal pulse energy"
        bg.attrs["method"] = result.background_method
        f.attrs["spi_version"] = __version__
        f.attrs["spi_match"] = json.dumps({"run": str(a.path), "frames_analysed": int(len(a.indices)),
                                           "single_like": int(len(result.single))})


def write_match(result: MatchResult, out: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the manifest ``out`` (YAML) and its companion ``NAME.detector.h5``; returns both paths."""
    out = Path(out)
    companion = companion_path(out)
    if not out.parent.is_dir():
        raise OutputFileError(f"output folder {out.parent} does not exist")
    for p in (out, companion):
        if p.exists() and not overwrite:
            raise OutputFileError(f"{p} exists: use --overwrite to replace it")
    result.manifest_text = manifest_text(result, companion.name)

    try:
        _atomic(companion, lambda tmp: write_companion(result, tmp))
        _atomic(out, lambda tmp: tmp.write_text(result.manifest_text, encoding="utf-8"))
    except OSError as exc:
        from ..errors import os_error_message

        raise OutputFileError(f"writing {out} failed: {os_error_message(exc)}") from None
    return out, companion


# ----------------------------------------------------------------------------------------------------- report


def write_report(result: MatchResult, manifest: str | Path, folder: str | Path, *, shots: int = 100,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Simulate ``shots`` single hits of the written ``manifest`` and compare them with the run's single-like hits.

    The shots are drawn with the manifest's seed + 1: none of them served the calibrations of :func:`match_run`.

    Writes into ``folder``: ``report.md`` (settings, realism table, pictures), ``metrics.json`` and the PNG
    figures of :func:`spisim.realrun.realism.write_figures`. Returns the metrics.
    """
    from ..detector import Detector
    from .realism import ShotSet, compare, write_figures

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = result.analysis
    frames = simulate_single(result, shots, seed=result.options.seed + 1, progress=progress)
    with CXIReader(a.path) as reader:
        real_frames = reader.frames(a.indices[result.single])
    radius_range = (0.5 * result.radius * 1e10, 2.0 * result.radius * 1e10)
    real = ShotSet.from_frames("real", real_frames, a.bins, a.read_noise, radius_range=radius_range)
    simulated = ShotSet.from_frames("simulated", frames, a.bins, a.read_noise, radius_range=radius_range)
    metrics = compare(real, simulated, a.bins, seed=result.options.seed)
    detector = Detector.from_cxi(companion_path(manifest))
    figures = write_figures(folder, real, simulated, a.bins, detector)
    (folder / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(report_markdown(result, metrics, figures, Path(manifest)), encoding="utf-8")
    return metrics


def report_markdown(result: MatchResult, metrics: dict, figures: dict[str, Path], manifest: Path) -> str:
    """The realism report as markdown (figures linked by file name)."""
    a = result.analysis

    def row(name: str, key: str, fmt: str = "{:.3g}") -> str:
        cells = []
        for side in ("real", "simulated"):
            v, lo, hi = metrics[f"{key}_{side}"], metrics[f"{key}_{side}_16"], metrics[f"{key}_{side}_84"]
            cells.append(f"{fmt.format(v)} ({fmt.format(lo)}–{fmt.format(hi)})")
        return f"| {name} | {cells[0]} | {cells[1]} |"

    auc = metrics["auc"]
    auc_text = ("not computed (fewer than 3 shots per set)" if not math.isfinite(auc) else
                f"{auc:.2f} ± {metrics['auc_sd']:.2f} ({metrics['auc_rows_per_class']} shots per set per repeat)")
    lines = [
        f"# Realism report: {a.path.name} against {manifest.name}",
        "",
        f"Real: {len(result.single)} single-like hits of {len(a.indices)} frames analysed "
        f"({'labelled single' if result.single_source == 'labels' else 'found by sphere fits'}). "
        f"Simulated: {metrics['n_sim']} single hits of the matched manifest.",
        "",
        "## Fitted settings",
        "",
        f"- particle radius {result.radius * 1e9:.2f} nm, relative spread {result.size_sd:.3f} "
        f"(median ring visibility of the real hits {result.visibility:.2f}; 1 = as deep as a perfect sphere's)",
        f"- peak fluence {result.peak_fluence * 1e-12:.3g} photons/µm², hit radius {result.hit_radius * 1e6:.3g} µm "
        f"for an assumed {result.options.focus_fwhm * 1e6:.3g} µm FWHM focus",
        f"- background {result.background_photons:.4g} photons per shot: {result.background_method}",
        f"- read noise {a.read_noise:.3g} photons rms ({a.read_noise_source}); oversample {result.oversample}",
        *(f"- note: {n}" for n in result.notes),
        "",
        "## Real and simulated single hits (median, 16–84 % in brackets)",
        "",
        "| quantity | real | simulated |",
        "|---|---|---|",
        row("photons per shot", "photons", "{:.4g}"),
        row("fitted sphere radius (nm): ring positions", "radius_nm", "{:.2f}"),
        row("first ring minimum / next maximum", "first_min_contrast"),
        row("ring visibility of the sphere fit", "ring_visibility", "{:.2f}"),
        row("photons per pixel, outer quarter of |q|", "high_q_photons_per_pixel"),
        "",
        f"Two-sample score (a logistic regression telling real from simulated by normalised log profile and "
        f"photons, cross-validated ROC AUC; 0.5 = indistinguishable): **{auc_text}**.",
        "",
        "![real and simulated shots](montage.png)",
        "",
        "![radial profiles](profiles.png)",
        "",
        "![photons, ring depth, high-q tail](distributions.png)",
        "",
    ]
    return "\n".join(lines)
