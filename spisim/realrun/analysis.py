"""What ``spi match`` reads off a run, and the types of a match.

:func:`analyse_run` gives, for (at most ``max_frames``) frames of a run in photons, their radial profiles, photon
counts and sphere fits, the read noise and, on a one-module detector, the beam centre fitted to the frames
(:class:`RunAnalysis`). :class:`MatchOptions` holds what ``spi match`` assumes where the frames cannot tell,
:class:`MatchResult` the fitted settings (see :mod:`spisim.realrun.match`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import wavelength_angstrom
from ..cxi import DETECTOR_PATH, CXIReader
from ..detector import Detector
from ..errors import InputFileError, SpiError
from .centre import fit_centre_groups
from .fit import SphereFit, fit_spheres
from .profiles import RadialBins, photon_totals

CENTRE_GROUPS = 8
"""Frame groups whose mean patterns give the beam centre's jackknife error."""


@dataclass(frozen=True)
class MatchOptions:
    """What ``spi match`` assumes where the frames cannot tell.

    Attributes:
        shape: the manifest's particle: ``sphere`` or ``icosahedron`` (continuum, circumradius from the fitted
            sphere radius by :func:`sphere_equivalent_factor`), or a structure (PDB ID or file) scaled so that it
            scatters like the fitted sphere (:func:`spisim.realrun.fit.structure_equivalent_radius`).
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


DEFAULT_OPTIONS = MatchOptions()
"""The options of ``spi match`` without any given."""


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
    structure_radius: float = 0.0  # Å: the equivalent sphere of a named structure (options.shape), else 0
    notes: list[str] = field(default_factory=list)
    manifest_text: str = ""

    @property
    def background_photons(self) -> float:
        """Background photons per shot on valid pixels."""
        return float(self.background[self.analysis.valid].sum())


def _evenly(n: int, at_most: int) -> np.ndarray:
    if n <= at_most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, at_most).round().astype(np.int64))


BLOCK_BYTES = 64 * 2**20
"""Frames are read in blocks of about this many bytes (memory stays bounded whatever the detector)."""

NOISE_FRAMES = 200
"""Frames (the first ones analysed) whose values below zero give the read noise when the run does not store it."""


def analyse_run(path: str | Path, options: MatchOptions = MatchOptions(),
                progress: Callable[[int], None] | None = None, block: int | None = None,
                shift: tuple[float, float] = (0.0, 0.0)) -> RunAnalysis:
    """Radial profiles, photon counts and sphere fits of (at most ``options.max_frames``) frames of a run.

    The run must be a CXI/HDF5 file in photons with pixel positions and a photon energy (as ``spi import``
    writes with ``--pixel-size/--distance/--energy`` or ``--geometry``). ``shift`` (m) moves the detector
    across the beam first (a corrected beam centre). On a one-module detector the beam centre is also fitted to
    the frames (:func:`spisim.realrun.centre.fit_centre_groups` on 8 groups of them) and compared with the
    geometry's.
    """
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
        if block is None:
            block = max(1, min(64, BLOCK_BYTES // (4 * int(np.prod(detector.shape)))))
        negative_sq, negative_n, noise_seen = 0.0, 0, 0  # read noise from values below zero (see fit.py)
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
            if noise_seen < NOISE_FRAMES:
                sample = frames[usable][: NOISE_FRAMES - noise_seen][:, valid]
                negative = sample[np.isfinite(sample) & (sample < 0)].astype(np.float64)
                negative_sq += float(np.sum(negative * negative))
                negative_n += int(negative.size)
                noise_seen += int(usable.sum())
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
        # as read_noise_from_negatives: E[x² | x < 0] = σ² for zero-photon pixels with Gaussian read noise
        read_noise = math.sqrt(negative_sq / negative_n) if negative_n else 0.0
        source = "the values below zero"
    profiles_arr = np.concatenate(profiles)
    radius_range = None if options.radius_range is None else tuple(r * 1e10 for r in options.radius_range)
    fits = fit_spheres(profiles_arr, bins, radius_range=radius_range, pixel_noise=read_noise)
    centre = None
    if one_module and group_counts.any():
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
