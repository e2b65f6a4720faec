"""What a manifest builds: the physics objects and parameter types of its settings.

The sections of :mod:`spisim.manifest.sections` hold settings; the physics modules take their own types. This
module is the one place that turns the first into the second: the :class:`~spisim.beam.Beam`, the
:class:`~spisim.detector.Detector` (preset or geometry file, distance, static mask, binning), the scene bodies of
the particles, the noise parameters (:class:`~spisim.noise.NoiseParameters`) and the laws of multiple and
unintended hits (:class:`~spisim.scene.MultiHits`, :class:`~spisim.scene.UnintendedHits`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..beam import Beam
from ..detector import Detector
from ..errors import ConfigError
from ..noise import BackgroundParameters, NoiseParameters
from ..particles import make_particle
from ..scene import AtomicBody, ContinuumBody, DebrisLaw, MultiHits, SpheroidLaw, UnintendedHits
from ..schema import project
from ..structure import load_structure
from .load import Manifest
from .sections import MultiSpec, NoiseSpec, ParticleSpec, UnintendedSpec


def build_beam(manifest: Manifest) -> Beam:
    """The :class:`spisim.beam.Beam` of a manifest (a peak ``fluence`` is turned into photons per pulse)."""
    b = manifest.spec.beam
    kw = dict(photon_energy_ev=b.photon_energy, focus_diameter_m=b.focus_diameter, profile=b.profile,
              polarization=b.polarization, sample_radius_m=b.hit_radius)
    if b.pulse_energy is not None:
        return Beam(pulse_energy_j=b.pulse_energy, **kw)
    if b.photons_per_pulse is not None:
        return Beam(pulse_photons=b.photons_per_pulse, **kw)
    unit = Beam(pulse_photons=1.0, **kw)
    return Beam(pulse_photons=b.fluence / unit.peak_fluence, **kw)


MASK_DATASET = "/entry_1/instrument_1/detector_1/mask"
"""Dataset of an HDF5/CXI file read as ``detector.mask`` when the name gives none."""

BACKGROUND_DATASET = "/background"
"""Dataset of an HDF5 file read as ``noise.background.template`` when the name gives none."""


def build_detector(manifest: Manifest) -> Detector:
    """The :class:`spisim.detector.Detector` of a manifest: preset or geometry file, distance, static mask
    (``detector.mask``, before or after binning), then ``detector.bin``. This is the detector of the data
    (frames, mask and geometry written); ``detector.oversample`` renders on its subdivision (see
    :class:`Simulator`)."""
    d = manifest.spec.detector
    det = _unbinned_detector(manifest)
    binned = det.binned(d.bin)
    if d.mask is None:
        return binned
    bad = read_static_mask(manifest)
    if bad.ndim == 2 and det.shape[0] == 1:
        bad = bad[None]
    if bad.shape == det.shape:
        return det.with_mask(bad).binned(d.bin)
    if bad.shape == binned.shape:
        return binned.with_mask(bad)
    after = f" or, binned by {d.bin}, {binned.shape}" if d.bin > 1 else ""
    raise ConfigError(f"detector.mask: array of shape {bad.shape} does not fit the detector's data shape "
                      f"{det.shape}{after}")


def read_static_mask(manifest: Manifest) -> np.ndarray:
    """``detector.mask`` as read, as bool, True = bad (``mask_value: good`` flips the file's meaning)."""
    d = manifest.spec.detector
    raw = np.asarray(manifest.read_array(str(d.mask), "detector.mask", MASK_DATASET))
    if not (raw.dtype == bool or np.issubdtype(raw.dtype, np.number)):
        raise ConfigError(f"detector.mask: expected numbers (non-zero = {d.mask_value}), got {raw.dtype}")
    nonzero = raw != 0
    return nonzero if d.mask_value == "bad" else ~nonzero


def _unbinned_detector(manifest: Manifest) -> Detector:
    d = manifest.spec.detector
    if d.geometry is not None:
        path = manifest.resolve_path(d.geometry, "detector.geometry")
        if d.distance is None:
            return Detector.load(path)
        # A CrystFEL file may lack clen or read it from a data file: the distance stands in for it, and the
        # detector is then moved so that its mean pixel z is the distance (a rigid shift along the beam).
        clen = d.distance if path.suffix.lower() == ".geom" else None
        return Detector.load(path, clen_m=clen).with_distance(d.distance)
    if d.preset == "square":
        return Detector.preset("square", distance_m=d.distance, n_pixels=d.n_pixels, pixel_size_m=d.pixel_size)
    return Detector.preset(d.preset, distance_m=d.distance)


def build_body(
    manifest: Manifest,
    p: ParticleSpec,
    where: str,
    photon_energy_ev: float,
    q_max: float,
    device: str = "cpu",
    store: Path | None = None,
) -> AtomicBody | ContinuumBody:
    """A scene body (:class:`spisim.scene.AtomicBody` or :class:`~spisim.scene.ContinuumBody`) for a particle.

    ``q_max`` (Å⁻¹) is the largest |q| of the detector; an atomistic body's volume reaches ``q_max`` times
    the particle's largest stretch (``p.max_stretch``: size factor and stretch lengthen the particle-frame q).
    ``store``: folder that keeps built reciprocal volumes for other processes (see ``AtomicBody``).
    """
    sc = manifest.spec.scattering
    if p.shape is not None:
        spec: dict[str, Any] = {"shape": p.shape, "model": "continuum" if p.continuum else "atoms"}
        if p.shape == "spheroid":
            spec |= {"a_nm": p.radius * 1e9, "c_nm": p.polar_radius * 1e9}
        elif p.shape == "shell":
            spec |= {"outer_radius_nm": p.radius * 1e9, "thickness_nm": p.thickness * 1e9}
            if p.core_density is not None:
                spec["core_electron_density"] = p.core_density
        elif p.shape == "lobed":
            spec |= {"radius_nm": p.radius * 1e9, "lobes": p.lobes}
        else:
            spec["radius_nm"] = p.radius * 1e9
        if p.continuum:
            spec["electron_density"] = p.density
            return ContinuumBody(make_particle(spec))
        spec["hydrogens"] = p.keep_hydrogens
        if p.shape_seed:
            spec["seed"] = p.shape_seed
        atoms = make_particle(spec)
        key = f"{p.label}:{json.dumps(spec, sort_keys=True)}"
    else:
        source = manifest.structure_source(str(p.structure), f"{where}.structure")
        assembly = None if p.assembly.lower() == "none" else p.assembly
        atoms = load_structure(source, assembly=assembly, keep_waters=p.keep_waters, keep_hydrogens=p.keep_hydrogens)
        key = f"{p.label}:{source}:{p.assembly}:{p.keep_waters}:{p.keep_hydrogens}"
    if p.max_stretch != 1.0:
        q_max = q_max * p.max_stretch
    return AtomicBody(atoms, key, photon_energy_ev, q_max, method=sc.method, anomalous=sc.anomalous, device=device,
                      store=store)


def noise_parameters(spec: NoiseSpec) -> NoiseParameters:
    """The :class:`~spisim.noise.NoiseParameters` of a manifest's ``noise`` section (the template's file is read
    by :func:`background_template`)."""
    return project(NoiseParameters, spec, background=project(BackgroundParameters, spec.background))


def background_template(manifest: Manifest) -> np.ndarray | None:
    """The array of ``noise.background.template`` as read (kind ``template``), else None."""
    bg = manifest.spec.noise.background
    if bg.kind != "template":
        return None
    return manifest.read_array(str(bg.template), "noise.background.template", BACKGROUND_DATASET)


def multi_hits(spec: MultiSpec) -> MultiHits:
    """The :class:`~spisim.scene.MultiHits` of a manifest's ``multi`` section."""
    return project(MultiHits, spec)


def unintended_hits(spec: UnintendedSpec) -> UnintendedHits:
    """The :class:`~spisim.scene.UnintendedHits` of a manifest's ``unintended`` section (its weights only for the
    kinds that can occur)."""
    return UnintendedHits(weights=spec.weights(), droplet=project(SpheroidLaw, spec.droplet),
                          salt=project(SpheroidLaw, spec.salt), debris=project(DebrisLaw, spec.debris))
