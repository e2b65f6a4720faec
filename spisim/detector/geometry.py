"""The :class:`Detector`: tiles in the lab frame plus the layout of the per-shot data array.

Coordinates are lab-frame (x, y, z) in metres: x horizontal, y vertical (up), z along the beam, the
interaction point (the particle) at the origin. The data of one shot is an array ``(modules, ss, fs)``
(the CXI layout); every pixel of it that a tile covers has a centre, a solid angle, a scattering vector
and a polarisation factor. Pixels of the data array that no tile covers are always masked.

Transforms (:meth:`Detector.with_distance`, :meth:`Detector.shifted`, :meth:`Detector.with_mask`, ...)
return new objects and never modify the original, as in EXtra-geom.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .assemble import AssemblyMap, build_assembly_map
from .binning import binned_geometry, check_factor, subdivided_geometry
from .crystfel import read_crystfel, write_crystfel
from .panels import GeometryFile, Panel, data_shape, mean_distance
from .pixelgrid import read_cxi_geometry
from .presets import is_preset_name, panels_from_extra_geom, preset_geometry, square_panels
from .psana import read_psana
from .readers import CXI_SUFFIXES, read_geometry
from .solid_angle import grid_solid_angles

__all__ = ["CXI_SUFFIXES", "POLARIZATION_KINDS", "Detector", "normalise_polarization"]

POLARIZATION_KINDS: tuple[str, ...] = ("horizontal", "vertical", "none")
"""Polarisation of the incident beam understood by :meth:`Detector.polarization_factor`."""

_POLARIZATION_ALIASES = {
    "horizontal": "horizontal",
    "x": "horizontal",
    "vertical": "vertical",
    "y": "vertical",
    "none": "none",
    "unpolarized": "none",
    "unpolarised": "none",
}


def normalise_polarization(kind: str) -> str:
    """Canonical polarisation name (one of :data:`POLARIZATION_KINDS`) for ``kind``; ConfigError if unknown."""
    key = str(kind).strip().lower()
    if key not in _POLARIZATION_ALIASES:
        raise ConfigError(f"unknown polarization {kind!r}: use horizontal, vertical or none")
    return _POLARIZATION_ALIASES[key]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


class Detector:
    """A pixel detector: rectangular tiles (:class:`Panel`) and the data layout ``(modules, ss, fs)``.

    Args:
        panels: the tiles; each knows its place in the data array (module, ss/fs offsets).
        shape: ``(modules, ss, fs)`` of one shot's data; inferred as the smallest array holding every
            tile when ``None``.
        mask: optional (modules, ss, fs) bool, True = bad pixel. Uncovered pixels are added.
        name: label (preset name or file name).
        metadata: free-form facts from the source (photon energy in a .geom file, ...).

    Raises:
        ConfigError: tiles outside or overlapping in the data array, non-finite or zero-size pixels,
            tiles at or behind the sample (z <= 0), or tiles seen edge-on from the sample.
    """

    def __init__(
        self,
        panels: Iterable[Panel],
        shape: Sequence[int] | None = None,
        *,
        mask: np.ndarray | None = None,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        panels = tuple(panels)
        if not panels:
            raise ConfigError("a detector needs at least one panel")
        for p in panels:
            if not isinstance(p, Panel):
                raise ConfigError(f"detector panels must be Panel objects, got {type(p).__name__}")
        if shape is None:
            shape = data_shape(panels)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"detector data shape must be (modules, ss, fs) of positive sizes, got {shape}")
        self._panels = panels
        self._shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.name = str(name)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._check_geometry()
        covered = self._coverage()
        if mask is None:
            user_mask = np.zeros(shape, dtype=bool)
        else:
            user_mask = np.asarray(mask)
            if user_mask.shape != shape:
                raise ConfigError(f"mask must have the detector data shape {shape}, got {user_mask.shape}")
            user_mask = user_mask.astype(bool)
        self._covered = _readonly(covered)
        self._mask = _readonly(user_mask | ~covered)
        self._assembly_cache: dict[float, AssemblyMap] = {}

    # ---- validation ---------------------------------------------------------------------------------
    def _check_geometry(self) -> None:
        m_max, ss_max, fs_max = self._shape
        for p in self._panels:
            label = f"panel {p.name!r}" if p.name else "a panel"
            if p.module >= m_max or p.ss_offset + p.n_ss > ss_max or p.fs_offset + p.n_fs > fs_max:
                raise ConfigError(
                    f"{label} (module {p.module}, ss {p.ss_offset}..{p.ss_offset + p.n_ss - 1}, "
                    f"fs {p.fs_offset}..{p.fs_offset + p.n_fs - 1}) lies outside the data shape {self._shape}"
                )
            corners = p.corners()
            z_min = float(corners[:, 2].min())
            if z_min <= 0:
                raise ConfigError(
                    f"{label} reaches z = {z_min:.4g} m: panels must lie downstream of the sample (z > 0)"
                )
            plane_distance = abs(float(np.dot(p.normal, p.corner)))
            if plane_distance <= 1e-9 * float(np.linalg.norm(corners, axis=1).max()):
                raise ConfigError(f"the plane of {label} passes through the sample: it is seen edge-on")

    def _coverage(self) -> np.ndarray:
        count = np.zeros(self._shape, dtype=np.int16)
        for p in self._panels:
            count[p.data_slice] += 1
        if count.max() > 1:
            m, ss, fs = np.argwhere(count > 1)[0]
            names = [
                p.name
                for p in self._panels
                if p.module == m
                and p.ss_offset <= ss < p.ss_offset + p.n_ss
                and p.fs_offset <= fs < p.fs_offset + p.n_fs
            ]
            raise ConfigError(f"panels {names} overlap in the data array at (module, ss, fs) = ({m}, {ss}, {fs})")
        return count == 1

    # ---- basic facts --------------------------------------------------------------------------------
    @property
    def panels(self) -> tuple[Panel, ...]:
        """The tiles (read-only tuple of :class:`Panel`)."""
        return self._panels

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(modules, ss, fs)``: the shape of one shot's data array."""
        return self._shape

    @property
    def covered(self) -> np.ndarray:
        """(M, SS, FS) bool, True where a tile covers the data pixel (read-only)."""
        return self._covered

    @property
    def mask(self) -> np.ndarray:
        """(M, SS, FS) bool, True = bad: uncovered pixels, beamstop, bad pixels and regions (read-only)."""
        return self._mask

    @property
    def n_pixels(self) -> int:
        """Number of physical pixels (data pixels covered by a tile)."""
        return int(sum(p.n_pixels for p in self._panels))

    @property
    def pixel_size(self) -> float:
        """Typical pixel edge (m): the median over tiles of sqrt(pixel area)."""
        return float(np.median([p.pixel_size for p in self._panels]))

    @property
    def distance(self) -> float:
        """Mean z (m) of all pixel centres: the sample-to-detector distance of a flat detector."""
        return mean_distance(self._panels)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the cached per-pixel arrays (they are rebuilt on demand), e.g. for Dask workers."""
        state = dict(self.__dict__)
        for key in ("pixel_positions", "_unit_directions", "_solid_angles"):
            state.pop(key, None)
        state["_assembly_cache"] = {}
        return state

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return (
            f"Detector({label}{len(self._panels)} panels, shape={self._shape}, "
            f"pixel_size={self.pixel_size:.4g} m, distance={self.distance:.4g} m)"
        )

    # ---- per-pixel geometry -------------------------------------------------------------------------
    @functools.cached_property
    def pixel_positions(self) -> np.ndarray:
        """(M, SS, FS, 3) float64 m, pixel centres; NaN where no tile covers the data pixel (read-only)."""
        pos = np.full((*self._shape, 3), np.nan)
        for p in self._panels:
            pos[p.data_slice] = p.pixel_centres()
        return _readonly(pos)

    @functools.cached_property
    def _unit_directions(self) -> np.ndarray:
        """(M, SS, FS, 3) unit vectors from the sample to pixel centres; (0, 0, 1) where uncovered."""
        pos = np.where(self._covered[..., None], self.pixel_positions, np.array([0.0, 0.0, 1.0]))
        return _readonly(pos / np.linalg.norm(pos, axis=-1, keepdims=True))

    @functools.cached_property
    def _solid_angles(self) -> np.ndarray:
        omega = np.zeros(self._shape)
        for p in self._panels:
            omega[p.data_slice] = grid_solid_angles(p.pixel_corner_grid())
        return _readonly(omega)

    def solid_angles(self) -> np.ndarray:
        """(M, SS, FS) sr, exact solid angle of each rectangular pixel seen from the sample; 0 if uncovered.

        Each pixel is split into two triangles whose solid angles are given by the Van Oosterom–Strackee
        formula, so large or strongly inclined pixels are exact (not A cosα / R²). Read-only.
        """
        return self._solid_angles

    def two_theta(self) -> np.ndarray:
        """(M, SS, FS) rad, scattering angle 2θ between the beam (+z) and each pixel centre; 0 if uncovered."""
        d = self._unit_directions
        return np.arctan2(np.hypot(d[..., 0], d[..., 1]), d[..., 2])

    def q_vectors(self, wavelength_angstrom: float) -> np.ndarray:
        """(M, SS, FS, 3) Å⁻¹, scattering vectors q = k_out − k_in at the pixel centres; 0 if uncovered.

        |k| = 2π/λ, k_in along +z, k_out towards the pixel centre from the origin, so |q| = 4π sin θ / λ.

        Args:
            wavelength_angstrom: λ (Å), > 0.
        """
        lam = float(wavelength_angstrom)
        if not (np.isfinite(lam) and lam > 0):
            raise ConfigError(f"wavelength must be a positive number of ångström, got {wavelength_angstrom!r}")
        k = 2.0 * np.pi / lam
        q = k * (self._unit_directions - np.array([0.0, 0.0, 1.0]))
        q[~self._covered] = 0.0
        return q

    def polarization_factor(self, kind: str = "horizontal") -> np.ndarray:
        """(M, SS, FS) polarisation factor P of each pixel (dimensionless); 0 if uncovered.

        horizontal: 1 − (k̂_out·x̂)²; vertical: 1 − (k̂_out·ŷ)²; none: (1 + cos² 2θ)/2.
        """
        d = self._unit_directions
        kind = normalise_polarization(kind)
        if kind == "horizontal":
            p = 1.0 - d[..., 0] ** 2
        elif kind == "vertical":
            p = 1.0 - d[..., 1] ** 2
        else:
            p = 0.5 * (1.0 + d[..., 2] ** 2)
        return np.where(self._covered, p, 0.0)

    # ---- transforms (new objects) -------------------------------------------------------------------
    def _user_mask(self) -> np.ndarray:
        return self._mask & self._covered

    def _new(self, panels: Iterable[Panel] | None = None, mask: np.ndarray | None = None) -> Detector:
        return type(self)(
            self._panels if panels is None else panels,
            self._shape,
            mask=self._user_mask() if mask is None else mask,
            name=self.name,
            metadata=self.metadata,
        )

    def with_mask(self, extra: np.ndarray) -> Detector:
        """A copy whose mask also includes ``extra`` (M, SS, FS) bool (True = bad)."""
        extra = np.asarray(extra)
        if extra.shape != self._shape:
            raise ConfigError(f"extra mask must have the detector data shape {self._shape}, got {extra.shape}")
        return self._new(mask=self._user_mask() | extra.astype(bool))

    def with_beamstop(self, radius_m: float) -> Detector:
        """A copy with pixels masked whose centre lies within ``radius_m`` (m) of the beam axis."""
        r = float(radius_m)
        if not (np.isfinite(r) and r >= 0):
            raise ConfigError(f"beamstop radius must be a length >= 0 in metres, got {radius_m!r}")
        pos = self.pixel_positions
        with np.errstate(invalid="ignore"):
            inside = np.hypot(pos[..., 0], pos[..., 1]) < r
        return self._new(mask=self._user_mask() | (inside & self._covered))

    def shifted(self, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> Detector:
        """A copy translated by (dx, dy, dz) m in the lab frame.

        Moving the detector by +dx moves the beam centre on the detector by −dx relative to its pixels.
        """
        shift = np.array([dx, dy, dz], dtype=np.float64)
        if not np.all(np.isfinite(shift)):
            raise ConfigError(f"detector shift must be finite, got {shift}")
        return self._new(panels=[p.offset(shift) for p in self._panels])

    def with_distance(self, distance_m: float) -> Detector:
        """A copy moved along z so that :attr:`distance` (mean pixel z) equals ``distance_m`` (m)."""
        d = float(distance_m)
        if not (np.isfinite(d) and d > 0):
            raise ConfigError(f"detector distance must be a positive length in metres, got {distance_m!r}")
        return self.shifted(0.0, 0.0, d - self.distance)

    def binned(self, n: int) -> Detector:
        """A copy with ``n × n`` pixels joined into one (pitch × n; see :mod:`.binning`); ``n`` = 1: itself."""
        if check_factor(n, "bin factor") == 1:
            return self
        return type(self).from_geometry(binned_geometry(self.description(), n))

    def subdivided(self, n: int) -> Detector:
        """A copy with every pixel split into ``n × n`` pixels of 1/n the pitch (see :mod:`.binning`); ``n`` = 1:
        itself."""
        if check_factor(n, "subdivision factor") == 1:
            return self
        return type(self).from_geometry(subdivided_geometry(self.description(), n))

    def rotated(self, matrix: np.ndarray, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Detector:
        """A copy rotated by the (3, 3) ``matrix`` about ``centre`` (3,) m (see :mod:`.panels` helpers)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.allclose(m @ m.T, np.eye(3), atol=1e-9):
            raise ConfigError("rotation must be an orthonormal (3, 3) matrix")
        return self._new(panels=[p.rotate(m, np.asarray(centre, dtype=np.float64)) for p in self._panels])

    # ---- assembly -----------------------------------------------------------------------------------
    def assembly_indices(self, pixel_size: float | None = None) -> AssemblyMap:
        """Reusable :class:`AssemblyMap` for images with pixels of ``pixel_size`` m (default: :attr:`pixel_size`).

        Cached per pixel size, so assembling many shots costs one sparse product each.
        """
        size = self.pixel_size if pixel_size is None else float(pixel_size)
        if size not in self._assembly_cache:
            self._assembly_cache[size] = build_assembly_map(self.pixel_positions, self._covered, size)
        return self._assembly_cache[size]

    def assemble(
        self, data: np.ndarray, *, pixel_size: float | None = None
    ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """Nearest-pixel assembly of ``data`` (..., M, SS, FS) into images (..., H, W) of the x–y plane.

        Returns:
            ``(image, extent)``: image rows run from +y (top) to −y, columns from −x to +x; values are
            sums of the detector pixels in each image pixel, NaN where there is none. ``extent`` is
            ``(x_left, x_right, y_bottom, y_top)`` m for ``imshow(image, extent=extent, origin="upper")``.
        """
        amap = self.assembly_indices(pixel_size)
        return amap.assemble(data), amap.extent

    def assembled_mask(self, pixel_size: float | None = None) -> np.ndarray:
        """(H, W) bool, True where the assembled image has no good detector pixel (gaps and masked areas)."""
        return self.assembly_indices(pixel_size).assemble_mask(self._mask)

    # ---- description and constructors ---------------------------------------------------------------
    def description(self) -> GeometryFile:
        """What this detector is made of: tiles, data shape, its own mask (without the uncovered pixels),
        metadata and name; ``Detector.from_geometry(d.description())`` equals ``d``."""
        return GeometryFile(panels=list(self._panels), shape=self._shape, mask=self._user_mask(),
                            metadata=dict(self.metadata), name=self.name)

    @classmethod
    def from_geometry(cls, geometry: GeometryFile) -> Detector:
        """The detector of a description (a reader's or a preset's :class:`GeometryFile`), checked."""
        return cls(geometry.panels, geometry.shape, mask=geometry.mask, name=geometry.name,
                   metadata=geometry.metadata)

    @classmethod
    def square(
        cls, n_pixels: int, pixel_size_m: float, distance_m: float, gap_m: float = 0.0, *, name: str = "square"
    ) -> Detector:
        """A flat square detector of n × n pixels centred on the beam, data shape (1, n, n).

        With ``gap_m`` > 0 it is split into an upper and a lower half (rows 0..n/2−1 and n/2..n−1) moved
        apart vertically so that a gap of ``gap_m`` m opens around the beam (n must then be even).
        Fast scan runs along +x, slow scan along −y (row 0 at the top).
        """
        return cls(square_panels(n_pixels, pixel_size_m, distance_m, gap_m), name=name)

    @classmethod
    def example(cls) -> Detector:
        """A tiny detector for tests of other modules: 64 × 64 pixels of 300 µm at 0.2 m."""
        return cls.square(64, 300e-6, 0.2, name="example")

    @classmethod
    def preset(cls, name: str, distance_m: float | None = None, **kw: Any) -> Detector:
        """A named detector: ``pnccd``, ``jungfrau4m``, ``epix10k2m``, ``agipd1m`` or ``square``.

        See :mod:`spisim.detector.presets` for the layouts, default distances and keyword options.
        """
        return cls.from_geometry(preset_geometry(name, distance_m, **kw))

    @classmethod
    def from_crystfel(cls, path: str | Path, *, clen_m: float | None = None) -> Detector:
        """Read a CrystFEL ``.geom`` file (see :mod:`spisim.detector.crystfel`).

        Args:
            path: the geometry file.
            clen_m: camera length (m) to use when the file takes ``clen`` from a data file (an HDF5 path);
                such a ``clen`` counts as 0 otherwise (with a warning), leaving ``coffset`` as the z.
        """
        return cls.from_geometry(read_crystfel(path, clen_m=clen_m))

    @classmethod
    def from_psana(cls, path: str | Path) -> Detector:
        """Read a psana geometry ``.data`` file without psana (see :mod:`spisim.detector.psana`)."""
        return cls.from_geometry(read_psana(path))

    @classmethod
    def from_cxi(cls, path: str | Path) -> Detector:
        """The detector of a CXI/HDF5 file: tiles fitted to its ``pixel_position``, with its ``mask``.

        Files written by ``spi simulate`` and ``spi import`` qualify (see :mod:`spisim.detector.pixelgrid`).
        """
        return cls.from_geometry(read_cxi_geometry(path))

    @classmethod
    def from_extra_geom(cls, geom: Any, distance_m: float, *, name: str | None = None) -> Detector:
        """Convert an EXtra-geom geometry object (z of its tiles + ``distance_m``) into a Detector."""
        panels, shape = panels_from_extra_geom(geom, distance_m)
        return cls(panels, shape, name=name or type(geom).__name__)

    @classmethod
    def load(cls, path: str | Path, *, clen_m: float | None = None) -> Detector:
        """Read a geometry file, choosing the reader by suffix: ``.geom`` (CrystFEL), ``.data`` (psana), or
        ``.h5``/``.cxi``/``.hdf5`` (the pixel positions and mask of a CXI file, :meth:`from_cxi`); see
        :func:`spisim.detector.readers.read_geometry`.

        Args:
            path: the file.
            clen_m: for CrystFEL files whose ``clen`` is a data-file location (see :meth:`from_crystfel`).

        Raises:
            InputFileError: the file does not exist or cannot be read.
            ConfigError: unknown suffix or an impossible geometry.
        """
        return cls.from_geometry(read_geometry(path, clen_m=clen_m))

    @classmethod
    def from_spec(cls, spec: str | Path | Mapping[str, Any]) -> Detector:
        """A detector from a manifest/CLI description.

        ``spec`` is a preset name (``"pnccd"``), a geometry file path, or a mapping with exactly one of
        ``preset`` / ``file`` and optionally ``distance_m`` (m), ``shift_m`` ([dx, dy, dz] m, applied after
        the distance), ``beamstop_radius_m`` (m), ``clen_m`` (CrystFEL files) and the preset's options
        (``gap_m``, ``n_pixels``, ``pixel_size_m``, ``quad_pos``).

        Raises:
            ConfigError: unknown keys or values; InputFileError: a missing file.
        """
        if isinstance(spec, (str, Path)):
            text = str(spec)
            return cls.preset(text) if is_preset_name(text) else cls.load(text)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"detector must be a preset name, a file or a mapping, got {type(spec).__name__}")
        spec = dict(spec)
        common = {"preset", "file", "distance_m", "shift_m", "beamstop_radius_m", "clen_m"}
        if ("preset" in spec) == ("file" in spec):
            raise ConfigError("detector needs exactly one of 'preset' and 'file'")
        distance = spec.get("distance_m")
        if "preset" in spec:
            if "clen_m" in spec:
                raise ConfigError("detector option 'clen_m' applies to CrystFEL files, not presets")
            options = {k: v for k, v in spec.items() if k not in common}
            det = cls.preset(spec["preset"], distance, **options)
        else:
            extra = set(spec) - common
            if extra:
                raise ConfigError(f"unknown detector option(s) {sorted(extra)} for a geometry file")
            det = cls.load(spec["file"], clen_m=spec.get("clen_m"))
            if distance is not None:
                det = det.with_distance(distance)
        if spec.get("shift_m") is not None:
            shift = np.asarray(spec["shift_m"], dtype=np.float64)
            if shift.shape != (3,):
                raise ConfigError(f"detector shift_m must be [dx, dy, dz] in metres, got {spec['shift_m']!r}")
            det = det.shifted(*shift)
        if spec.get("beamstop_radius_m"):
            det = det.with_beamstop(spec["beamstop_radius_m"])
        return det

    # ---- export -------------------------------------------------------------------------------------
    def write_crystfel(
        self, path: str | Path, *, photon_energy_ev: float | None = None, mask_file: str | Path | None = None
    ) -> None:
        """Write this geometry as a CrystFEL ``.geom`` file (see :func:`.crystfel.write_crystfel`)."""
        write_crystfel(self, path, photon_energy_ev=photon_energy_ev, mask_file=mask_file)
