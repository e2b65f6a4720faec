"""Making the shots of a manifest: per-shot random streams and the :class:`Simulator`.

Reproducibility rests on one rule here: every shot draws from its own streams, made from
``SeedSequence(seed, spawn_key=(1, shot))`` (scene, pulse jitter, detector noise), so a shot does not depend on
which process makes it or in which order; fixed detector defects come from ``spawn_key=(0,)``. Shards, resume,
worker processes and Dask are :mod:`spisim.generate`'s.

:class:`Simulator` is also the API for making shots in memory (e.g. to stream them into training).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import resolve_device
from .cxi import CXIWriter, ShotLabels
from .detector.binning import bin_sum
from .manifest import Manifest
from .manifest.build import (
    background_template,
    build_beam,
    build_body,
    build_detector,
    multi_hits,
    noise_parameters,
    unintended_hits,
)
from .noise import apply_detector, output_dtype, output_units, prepare_effects, pulse_scale
from .scene import Kind, PatternModel, SceneModel, alias_distance

ProgressCallback = Callable[[int], None]
"""Called with the number of shots just finished."""


def shot_streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.SeedSequence]:
    """(scene generator, jitter generator, detector-noise seed sequence) of shot ``index``.

    Built from ``SeedSequence(seed, spawn_key=(1, index))``; the detector noise gets a seed sequence so
    that the CPU path (numpy) and the GPU path (CuPy) can each make their own generator from it.
    """
    children = np.random.SeedSequence(int(seed), spawn_key=(1, int(index))).spawn(3)
    return np.random.default_rng(children[0]), np.random.default_rng(children[1]), children[2]


def fixed_stream(seed: int) -> np.random.Generator:
    """The dataset's stream for fixed detector defects (dead and hot pixels)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,)))


# ----------------------------------------------------------------------------------------------
# The simulator


