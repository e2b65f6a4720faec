"""The shot loop: per-shot random streams, shards, resume, worker processes and Dask.

Reproducibility rests on two rules:

* every shot draws from its own streams, made from ``SeedSequence(seed, spawn_key=(1, shot))`` (scene,
  pulse jitter, detector noise), so a shot does not depend on which worker makes it or in which order;
  fixed detector defects come from ``spawn_key=(0,)``;
* shots are made in shards of ``output.shard_size`` consecutive shots. Each finished shard is written to
  a temporary name in ``OUT.h5.parts/`` and renamed; at the end one process joins the shards, in order,
  into a temporary file (copying the compressed chunks as they are) and renames it to ``OUT.h5``. The
  final file therefore never exists half-written, and the same manifest and seed give the same bytes
  whatever the number of workers, the backend, or how often the run was interrupted and resumed.

``generate(..., resume=True)`` skips the shards already in ``OUT.h5.parts/`` (after checking that they
were made from the same manifest, overrides, package version and device, recorded in ``plan.json``).

:class:`Simulator` is also the API for making shots in memory (e.g. to stream them into training).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backend import resolve_device
from .cxi import CXIWriter, ShotLabels, labels_block, write_shard
from .errors import ConfigError, OutputFileError, SpiError, one_line_warnings, os_error_message
from .manifest import Manifest, ParticleSpec, load_manifest, parse_manifest
from .noise import apply_detector, output_dtype, output_units, prepare_effects, pulse_scale

ProgressCallback = Callable[[int], None]
"""Called with the number of shots just finished."""

DASK_CONNECT_TIMEOUT = "20s"
"""How long to try to reach a Dask scheduler given by address."""


# ----------------------------------------------------------------------------------------------
# Random streams


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
# Building the physics objects from a manifest


def build_beam(manifest: Manifest) -> Any:
    """The :class:`spisim.beam.Beam` of a manifest (a peak ``fluence`` is turned into photons per pulse)."""
    from .beam import Beam

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


def build_detector(manifest: Manifest) -> Any:
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


def _unbinned_detector(manifest: Manifest) -> Any:
    from .detector import Detector

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
) -> Any:
    """A scene body (:class:`spisim.scene.AtomicBody` or :class:`~spisim.scene.ContinuumBody`) for a particle.

    ``q_max`` (Å⁻¹) is the largest |q| of the detector; an atomistic body's volume reaches ``q_max`` times
    the particle's largest stretch (``p.max_stretch``: size factor and stretch lengthen the particle-frame q).
    ``store``: folder that keeps built reciprocal volumes for other processes (see ``AtomicBody``).
    """
    from .particles import make_particle
    from .scene import AtomicBody, ContinuumBody

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
        from .structure import load_structure

        source = manifest.structure_source(str(p.structure), f"{where}.structure")
        assembly = None if p.assembly.lower() == "none" else p.assembly
        atoms = load_structure(source, assembly=assembly, keep_waters=p.keep_waters, keep_hydrogens=p.keep_hydrogens)
        key = f"{p.label}:{source}:{p.assembly}:{p.keep_waters}:{p.keep_hydrogens}"
    if p.max_stretch != 1.0:
        q_max = q_max * p.max_stretch
    return AtomicBody(atoms, key, photon_energy_ev, q_max, method=sc.method, anomalous=sc.anomalous, device=device,
                      store=store)


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
        noise = self.spec.noise
        shadow = np.zeros(self.shape, bool)
        if noise.beamstop > 0:
            shadow = det.with_beamstop(noise.beamstop).mask & ~det.mask
        template = None
        if noise.background.kind == "template":
            template = manifest.read_array(str(noise.background.template), "noise.background.template",
                                           BACKGROUND_DATASET)
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
        from .scene import Kind, PatternModel, SceneModel, alias_distance

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
        self._scene_model = SceneModel(probs, particles, molecules, spec.multi, spec.unintended,
                                       self.beam.sample_position, names)
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
        scale = pulse_scale(jitter_rng, self.spec.noise.jitter)
        sample, fluence = self._pattern.render(scene, scale)
        if self.oversample == 1:
            photons = self._xp.zeros(self.shape)
            photons[self._covered_dev] = sample
        else:  # sum the sub-pixels of each pixel: the integral over its solid angle (on the device with CuPy)
            from .detector.binning import bin_sum

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
        bg = self.spec.noise.background
        if bg.jitter > 0:  # drawn after the pulse scale, from the same stream: nothing else moves
            background = background * pulse_scale(streams[1], bg.jitter)
        bg_total = float(background[valid].sum())
        noise_seq = streams[2]
        if xp is np:
            rng = np.random.default_rng(noise_seq)
        else:
            rng = xp.random.Generator(xp.random.XORWOW(int(noise_seq.generate_state(1, np.uint64)[0])))
        frame = apply_detector(photons + background, self.spec.noise, eff, rng, self.dtype)
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


# ----------------------------------------------------------------------------------------------
# Shards


@dataclass(frozen=True)
class Plan:
    """How a dataset is cut into shards."""

    n_shots: int
    shard_size: int

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_shots / self.shard_size)

    def bounds(self, shard: int) -> tuple[int, int]:
        """(first shot, one past the last) of ``shard``."""
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.n_shots)


def shard_name(shard: int) -> str:
    return f"shard-{shard:06d}.h5"


def parts_dir(out: str | Path) -> Path:
    """Folder of the shards of ``out``: ``OUT.h5.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _fingerprint(manifest: Manifest, device: str, compression: str) -> str:
    text = json.dumps([manifest.text, manifest.overrides, manifest.source, __version__, device, compression])
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_shard(sim: Simulator, plan: Plan, shard: int, folder: Path, compression: str,
               progress: ProgressCallback | None = None) -> Path:
    """Simulate one shard and write it to ``folder`` (temporary name, then renamed); returns its path."""
    start, stop = plan.bounds(shard)
    frames, labels = sim.shots(start, stop, progress)
    final = folder / shard_name(shard)
    tmp = folder / f"{final.name}.tmp.{os.getpid()}"
    try:
        write_shard(tmp, start, frames, labels_block(labels, sim.spec.max_particles), compression=compression,
                    units=sim.units)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final


