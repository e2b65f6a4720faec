"""Read and write SPI datasets in the CXI layout (see ``docs/data-format.md``).

:class:`CXIWriter` writes shots in index order into one HDF5 file; :class:`CXIReader` gives random
access to frames, labels and geometry of simulated and real files.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .constants import EV
from .errors import InputFileError

HDF5_SUFFIXES: tuple[str, ...] = (".h5", ".hdf5", ".hdf", ".cxi", ".nxs")
"""File suffixes read as HDF5 (CXI) files: datasets named in manifests, geometry files, runs."""

HIT_TYPES: tuple[str, ...] = ("no_hit", "single", "multi", "unintended")
"""Class names in code order: ``HIT_TYPES[code]``."""

NOT_SINGLE = "not_single"
"""Class of a shot labelled only as "not a single hit" (a run labelled single vs rest)."""

LABEL_CLASSES: tuple[str, ...] = (*HIT_TYPES, NOT_SINGLE)
"""Every class name a label may carry: the four hit types, then :data:`NOT_SINGLE`."""

DATA_PATH = "/entry_1/data_1/data"
DETECTOR_PATH = "/entry_1/instrument_1/detector_1"
SOURCE_PATH = "/entry_1/instrument_1/source_1"
LABELS_PATH = "/entry_1/labels"


def compression_options(name: str | None) -> dict:
    """h5py ``create_dataset`` keyword arguments for a compression name.

    ``None``/``"none"``, ``"gzip"`` (level 4, with shuffle), ``"lz4"``, ``"zstd"`` or ``"bitshuffle"``
    (the last three through hdf5plugin).
    """
    if name in (None, "none"):
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    import hdf5plugin

    if name == "lz4":
        return dict(hdf5plugin.LZ4())
    if name == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3))
    if name == "bitshuffle":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    from .errors import ConfigError

    raise ConfigError(f"unknown compression {name!r}: use none, gzip, lz4, zstd or bitshuffle")


@dataclass(frozen=True)
class ShotLabels:
    """Ground truth of one shot (all arrays padded to the file's P particles by the writer).

    Attributes:
        hit_type: class code, index into :data:`HIT_TYPES`.
        structure: (n,) int, index into the file's structure names, one per particle.
        orientation: (n, 4) unit quaternions (w, x, y, z).
        position: (n, 3) m, relative to the focus centre.
        fluence: photons/m² at the (first) particle.
        total_photons: expected photons on unmasked pixels, before detector effects.
        pulse_scale: pulse energy relative to nominal.
        background_photons: expected background photons on unmasked pixels.
        scale: (n,) size factor s of each particle (dimensionless); None: 1 for every particle.
        aspect: (n,) stretch a of each particle along its own z (dimensionless); None: 1 for every particle.
    """

    hit_type: int
    structure: np.ndarray
    orientation: np.ndarray
    position: np.ndarray
    fluence: float
    total_photons: float
    pulse_scale: float = 1.0
    background_photons: float = 0.0
    scale: np.ndarray | None = None
    aspect: np.ndarray | None = None

    @property
    def n_particles(self) -> int:
        return int(len(self.structure))


LABEL_FIELDS: dict[str, tuple[str, tuple[int, ...], object]] = {
    "hit_type": ("i1", (), -1),
    "n_particles": ("i2", (), 0),
    "structure": ("i2", ("P",), -1),
    "orientation": ("f8", ("P", 4), np.nan),
    "position": ("f8", ("P", 3), np.nan),
    "fluence": ("f8", (), 0.0),
    "total_photons": ("f8", (), 0.0),
    "pulse_scale": ("f8", (), 0.0),
    "background_photons": ("f8", (), 0.0),
    "scale": ("f8", ("P",), np.nan),
    "aspect": ("f8", ("P",), np.nan),
}
"""Datasets under ``/entry_1/labels``: name -> (dtype, trailing shape with "P" for max particles, fill)."""


def _label_shape(n: int, trailing: tuple, max_particles: int) -> tuple[int, ...]:
    return (n, *(max_particles if d == "P" else d for d in trailing))


def labels_block(labels: Sequence[ShotLabels], max_particles: int) -> dict[str, np.ndarray]:
    """Label arrays of consecutive shots, padded to ``max_particles`` as in the file (see :data:`LABEL_FIELDS`)."""
    n = len(labels)
    out = {
        name: np.full(_label_shape(n, trailing, max_particles), fill, dtype=dtype)
        for name, (dtype, trailing, fill) in LABEL_FIELDS.items()
    }
    for i, lab in enumerate(labels):
        k = lab.n_particles
        if k > max_particles:
            raise ValueError(f"a shot has {k} particles, more than {max_particles}")
        out["hit_type"][i] = lab.hit_type
        out["n_particles"][i] = k
        if k:
            out["structure"][i, :k] = lab.structure
            out["orientation"][i, :k] = lab.orientation
            out["position"][i, :k] = lab.position
            out["scale"][i, :k] = 1.0 if lab.scale is None else lab.scale
            out["aspect"][i, :k] = 1.0 if lab.aspect is None else lab.aspect
        out["fluence"][i] = lab.fluence
        out["total_photons"][i] = lab.total_photons
        out["pulse_scale"][i] = lab.pulse_scale
        out["background_photons"][i] = lab.background_photons
    return out


SHARD_DATA = "data"
SHARD_LABELS = "labels"


def write_shard(
    path: str | Path,
    start: int,
    frames: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    compression: str | None,
    units: str,
) -> None:
    """Write consecutive shots ``start ..`` into a shard file (frames (n, M, SS, FS), label arrays (n, ...)).

    The frame dataset has the chunking and filters of the final file, so :meth:`CXIWriter.copy_shard`
    can copy its compressed chunks as they are.
    """
    frames = np.asarray(frames)
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        f.attrs["start"] = int(start)
        f.attrs["count"] = int(frames.shape[0])
        d = f.create_dataset(SHARD_DATA, data=frames, chunks=(1, *frames.shape[1:]), **compression_options(compression))
        d.attrs["units"] = units
        g = f.create_group(SHARD_LABELS)
        for name, arr in labels.items():
            g.create_dataset(name, data=arr)


def create_frames(
    f: h5py.File,
    n_shots: int,
    frame_shape: Sequence[int],
    *,
    dtype: str = "float32",
    units: str = "photons",
    compression: str | None = "gzip",
    attrs: dict | None = None,
) -> h5py.Dataset:
    """Start a file of the CXI layout: ``/cxi_version``, root ``attrs`` with ``spi_complete`` false, and the
    empty frame dataset ``/entry_1/data_1/data`` (n_shots, M, SS, FS), one shot per chunk, attribute ``units``.

    Shared by :class:`CXIWriter` (simulated files) and :mod:`spisim.realrun` (imported runs).
    """
    shape = tuple(int(n) for n in frame_shape)
    f.create_dataset("cxi_version", data=150)
    for key, value in (attrs or {}).items():
        f.attrs[key] = value
    f.attrs["spi_complete"] = False
    data = f.create_dataset(DATA_PATH, shape=(int(n_shots), *shape), dtype=dtype, chunks=(1, *shape),
                            **compression_options(compression))
    data.attrs["units"] = units
    return data


def write_instrument(
    f: h5py.File,
    *,
    mask: np.ndarray,
    pixel_position: np.ndarray | None = None,
    solid_angle: np.ndarray | None = None,
    photon_energy_ev: float | None = None,
    pulse_energy_j: float = float("nan"),
) -> None:
    """Write ``/entry_1/instrument_1``: the detector (soft link to the frames, pixel_position, solid_angle,
    mask, distance) and the source (energy, pulse_energy); the one place this layout is written.

    Args:
        f: the open file (its frame dataset made by :func:`create_frames`).
        mask: (M, SS, FS) bool or int, non-zero = bad; stored as uint8.
        pixel_position: (M, SS, FS, 3) m, or None for a run without geometry (then no solid angle or distance).
        solid_angle: (M, SS, FS) sr, with ``pixel_position``.
        photon_energy_ev: eV, or None when unknown (no ``energy`` dataset).
        pulse_energy_j: J; NaN when unknown (real runs).
    """
    det = f.require_group(DETECTOR_PATH)
    det["data"] = h5py.SoftLink(DATA_PATH)
    packed = {"compression": "gzip", "shuffle": True}  # geometry is smooth: it shrinks several times
    if pixel_position is not None:
        det.create_dataset("pixel_position", data=np.asarray(pixel_position, dtype=np.float64), **packed)
    if solid_angle is not None:
        det.create_dataset("solid_angle", data=np.asarray(solid_angle, dtype=np.float64), **packed)
    det.create_dataset("mask", data=(np.asarray(mask) != 0).astype(np.uint8), **packed)
    if pixel_position is not None:
        det.create_dataset("distance", data=float(np.nanmean(np.asarray(pixel_position)[..., 2])))
    src = f.require_group(SOURCE_PATH)
    if photon_energy_ev is not None:
        src.create_dataset("energy", data=float(photon_energy_ev) * EV)
        src["energy"].attrs["photon_energy_ev"] = float(photon_energy_ev)
    src.create_dataset("pulse_energy", data=float(pulse_energy_j))


def _gzip_shuffle_chunk(frame: np.ndarray, level: int) -> bytes:
    """The bytes HDF5 stores for one chunk under the shuffle + deflate filters (zlib frees the GIL)."""
    itemsize = frame.dtype.itemsize
    shuffled = np.ascontiguousarray(frame).view(np.uint8).reshape(-1, itemsize).T.tobytes()
    return zlib.compress(shuffled, level)


class FrameBlockWriter:
    """Writes blocks of frames into a one-frame-per-chunk dataset made by :func:`create_frames`.

    With gzip (:func:`compression_options` ``"gzip"``: shuffle, then deflate level 4) the chunks are
    filtered by ``threads`` worker threads (zlib releases the GIL) and stored with ``write_direct_chunk``;
    a block's chunks are compressed while the caller reads the next block, so compression, the slowest
    step of an import, runs on every core. The stored bytes are exactly those HDF5's own filters make.
    Other compressions go through h5py as usual.

    Args:
        data: the frame dataset (N, M, SS, FS), chunks (1, M, SS, FS).
        compression: the name it was made with.
        threads: worker threads (default: the CPUs this process may use).
    """

    def __init__(self, data: h5py.Dataset, compression: str | None, threads: int | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.data = data
        opts = compression_options(compression)
        self.direct = (compression == "gzip" and data.chunks == (1, *data.shape[1:])
                       and opts.get("compression") == "gzip" and bool(opts.get("shuffle")))
        self.level = int(opts.get("compression_opts", 4)) if self.direct else 0
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max(1, int(threads))) if self.direct else None
        self._pending: tuple[int, list] | None = None

    def write(self, start: int, frames: np.ndarray) -> None:
        """Frames ``start .. start + n − 1`` (n, M, SS, FS); stored by the next :meth:`write` or :meth:`flush`."""
        frames = np.asarray(frames, dtype=self.data.dtype)
        if self._pool is None:
            self.data[start : start + len(frames)] = frames
            return
        self.flush()
        self._pending = (start, [self._pool.submit(_gzip_shuffle_chunk, f, self.level) for f in frames])

    def flush(self) -> None:
        """Store the chunks still being compressed."""
        if self._pending is None:
            return
        start, futures = self._pending
        self._pending = None
        zeros = (0,) * (self.data.ndim - 1)
        for i, fut in enumerate(futures):
            self.data.id.write_direct_chunk((start + i, *zeros), fut.result(), 0)

    def close(self) -> None:
        """Flush, and stop the worker threads."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> FrameBlockWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self._pending = None  # nothing more is stored after an error
        self.close()


class CXIWriter:
    """Write a dataset shot by shot, in index order, into ``path``.

    Args:
        path: output file (created; an existing file is overwritten).
        n_shots: N.
        pixel_position: (M, SS, FS, 3) m.
        solid_angle: (M, SS, FS) sr.
        mask: (M, SS, FS) bool or int, non-zero = bad.
        photon_energy_ev: eV.
        pulse_energy_j: J (nominal).
        structures: names of the particles that labels index.
        max_particles: P, the width of the per-particle label arrays.
        dtype: ``float32`` (photons) or ``int32`` (ADU).
        units: ``photons`` or ``adu``.
        compression: see :func:`compression_options`.
        attrs: extra root attributes (``spi_version``, ``spi_manifest``, ``spi_seed`` ...).
    """

    def __init__(
        self,
        path: str | Path,
        n_shots: int,
        *,
        pixel_position: np.ndarray,
        solid_angle: np.ndarray,
        mask: np.ndarray,
        photon_energy_ev: float,
        pulse_energy_j: float,
        structures: Sequence[str],
        max_particles: int,
        dtype: str = "float32",
        units: str = "photons",
        compression: str | None = "gzip",
        attrs: dict | None = None,
    ) -> None:
        shape = tuple(np.shape(mask))
        self.n_shots = int(n_shots)
        self.max_particles = int(max_particles)
        self._next = 0
        self.file = h5py.File(path, "w", libver=("earliest", "v110"))
        f = self.file
        self.data = create_frames(f, self.n_shots, shape, dtype=dtype, units=units, compression=compression,
                                  attrs=attrs)
        write_instrument(f, mask=mask, pixel_position=pixel_position, solid_angle=solid_angle,
                         photon_energy_ev=photon_energy_ev, pulse_energy_j=pulse_energy_j)
        lab = f.require_group(LABELS_PATH)
        lab.attrs["structures"] = json.dumps(list(structures))
        for name, (ltype, trailing, fill) in LABEL_FIELDS.items():
            shape_l = _label_shape(self.n_shots, trailing, self.max_particles)
            lab.create_dataset(name, shape=shape_l, dtype=ltype, fillvalue=fill)
        lab["hit_type"].attrs["names"] = json.dumps(list(HIT_TYPES))

    def write_shot(self, index: int, frame: np.ndarray, labels: ShotLabels) -> None:
        """Write shot ``index`` (must be the next one): ``frame`` (M, SS, FS)."""
        if index != self._next:
            raise ValueError(f"shots must be written in order: expected {self._next}, got {index}")
        if labels.n_particles > self.max_particles:
            raise ValueError(f"shot {index} has {labels.n_particles} particles, more than {self.max_particles}")
        self.data[index] = frame
        self.write_labels(index, labels_block([labels], self.max_particles))
        self._next += 1

    def write_labels(self, start: int, block: dict[str, np.ndarray]) -> None:
        """Label arrays (n, ...) of shots ``start .. start + n - 1`` (see :func:`labels_block`)."""
        lab = self.file[LABELS_PATH]
        for name, arr in block.items():
            lab[name][start : start + len(arr)] = arr

    def copy_shard(self, path: str | Path) -> int:
        """Append the shots of a shard file (written by :func:`write_shard`); returns how many.

        The shard must start at the next shot. Compressed frame chunks are copied as they are
        (``read_direct_chunk``/``write_direct_chunk``), so joining costs no recompression.
        """
        with h5py.File(path, "r") as f:
            start, count = int(f.attrs["start"]), int(f.attrs["count"])
            if start != self._next:
                raise ValueError(f"shard {path} starts at shot {start}, expected {self._next}")
            src = f[SHARD_DATA]
            if src.shape[1:] != self.data.shape[1:] or src.dtype != self.data.dtype:
                raise ValueError(f"shard {path} holds {src.dtype} {src.shape[1:]}, expected "
                                 f"{self.data.dtype} {self.data.shape[1:]}")
            zeros = (0,) * (src.ndim - 1)
            for i in range(count):
                filter_mask, chunk = src.id.read_direct_chunk((i, *zeros))
                self.data.id.write_direct_chunk((start + i, *zeros), chunk, filter_mask)
            self.write_labels(start, {name: f[SHARD_LABELS][name][()] for name in LABEL_FIELDS})
        self._next += count
        return count

    def close(self) -> None:
        """Mark the file complete when every shot was written, and close it."""
        if self.file.id.valid:
            self.file.attrs["spi_complete"] = self._next == self.n_shots
            self.file.close()

    def __enter__(self) -> CXIWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CXIReader:
    """Random access to the frames, labels and geometry of a CXI/HDF5 file.

    Frames come as (M, SS, FS) float32 arrays; files with 3-D data (N, SS, FS) get M = 1.
    Simulated files must be complete (``spi_complete``) unless ``allow_incomplete``.
    """

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False, data_path: str = DATA_PATH):
        self.path = Path(path)
        with contextlib.suppress(ImportError):  # registers the lz4, zstd and bitshuffle filters with h5py
            import hdf5plugin  # noqa: F401
        if not self.path.is_file():
            raise InputFileError(f"no such file: {self.path}")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputFileError(f"{self.path} is not a readable HDF5 file ({exc.__class__.__name__})") from None
        if data_path not in self.file:
            self.file.close()
            raise InputFileError(f"{self.path} has no dataset {data_path} (not a CXI file?)")
        complete = self.file.attrs.get("spi_complete", None)
        if complete is not None and not bool(complete) and not allow_incomplete:
            self.file.close()
            raise InputFileError(f"{self.path} is incomplete (an interrupted run?): resume it with --resume")
        self.data = self.file[data_path]
        if self.data.ndim not in (3, 4):
            raise InputFileError(f"{self.path}: {data_path} must be 3-D or 4-D, got shape {self.data.shape}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(M, SS, FS)."""
        s = self.data.shape[1:]
        return (1, *s) if len(s) == 2 else tuple(s)  # type: ignore[return-value]

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 (M, SS, FS)."""
        return np.asarray(self.data[index], dtype=np.float32).reshape(self.frame_shape)

    def frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames (len(indices), M, SS, FS) float32, in the order given."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx)
        out = np.empty((len(idx), *self.frame_shape), dtype=np.float32)
        if len(idx):
            uniq, inverse = np.unique(idx[order], return_inverse=True)
            block = np.asarray(self.data[uniq], dtype=np.float32).reshape(-1, *self.frame_shape)
            out[order] = block[inverse]
        return out

    @property
    def has_labels(self) -> bool:
        return f"{LABELS_PATH}/hit_type" in self.file

    @property
    def class_names(self) -> list[str]:
        """Class name of each code of ``hit_type`` (its ``names`` attribute); the four hit types without labels."""
        if not self.has_labels:
            return list(HIT_TYPES)
        raw = self.file[f"{LABELS_PATH}/hit_type"].attrs.get("names")
        if raw is None:
            raise InputFileError(f"{self.path}: {LABELS_PATH}/hit_type has no 'names' attribute (the class of each "
                                 "code): not a file of spi simulate or spi import, or damaged")
        try:
            names = json.loads(raw)
        except (TypeError, ValueError):
            raise InputFileError(f"{self.path}: the 'names' attribute of {LABELS_PATH}/hit_type is not a JSON list "
                                 "of class names") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputFileError(f"{self.path}: the 'names' attribute of {LABELS_PATH}/hit_type is not a JSON list "
                                 "of class names")
        return names

    @property
    def structure_names(self) -> list[str]:
        return json.loads(self.file[LABELS_PATH].attrs.get("structures", "[]")) if self.has_labels else []

    def labels(self, name: str = "hit_type") -> np.ndarray:
        """A label array, e.g. ``hit_type`` (N,), ``orientation`` (N, P, 4)."""
        key = f"{LABELS_PATH}/{name}"
        if key not in self.file:
            raise InputFileError(f"{self.path} has no labels {key}: supply a label file")
        return self.file[key][()]

    @property
    def hit_type(self) -> np.ndarray:
        """(N,) int class codes."""
        return self.labels("hit_type").astype(np.int64)

    def _detector(self, name: str) -> np.ndarray | None:
        key = f"{DETECTOR_PATH}/{name}"
        return self.file[key][()] if key in self.file else None

    @property
    def pixel_position(self) -> np.ndarray | None:
        """(M, SS, FS, 3) m, or None for files without geometry."""
        p = self._detector("pixel_position")
        return None if p is None else p.reshape(*self.frame_shape, 3)

    @property
    def solid_angle(self) -> np.ndarray | None:
        """(M, SS, FS) sr, or None."""
        s = self._detector("solid_angle")
        return None if s is None else s.reshape(self.frame_shape)

    @property
    def mask(self) -> np.ndarray:
        """(M, SS, FS) bool, True = bad (all False where the file has no mask)."""
        m = self._detector("mask")
        return np.zeros(self.frame_shape, bool) if m is None else (m.reshape(self.frame_shape) != 0)

    @property
    def photon_energy_ev(self) -> float | None:
        key = f"{SOURCE_PATH}/energy"
        return float(self.file[key][()]) / EV if key in self.file else None

    @property
    def units(self) -> str | None:
        """The frames' ``units`` attribute (``photons`` or ``adu``), or None where the file has none."""
        u = self.data.attrs.get("units")
        return None if u is None else (u.decode() if isinstance(u, bytes) else str(u))

    @property
    def gain(self) -> dict | None:
        """Gain facts of an imported run (attributes of the frames, see ``docs/data-format.md``), or None.

        Keys: ``adu_per_photon`` (the divisor applied, ADU/photon), ``adu_per_photon_sd`` (its standard
        error when estimated, else 0), ``adu_offset`` (zero-photon peak, ADU; NaN unless estimated),
        ``gain_source`` (``auto`` or ``given``).
        """
        a = self.data.attrs
        if "adu_per_photon" not in a:
            return None
        out = {k: float(a[k]) for k in ("adu_per_photon", "adu_per_photon_sd", "adu_offset") if k in a}
        src = a.get("gain_source", "given")
        out["gain_source"] = src.decode() if isinstance(src, bytes) else str(src)
        return out

    @property
    def read_noise_photons(self) -> float | None:
        """Read noise (photons, σ) estimated on import (``detector_1/read_noise_photons``), or None."""
        r = self._detector("read_noise_photons")
        return None if r is None else float(r)

    @property
    def import_provenance(self) -> dict | None:
        """The ``spi_import`` root attribute of a file written by ``spi import`` (JSON), or None."""
        raw = self.file.attrs.get("spi_import")
        return None if raw is None else json.loads(raw)

    @property
    def attrs(self) -> dict:
        """Root attributes (``spi_version``, ``spi_manifest``, ``spi_seed`` ...)."""
        return dict(self.file.attrs)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> CXIReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