class Simulator:
    """Makes the shots of a manifest, one at a time, identically in any process.

    Args:
        manifest: a validated manifest.
        device: ``cpu`` or ``cuda`` (``auto`` picks); the GPU path gives statistically equal but not
            bit-equal frames (CuPy's random streams differ from numpy's).
        volume_store: folder where reciprocal volumes are saved once built and loaded by later users.

    Geometry, beam and fixed detector effects are made at once; particles (structures, reciprocal
    volumes) on the first shot, so that a process that only joins shards stays light.

    :attr:`detector` is the detector of the data (binned by ``detector.bin``, with the static mask);
    patterns are rendered on :attr:`render_detector`, its subdivision by ``detector.oversample``, and
    their expected photons summed back onto the data pixels (pixel-area integration).
    """

    def __init__(self, manifest: Manifest, device: str = "cpu", volume_store: Path | None = None) -> None:
        self.manifest = manifest
        self.volume_store = volume_store
        self.spec = manifest.spec
        self.device = resolve_device(device)
        self.beam = build_beam(manifest)
        self.detector = build_detector(manifest)
        det = self.detector
        self.shape: tuple[int, int, int] = tuple(det.shape)  # type: ignore[assignment]
        q = det.q_vectors(self.beam.wavelength_angstrom)
        self.covered = np.asarray(det.covered, bool)
        self.q_abs = np.where(self.covered, np.linalg.norm(np.nan_to_num(q), axis=-1), 0.0)
        self.solid_angle = np.where(self.covered, det.solid_angles(), 0.0)
        self.polarization = np.asarray(det.polarization_factor(self.spec.beam.polarization))
        self.noise = noise = noise_parameters(self.spec.noise)
        shadow = np.zeros(self.shape, bool)
        if noise.beamstop > 0:
            shadow = det.with_beamstop(noise.beamstop).mask & ~det.mask
        template = background_template(manifest)
        self.effects = prepare_effects(
            noise, detector_mask=det.mask, shadow=shadow, q_abs=self.q_abs, solid_angle=self.solid_angle,
            polarization=self.polarization, rng=fixed_stream(self.spec.seed), background_template=template,
        )
        self.dtype = output_dtype(noise, self.spec.output.dtype)
        self.units = output_units(noise)
        self.oversample = int(self.spec.detector.oversample)
        if self.oversample == 1:
            self.render_detector = det
            self._q, self._render_covered = q, self.covered
            self._render_solid, self._render_pol = self.solid_angle, self.polarization
        else:
            fine = det.subdivided(self.oversample)
            self.render_detector = fine
            self._q = fine.q_vectors(self.beam.wavelength_angstrom)
            self._render_covered = np.asarray(fine.covered, bool)
            self._render_solid = np.where(self._render_covered, fine.solid_angles(), 0.0)
            self._render_pol = np.asarray(fine.polarization_factor(self.spec.beam.polarization))
        self._scene_model: Any = None
        self._pattern: Any = None
        self._xp: Any = np
        self._effects_dev: Any = self.effects
        self._covered_dev: Any = self.covered

    # ---- lazily built parts ----
    def _prepare(self) -> None:
        if self._scene_model is not None:
            return
        spec = self.spec
        cov = self._render_covered
        q_cov = np.ascontiguousarray(self._q[cov])
        q_max = float(np.linalg.norm(q_cov, axis=1).max()) if len(q_cov) else 0.0
        energy = spec.beam.photon_energy
        names = spec.structure_names
        dev, store = self.device, self.volume_store
        particles = [Kind(i, p.weight, build_body(self.manifest, p, f"particles[{i}]", energy, q_max, dev, store),
                          p.scale, p.size_sd, p.aspect_sd)
                     for i, p in enumerate(spec.particles)]
        off = len(spec.particles)
        molecules = [
            Kind(off + i, m.weight, build_body(self.manifest, m, f"unintended.molecules[{i}]", energy, q_max, dev,
                                               store), m.scale, m.size_sd, m.aspect_sd)
            for i, m in enumerate(spec.unintended.molecules)
        ]
        probs = np.array(list(spec.hits.probabilities().values()))
        self._scene_model = SceneModel(probs, particles, molecules, multi_hits(spec.multi),
                                       unintended_hits(spec.unintended), self.beam.sample_position, names)
        for kind in (*particles, *molecules):  # build reciprocal volumes now, not inside the first shot
            if getattr(kind.body, "method", None) == "fast":
                kind.body.volume()
        xp = np
        solid, pol = self._render_solid[cov], self._render_pol[cov]
        if self.device == "cuda":
            import cupy as xp  # noqa: N813

            q_cov, solid, pol = xp.asarray(q_cov), xp.asarray(solid), xp.asarray(pol)
            e = self.effects
            self._effects_dev = type(e)(**{k: (xp.asarray(v) if isinstance(v, np.ndarray) else v)
                                           for k, v in e.__dict__.items()})
        self._xp = xp
        self._covered_dev = xp.asarray(cov)  # the rendered (sub-)pixels
        self._pattern = PatternModel(q_cov, solid, pol, self.beam.fluence_at, alias_distance(self._q, cov),
                                     spec.multi.coherence)

    def prepare(self) -> Simulator:
        """Load the particles and build their reciprocal volumes now (else on the first shot)."""
        self._prepare()
        return self

    @property
    def scene_model(self) -> Any:
        """The :class:`spisim.scene.SceneModel` (built on first use)."""
        self._prepare()
        return self._scene_model

    @property
    def pattern_model(self) -> Any:
        """The :class:`spisim.scene.PatternModel` (built on first use)."""
        self._prepare()
        return self._pattern

    def expected_photons(self, index: int) -> tuple[Any, Any, float, float]:
        """Shot ``index`` before detector effects and background.

        Returns:
            (expected photons scattered by the particles (M, SS, FS) float64 (numpy, or CuPy on the GPU),
            the :class:`~spisim.scene.Scene`, fluence at the first particle (photons/m²; the pulse's peak
            fluence for a no-hit), pulse scale).
        """
        return self._expected(index, shot_streams(self.spec.seed, index))

    def _expected(self, index: int, streams: tuple) -> tuple[Any, Any, float, float]:
        self._prepare()
        scene_rng, jitter_rng, _ = streams
        scene = self._scene_model.draw(scene_rng)
        scale = pulse_scale(jitter_rng, self.noise.jitter)
        sample, fluence = self._pattern.render(scene, scale)
        if self.oversample == 1:
            photons = self._xp.zeros(self.shape)
            photons[self._covered_dev] = sample
        else:  # sum the sub-pixels of each pixel: the integral over its solid angle (on the device with CuPy)
            fine = self._xp.zeros(self._covered_dev.shape)
            fine[self._covered_dev] = sample
            photons = bin_sum(fine, self.oversample)
        if not scene.particles:
            fluence = float(self.beam.peak_fluence) * scale
        return photons, scene, fluence, scale

    def shot(self, index: int) -> tuple[np.ndarray, ShotLabels]:
        """Frame (M, SS, FS) of :attr:`dtype` and labels of shot ``index``."""
        streams = shot_streams(self.spec.seed, index)
        photons, scene, fluence, scale = self._expected(index, streams)
        xp = self._xp
        eff = self._effects_dev
        valid = ~eff.mask
        total = float(photons[valid].sum())
        background = eff.background * scale
        bg = self.noise.background
        if bg.jitter > 0:  # drawn after the pulse scale, from the same stream: nothing else moves
            background = background * pulse_scale(streams[1], bg.jitter)
        bg_total = float(background[valid].sum())
        noise_seq = streams[2]
        if xp is np:
            rng = np.random.default_rng(noise_seq)
        else:
            rng = xp.random.Generator(xp.random.XORWOW(int(noise_seq.generate_state(1, np.uint64)[0])))
        frame = apply_detector(photons + background, self.noise, eff, rng, self.dtype)
        if xp is not np:
            frame = xp.asnumpy(frame)
        parts = scene.particles
        labels = ShotLabels(
            hit_type=scene.hit_type,
            structure=np.array([p.structure for p in parts], dtype=np.int16),
            orientation=np.array([p.quaternion for p in parts]).reshape(-1, 4),
            position=np.array([p.position for p in parts]).reshape(-1, 3),
            fluence=fluence,
            total_photons=total,
            pulse_scale=scale,
            background_photons=bg_total,
            scale=np.array([p.scale for p in parts], dtype=np.float64),
            aspect=np.array([p.aspect for p in parts], dtype=np.float64),
        )
        return frame, labels

    def shots(self, start: int, stop: int, progress: ProgressCallback | None = None
              ) -> tuple[np.ndarray, list[ShotLabels]]:
        """Frames (stop − start, M, SS, FS) and labels of consecutive shots; ``progress(1)`` after each."""
        frames = np.empty((stop - start, *self.shape), dtype=self.dtype)
        labels = []
        for i in range(start, stop):
            frames[i - start], lab = self.shot(i)
            labels.append(lab)
            if progress is not None:
                progress(1)
        return frames, labels

    def writer(self, path: str | Path, n_shots: int, compression: str | None = None) -> CXIWriter:
        """A :class:`CXIWriter` for this dataset's geometry, labels and attributes."""
        spec = self.spec
        return CXIWriter(
            path, n_shots,
            pixel_position=self.detector.pixel_positions, solid_angle=self.solid_angle, mask=self.effects.mask,
            photon_energy_ev=spec.beam.photon_energy, pulse_energy_j=self.pulse_energy_j,
            structures=spec.structure_names, max_particles=spec.max_particles, dtype=self.dtype, units=self.units,
            compression=compression or spec.output.compression, attrs=dataset_attributes(self.manifest),
        )

    @property
    def pulse_energy_j(self) -> float:
        """Nominal pulse energy (J)."""
        return float(self.beam.pulse_energy)


def dataset_attributes(manifest: Manifest) -> dict[str, Any]:
    """Root attributes of a dataset: manifest text, its source, overrides, seed and package version."""
    return {
        "spi_version": __version__,
        "spi_manifest": manifest.text,
        "spi_manifest_source": manifest.source,
        "spi_overrides": json.dumps(manifest.overrides, sort_keys=True),
        "spi_seed": int(manifest.spec.seed),
    }