# Per-process cache of simulators (worker processes and Dask workers build theirs once).
_SIMULATORS: dict[str, Simulator] = {}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to make shards (picklable, small)."""

    text: str
    source: str
    base_dir: str | None
    overrides: dict
    device: str
    folder: str
    compression: str
    cwd: str

    @property
    def volume_store(self) -> Path:
        return Path(self.folder) / "volumes"

    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.text, self.source, self.overrides, self.device]).encode()).hexdigest()

    def simulator(self) -> Simulator:
        k = self.key()
        if k not in _SIMULATORS:
            manifest = parse_manifest(self.text, source=self.source,
                                      base_dir=Path(self.base_dir) if self.base_dir else None, overrides=self.overrides)
            with _chdir(self.cwd):
                _SIMULATORS[k] = Simulator(manifest, self.device, self.volume_store).prepare()
        return _SIMULATORS[k]


@contextlib.contextmanager
def _chdir(path: str):  # noqa: ANN202
    """Run in ``path`` (the folder the run was started from, so relative paths resolve alike), if it exists."""
    old = os.getcwd()
    moved = os.path.isdir(path)
    if moved:
        os.chdir(path)
    try:
        yield
    finally:
        if moved:
            os.chdir(old)


def run_shard(job: Job, shard: int) -> int:
    """Worker entry point: make shard ``shard`` of ``job``; returns the number of shots written."""
    sim = job.simulator()
    plan = Plan(sim.spec.shots, sim.spec.output.shard_size)
    make_shard(sim, plan, shard, Path(job.folder), job.compression)
    start, stop = plan.bounds(shard)
    return stop - start


def _pool_init(threads: int) -> None:
    """Share the cores among worker processes (before numba and OpenMP start their thread pools)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    one_line_warnings()


# ----------------------------------------------------------------------------------------------
# The whole run


