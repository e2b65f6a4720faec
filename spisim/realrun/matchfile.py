"""The files of a match: the manifest text (every value commented with where it came from) and its companion
HDF5 file (the run's detector and the background template), both written atomically by :func:`write_match`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path, write_text_atomic
from ..constants import EV
from ..cxi import DETECTOR_PATH, SOURCE_PATH
from ..errors import OutputFileError, os_error_message
from .analysis import MatchResult
from .fit import SHAPES, sphere_equivalent_factor

BACKGROUND_NAME = "background"
"""Dataset of the companion file that holds the background template (photons per pixel per shot)."""


def companion_path(manifest: str | Path) -> Path:
    """Where :func:`write_match` puts the detector and background of a manifest ``NAME.yaml``: ``NAME.detector.h5``."""
    p = Path(manifest)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".detector.h5")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _particle_lines(result: MatchResult, radius_nm: float) -> list[str]:
    """The manifest lines naming the particle and its size (a sphere, an icosahedron or a scaled structure)."""
    o = result.options
    corrected = (f" (x {result.corrections[0]:.4f}: simulated rings at the run's)"
                 if result.corrections[0] != 1 else "")
    if o.shape == "sphere":
        return ["  - name: matched-sphere", "    shape: sphere", "    model: continuum",
                f"    radius: {_fmt(radius_nm)} nm              # fitted: mean of the single-like hits{corrected}"]
    if o.shape in SHAPES:
        return [f"  - name: matched-{o.shape}", f"    shape: {o.shape}", "    model: continuum",
                f"    radius: {_fmt(radius_nm / sphere_equivalent_factor(o.shape))} nm  # fitted: circumradius whose "
                f"rings match the hits' {_fmt(radius_nm)} nm sphere{corrected}"]
    scale = radius_nm * 10.0 / result.structure_radius
    return ["  - name: matched-structure", f"    structure: {o.shape}",
            f"    scale: {_fmt(scale)}                 # fitted: the hits' {_fmt(radius_nm)} nm sphere over the "
            f"structure's own {_fmt(result.structure_radius / 10.0)} nm{corrected}"]


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
        *_particle_lines(result, radius_nm),
        f"    size_sd: {_fmt(result.size_sd)}                # fitted: their relative spread",
        f"    aspect_sd: {_fmt(result.aspect_sd)}              # {result.aspect_source}",
        *([f"    density: {_fmt(o.density)} e/A^3          # assumed (photon counts fix fluence x density^2)"]
          if o.shape in SHAPES else []),
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
        with atomic_path(companion) as tmp:
            write_companion(result, tmp)
        write_text_atomic(out, result.manifest_text)
    except OSError as exc:
        raise OutputFileError(f"writing {out} failed: {os_error_message(exc)}") from None
    return out, companion
