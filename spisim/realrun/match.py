"""A manifest whose simulation looks like a real run (``spi match``).

From the run's frames alone (its labels where it has them), :func:`match_run` fits

* the particle: a uniform sphere per single-like hit (:func:`spisim.realrun.fit.fit_spheres`); the mean radius
  and its relative spread become ``shape: sphere``, ``radius``, ``size_sd``; how deep the rings are (the fits'
  visibility) is reported beside;
* the beam: the fluence each single hit saw, from its photons and size, read as a Gaussian focus sampled over a
  disk (:func:`spisim.realrun.fit.hit_spread`) → ``beam.fluence`` (peak), ``beam.hit_radius``;
* the background: the mean of the run's no-hit frames (labelled, or the weakest frames when they hold under a
  tenth of a single hit's photons); in a run of hits only, the part of the single hits' profiles beyond
  their spheres' rings, in the high-q tail where the sample's own rings have faded (a radial template);
* the detector: the run's own geometry and mask, the read noise it was imported with, and pixel-area
  integration (``detector.oversample``) where a pixel is not small against a ring period;
* non-single hits: aggregates of the fitted particle, droplets sized from the run's non-single hits.

Single-like hits are the frames labelled single (``single`` of the four hit types or of single vs
not_single) or, without labels, those a sphere explains well (fit quality ≥ ``min_quality``) whose radius lies
within 15 % of the median of such fits. :func:`write_match` writes the manifest and a companion HDF5 file with
the detector (geometry, mask) and the background template, both atomically.
"""

from __future__ import annotations

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
from .fit import (
    SphereFit,
    fit_spheres,
    fluence_from_amplitude,
    hit_spread,
    read_noise_from_negatives,
    smeared_phi2,
    sphere_phi2,
)
from .profiles import RadialBins, photon_totals

RADIUS_CLUSTER = 0.15
"""Single-like hits found by fit lie within this relative distance of the median fitted radius."""

WEAK_FRACTION = 0.1
"""Frames with fewer photons than this share of the median single hit count as no-hit frames."""

MIN_WEAK_FRAMES = 3
"""No-hit frames needed for a per-pixel background template (else the radial tail method)."""

BACKGROUND_NAME = "background"
"""Dataset of the companion file that holds the background template (photons per pixel per shot)."""