def check_output(out: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """SpiError unless a run may write ``out`` (an existing file or unfinished shards need a flag).

    Checked before any work: the name is a file name, its folder exists and can be written.
    """
    given, out = str(out), Path(out)
    if not out.name or out.name in (".", "..") or given.endswith(("/", os.sep)):
        raise OutputFileError(f"output {given!r} is not a file name (e.g. -o run.h5)")
    if out.is_dir():
        raise OutputFileError(f"output {out} is a folder: give a file name such as {out / 'run.h5'}")
    check_writable_folder(out.parent)
    folder = parts_dir(out)
    if folder.exists() and _locked_by_another(folder):
        raise SpiError(f"another spi simulate is writing {folder}: wait for it or stop it first")
    if out.exists() and not overwrite:
        if resume and not folder.exists():
            raise SpiError(f"{out} is already complete: nothing to resume (use --overwrite to make it again)")
        if not resume:
            raise SpiError(f"{out} exists: use --overwrite to replace it")
    if folder.exists() and not resume and not overwrite:
        n = len(finished_shards(folder))
        raise SpiError(f"{folder} holds an unfinished run ({n} finished shard{'s' if n != 1 else ''}): add --resume "
                       f"to continue it, or --overwrite to start again")


def check_writable_folder(folder: str | Path) -> None:
    """OutputFileError unless ``folder`` exists and this process may create files in it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputFileError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(folder) else "permission denied"
        raise OutputFileError(f"cannot write in output folder {folder}: {reason}")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # pragma: no cover - not on POSIX
        return False


def finished_shards(folder: str | Path) -> list[Path]:
    """The finished shard files in a parts folder (none when it does not exist)."""
    folder = Path(folder)
    return sorted(folder.glob("shard-*.h5")) if folder.is_dir() else []


def _discard_if_nothing_kept(folder: Path) -> None:
    """Remove a parts folder that holds no finished shard and no built volume (nothing worth resuming)."""
    volumes = folder / "volumes"
    if finished_shards(folder) or (volumes.is_dir() and any(volumes.iterdir())):
        return
    shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class RunResult:
    """What :func:`generate` did."""

    path: Path
    n_shots: int
    shards_made: int
    shards_reused: int
    seconds: float


def generate(
    manifest: Manifest | str | Path | None,
    out: str | Path,
    *,
    workers: int = 1,
    backend: str = "process",
    scheduler: str | None = None,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    compression: str | None = None,
    progress: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    _fail_after_shards: int | None = None,
) -> RunResult:
    """Simulate the dataset of ``manifest`` into the CXI file ``out``.

    Args:
        manifest: a :class:`Manifest`, a manifest path, or None for the built-in default.
        out: the output file (``.h5``); shards go to ``OUT.h5.parts/`` meanwhile.
        workers: processes that make shards (1: this process).
        backend: ``process`` (a local process pool) or ``dask`` (a ``LocalCluster`` of ``workers``
            processes, or the cluster at ``scheduler``).
        scheduler: address of a running Dask scheduler (implies ``backend='dask'``); the workers must
            see the output folder.
        device: ``cpu``, ``cuda`` or ``auto``.
        resume: continue an interrupted run, keeping its finished shards.
        overwrite: replace an existing ``out`` and discard old shards.
        compression: overrides ``output.compression``.
        progress: called with the number of shots finished since the last call.
        on_start: called once with (shots to make now, shots already done).
        _fail_after_shards: testing hook: raise after that many new shards (simulates a crash).

    Returns:
        A :class:`RunResult`. Raises :class:`SpiError` subclasses for anything the user can fix.
    """
    t0 = time.perf_counter()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    out = Path(out)
    if scheduler:
        backend = "dask"
    if backend not in ("process", "dask"):
        raise ConfigError(f"unknown backend {backend!r}: use process or dask")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    check_output(out, resume=resume, overwrite=overwrite)
    folder = parts_dir(out)

    device = resolve_device(device)
    spec = manifest.spec
    compression = compression or spec.output.compression
    from .cxi import compression_options

    compression_options(compression)  # validates the name
    plan = Plan(spec.shots, spec.output.shard_size)
    fp = _fingerprint(manifest, device, compression)
    try:
        folder.mkdir(exist_ok=True)
        with _exclusive(folder):  # held from here on: a second run, --overwrite or not, is refused
            if not resume:
                _clear_parts(folder)
            try:
                return _run(manifest, out, folder, plan, fp, device, compression, workers, backend, scheduler,
                            progress, on_start, _fail_after_shards, t0)
            except BaseException:
                _discard_if_nothing_kept(folder)  # a failed start leaves no folder that asks for --resume
                raise
    except OSError as exc:  # the file system refused (read-only, full, quota): one line, not a traceback
        raise OutputFileError(f"writing {out} failed: {os_error_message(exc)}") from None


LOCK_NAME = "lock"
"""File in a parts folder that a running ``spi simulate`` holds an exclusive lock on."""


def _locked_by_another(folder: Path) -> bool:
    """True when another process holds the lock of a parts folder (a run is writing it now)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        return False
    path = folder / LOCK_NAME
    if not path.is_file():
        return False
    try:
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _clear_parts(folder: Path) -> None:
    """Empty a parts folder for a fresh run, keeping the lock file this process holds."""
    for entry in folder.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def _exclusive(folder: Path):  # noqa: ANN202
    """Hold an exclusive lock on ``folder`` so that two runs never write the same shards."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        yield
        return
    with open(folder / LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SpiError(f"another spi simulate is writing {folder}: wait for it or stop it first") from None
        yield


def _run(manifest: Manifest, out: Path, folder: Path, plan: Plan, fp: str, device: str, compression: str,
         workers: int, backend: str, scheduler: str | None, progress: ProgressCallback | None,
         on_start: Callable[[int, int], None] | None, fail_after: int | None, t0: float) -> RunResult:
    plan_file = folder / "plan.json"
    if plan_file.exists():
        recorded = json.loads(plan_file.read_text())
        if recorded.get("fingerprint") != fp:
            raise SpiError(f"{folder} was made from another manifest, seed, shot count, compression, device or "
                           f"package version: remove it or use --overwrite")
    else:
        _atomic_write_text(plan_file, json.dumps({"fingerprint": fp, "shots": plan.n_shots,
                                                  "shard_size": plan.shard_size, "version": __version__}))
    for stale in folder.glob("*.tmp.*"):
        stale.unlink()
    done = {s for s in range(plan.n_shards) if (folder / shard_name(s)).is_file()}
    todo = [s for s in range(plan.n_shards) if s not in done]
    shots_done = sum(plan.bounds(s)[1] - plan.bounds(s)[0] for s in done)
    if on_start is not None:
        on_start(plan.n_shots - shots_done, shots_done)

    job = Job(manifest.text, manifest.source, str(manifest.base_dir) if manifest.base_dir else None,
              manifest.overrides, device, str(folder), compression, os.getcwd())
    sim = Simulator(manifest, device, job.volume_store)
    if todo:
        sim.prepare()  # loads the particles and builds (or loads) their volumes once, for every worker
        if backend == "dask":
            _run_dask(job, todo, plan, workers, scheduler, progress, fail_after)
        elif workers == 1 or len(todo) == 1:
            for n, shard in enumerate(todo):
                if fail_after is not None and n >= fail_after:
                    raise RuntimeError(f"injected failure after {n} shards")
                make_shard(sim, plan, shard, folder, compression, progress)
        else:
            _run_pool(job, todo, plan, workers, progress, fail_after)

    tmp = folder / f"joined.h5.tmp.{os.getpid()}"
    writer = sim.writer(tmp, plan.n_shots, compression)
    try:
        for shard in range(plan.n_shards):
            writer.copy_shard(folder / shard_name(shard))
    finally:
        writer.close()
    os.replace(tmp, out)
    shutil.rmtree(folder)
    return RunResult(out, plan.n_shots, len(todo), len(done), time.perf_counter() - t0)


class _Tally:
    """Counts shards finished by workers: reports their shots to ``progress``; the testing hook fails on cue."""

    def __init__(self, progress: ProgressCallback | None, fail_after: int | None) -> None:
        self.progress, self.fail_after, self.finished = progress, fail_after, 0

    def __call__(self, shots: int) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress(shots)
        if self.fail_after is not None and self.finished >= self.fail_after:
            raise RuntimeError(f"injected failure after {self.finished} shards")


def _run_pool(job: Job, todo: Sequence[int], plan: Plan, workers: int, progress: ProgressCallback | None,
              fail_after: int | None) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    n = min(workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // n)
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pool_init, initargs=(threads,)) as pool:
        pending = {pool.submit(run_shard, job, s): s for s in todo}
        tally = _Tally(progress, fail_after)
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    pending.pop(fut)
                    tally(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _run_dask(job: Job, todo: Sequence[int], plan: Plan, workers: int, scheduler: str | None,
              progress: ProgressCallback | None, fail_after: int | None) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise ConfigError("the dask backend needs dask[distributed]: pip install 'dask[distributed]'") from None
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout=DASK_CONNECT_TIMEOUT))
            except OSError as exc:
                raise SpiError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None, silence_logs=40))
            client = stack.enter_context(Client(cluster))
        futures = [client.submit(run_shard, job, s, key=f"spi-shard-{job.key()[:12]}-{s}", pure=False) for s in todo]
        tally = _Tally(progress, fail_after)
        try:
            for fut in as_completed(futures):
                tally(fut.result())
        except BaseException:
            client.cancel(futures)
            raise