@dataclass(frozen=True)
class MatchOptions:
    """What ``spi match`` assumes where the frames cannot tell.

    Attributes:
        density: electron density of the particle (e/Å³); photon counts fix J·ρ², so ρ is assumed and repeated
            in the manifest (0.43: protein).
        focus_fwhm: m, FWHM of the (Gaussian) focus assumed; the hit radius is fitted relative to it.
        jitter: relative rms pulse-energy jitter assumed (its share of the fluence spread is not put down to hit
            positions); written to the manifest.
        min_quality: fit quality a frame needs to count as a single-like hit when the run has no labels.
        max_frames: frames analysed at most (evenly spread over the run).
        radius_range: (low, high) m searched by the sphere fits; None: all the detector can measure.
        oversample: pixel-area integration of the manifest; None: chosen from the ratio of pixel to ring period.
        seed: the manifest's seed.
    """

    density: float = 0.43
    focus_fwhm: float = 1.5e-6
    jitter: float = 0.0
    min_quality: float = 0.5
    max_frames: int = 2000
    radius_range: tuple[float, float] | None = None
    oversample: int | None = None
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
                progress: Callable[[int], None] | None = None, block: int = 64) -> RunAnalysis:
    """Radial profiles, photon counts and sphere fits of (at most ``options.max_frames``) frames of a run.

    The run must be a CXI/HDF5 file in photons with pixel positions and a photon energy (as ``spi import``
    writes with ``--pixel-size/--distance/--energy`` or ``--geometry``).
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
        q = np.linalg.norm(detector.q_vectors(wavelength_angstrom(energy)), axis=-1)
        weight = detector.solid_angles() * detector.polarization_factor("horizontal")
        valid = ~detector.mask
        bins = RadialBins.from_detector(q, weight, valid)
        indices = _evenly(len(reader), options.max_frames)
        profiles, totals, keep = [], [], []
        noise_frames = []
        for start in range(0, len(indices), block):
            sel = indices[start:start + block]
            frames = reader.frames(sel)
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
    return RunAnalysis(path=path, photon_energy_ev=float(energy), indices=indices, bins=bins, profiles=profiles_arr,
                       totals=np.concatenate(totals), fits=fits, labels=names, read_noise=read_noise,
                       read_noise_source=source, valid=valid, pixel_position=np.asarray(detector.pixel_positions),
                       mask=np.asarray(detector.mask))


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
    return np.flatnonzero(close), "fit"


def _background(analysis: RunAnalysis, single: np.ndarray, radius: float) -> tuple[np.ndarray, str]:
    """Background photons per pixel per shot (M, SS, FS) and a sentence on how it was measured."""
    labels = np.array(analysis.labels)
    median_single = float(np.median(analysis.totals[single]))
    no_hit = np.flatnonzero(labels == "no_hit")
    if len(no_hit) >= MIN_WEAK_FRAMES:
        chosen, how = no_hit, f"mean of the {len(no_hit)} frames labelled no_hit"
    else:
        weak = np.flatnonzero(analysis.totals < WEAK_FRACTION * median_single)
        chosen = weak if len(weak) >= MIN_WEAK_FRAMES else None
        how = (f"mean of the {len(weak)} weakest frames (under {WEAK_FRACTION:.0%} of a single hit's photons)"
               if chosen is not None else "")
    if chosen is not None:
        with CXIReader(analysis.path) as reader:
            total = np.zeros(reader.frame_shape)
            for start in range(0, len(chosen), 64):
                frames = reader.frames(analysis.indices[chosen[start:start + 64]])
                total += np.where(np.isfinite(frames), frames, 0.0).sum(axis=0)
        template = np.where(analysis.valid, np.maximum(total / len(chosen), 0.0), 0.0)
        return template, how
    # a run of hits only: what the sphere fits leave in the tail, beyond the third minimum
    bins = analysis.bins
    residual = []
    for pos in single:
        f = analysis.fits[pos]
        x = bins.q * f.radius
        sharp = f.amplitude * f.visibility * sphere_phi2(x)
        smeared = f.amplitude * (1.0 - f.visibility) * smeared_phi2(x)
        residual.append(np.maximum(analysis.profiles[pos] - bins.weight * (sharp + smeared), 0.0))
    level = np.median(np.array(residual), axis=0)
    tail = bins.q * radius * 1e10 >= 10.9041
    if not tail.any():
        tail = np.arange(bins.n_shells) >= bins.n_shells * 3 // 4
    profile = np.where(tail, level, float(np.median(level[tail])))
    # smooth over ±5 shells
    kernel = np.ones(11) / 11
    padded = np.pad(profile, 5, mode="edge")
    profile = np.convolve(padded, kernel, mode="valid")
    return bins.expand(profile), ("the median, over the single-like hits, of what their sphere fits leave beyond the "
                                  "third ring minimum, flat below it (no no-hit frames in the run)")


def choose_oversample(bins: RadialBins, radius_m: float) -> int:
    """Sub-pixels per pixel side so that a pixel step of |q| is under a tenth of the ring period π/R per sub-pixel."""
    ratio = bins.width / (math.pi / (radius_m * 1e10))
    return int(min(4, max(1, math.ceil(ratio / 0.1))))


def match_run(path: str | Path, options: MatchOptions = MatchOptions(),
              progress: Callable[[int], None] | None = None) -> MatchResult:
    """Fit simulation settings to a run (see the module doc); the manifest text is in the result."""
    analysis = analyse_run(path, options, progress)
    single, source = select_single(analysis, options.min_quality)
    notes = []
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
    result.manifest_text = manifest_text(result, companion="MATCHED.detector.h5")
    return result


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
        f"  fluence: {_fmt(result.peak_fluence * 1e-12)} photons/um^2   # fitted: peak fluence single hits saw",
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
        "  - name: matched-sphere",
        "    shape: sphere",
        "    model: continuum",
        f"    radius: {_fmt(radius_nm)} nm              # fitted: mean of the single-like hits",
        f"    size_sd: {_fmt(result.size_sd)}                # fitted: their relative spread",
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


def write_match(result: MatchResult, out: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the manifest ``out`` (YAML) and its companion ``NAME.detector.h5``; returns both paths."""
    out = Path(out)
    companion = companion_path(out)
    if not out.parent.is_dir():
        raise OutputFileError(f"output folder {out.parent} does not exist")
    for p in (out, companion):
        if p.exists() and not overwrite:
            raise OutputFileError(f"{p} exists: use --overwrite to replace it")
    a = result.analysis
    result.manifest_text = manifest_text(result, companion.name)

    def geometry(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
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

    try:
        _atomic(companion, geometry)
        _atomic(out, lambda tmp: tmp.write_text(result.manifest_text, encoding="utf-8"))
    except OSError as exc:
        from ..errors import os_error_message

        raise OutputFileError(f"writing {out} failed: {os_error_message(exc)}") from None
    return out, companion


# ----------------------------------------------------------------------------------------------------- report


def write_report(result: MatchResult, manifest: str | Path, folder: str | Path, *, shots: int = 100,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Simulate ``shots`` single hits of the written ``manifest`` and compare them with the run's single-like hits.

    Writes into ``folder``: ``report.md`` (settings, realism table, pictures), ``metrics.json`` and the PNG
    figures of :func:`spisim.realrun.realism.write_figures`. Returns the metrics.
    """
    from ..detector import Detector
    from ..generate import Simulator
    from ..manifest import load_manifest
    from .realism import ShotSet, compare, write_figures

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = result.analysis
    m = load_manifest(manifest, overrides={"shots": shots, "hits": {"single": 1.0}})
    sim = Simulator(m).prepare()
    frames = np.empty((shots, *sim.shape), dtype=np.float32)
    for i in range(shots):
        frames[i], _ = sim.shot(i)
        if progress is not None:
            progress(1)
    with CXIReader(a.path) as reader:
        real_frames = reader.frames(a.indices[result.single])
    radius_range = (0.5 * result.radius * 1e10, 2.0 * result.radius * 1e10)
    real = ShotSet.from_frames("real", real_frames, a.bins, a.read_noise, radius_range=radius_range)
    simulated = ShotSet.from_frames("simulated", frames, a.bins, a.read_noise, radius_range=radius_range)
    metrics = compare(real, simulated, a.bins, seed=result.options.seed)
    detector = Detector.from_cxi(companion_path(manifest))
    figures = write_figures(folder, real, simulated, a.bins, detector)
    (folder / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(report_markdown(result, metrics, figures, Path(manifest)), encoding="utf-8")
    return metrics


def _json_safe(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


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
