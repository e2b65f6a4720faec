"""One rectangular detector tile (:class:`Panel`) and the rotation helpers that move tiles.

The coordinates in this module are lab-frame (x, y, z) in metres: x horizontal, y vertical (up), z along
the beam, interaction point at the origin. A tile is described like EXtra-geom's ``GeometryFragment``:
the outer corner of its first stored pixel, one-pixel step vectors along the fast-scan (fs) and
slow-scan (ss) axes of the data array, and the pixel counts, plus where the tile sits in the data array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError


def _frozen_vector(v: object, name: str) -> np.ndarray:
    arr = np.array(v, dtype=np.float64).reshape(-1)
    if arr.shape != (3,):
        raise ConfigError(f"panel {name} must be a 3-vector (x, y, z) in metres, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Panel:
    """One rectangular tile of pixels, positioned in the lab frame.

    Attributes:
        corner: (3,) m, outer corner of the first stored pixel (data index ``[ss_offset, fs_offset]``).
        fs_vec: (3,) m, step of one pixel along the fast-scan axis (its length is the pixel width).
        ss_vec: (3,) m, step of one pixel along the slow-scan axis.
        n_fs: pixels along fast scan.
        n_ss: pixels along slow scan.
        module: index of the module (first axis of the ``(modules, ss, fs)`` data array).
        ss_offset: first slow-scan row of this tile in the module's data.
        fs_offset: first fast-scan column of this tile in the module's data.
        name: label (the panel name of a CrystFEL file, ``seg3a1`` for psana, ...).

    Pixel ``(i, j)`` of the tile (data ``[module, ss_offset + i, fs_offset + j]``) has its centre at
    ``corner + (i + 0.5) * ss_vec + (j + 0.5) * fs_vec``. Transforms return new panels.
    """

    corner: np.ndarray
    fs_vec: np.ndarray
    ss_vec: np.ndarray
    n_fs: int
    n_ss: int
    module: int = 0
    ss_offset: int = 0
    fs_offset: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "corner", _frozen_vector(self.corner, "corner"))
        object.__setattr__(self, "fs_vec", _frozen_vector(self.fs_vec, "fs_vec"))
        object.__setattr__(self, "ss_vec", _frozen_vector(self.ss_vec, "ss_vec"))
        for key in ("n_fs", "n_ss", "module", "ss_offset", "fs_offset"):
            value = getattr(self, key)
            if int(value) != value:
                raise ConfigError(f"panel {self.name!r}: {key} must be an integer, got {value!r}")
            object.__setattr__(self, key, int(value))
        label = f"panel {self.name!r}" if self.name else "panel"
        if self.n_fs < 1 or self.n_ss < 1:
            raise ConfigError(f"{label} needs at least one pixel, got {self.n_ss} x {self.n_fs} (ss x fs)")
        if min(self.module, self.ss_offset, self.fs_offset) < 0:
            raise ConfigError(f"{label}: module, ss_offset and fs_offset must be >= 0")
        for key in ("corner", "fs_vec", "ss_vec"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise ConfigError(f"{label}: {key} is not finite ({getattr(self, key)})")
        if np.linalg.norm(self.fs_vec) == 0 or np.linalg.norm(self.ss_vec) == 0:
            raise ConfigError(f"{label} has a zero pixel size (fs or ss step vector is zero)")
        if self.pixel_area == 0:
            raise ConfigError(f"{label}: fs and ss step vectors are parallel, the pixels have no area")

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def n_pixels(self) -> int:
        """Number of pixels in the tile."""
        return self.n_fs * self.n_ss

    @property
    def pixel_area(self) -> float:
        """Area of one pixel (m²), |fs_vec × ss_vec|."""
        return float(np.linalg.norm(np.cross(self.fs_vec, self.ss_vec)))

    @property
    def pixel_size(self) -> float:
        """Edge of a square pixel of the same area (m): sqrt(pixel_area)."""
        return float(np.sqrt(self.pixel_area))

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit normal fs × ss of the tile's plane."""
        n = np.cross(self.fs_vec, self.ss_vec)
        return n / np.linalg.norm(n)

    @property
    def data_slice(self) -> tuple[int, slice, slice]:
        """``(module, ss slice, fs slice)``: where this tile's pixels sit in the data array."""
        return (
            self.module,
            slice(self.ss_offset, self.ss_offset + self.n_ss),
            slice(self.fs_offset, self.fs_offset + self.n_fs),
        )

    def corners(self) -> np.ndarray:
        """(4, 3) m, the tile's outer corners in order first pixel, along fs, opposite, along ss."""
        fs = self.fs_vec * self.n_fs
        ss = self.ss_vec * self.n_ss
        return np.stack([self.corner, self.corner + fs, self.corner + fs + ss, self.corner + ss])

    def centre(self) -> np.ndarray:
        """(3,) m, centre of the tile (also the mean of its pixel centres)."""
        return self.corner + 0.5 * self.n_fs * self.fs_vec + 0.5 * self.n_ss * self.ss_vec

    def pixel_centres(self) -> np.ndarray:
        """(n_ss, n_fs, 3) m, centre of every pixel of the tile."""
        i = np.arange(self.n_ss, dtype=np.float64)[:, None, None] + 0.5
        j = np.arange(self.n_fs, dtype=np.float64)[None, :, None] + 0.5
        return self.corner + i * self.ss_vec + j * self.fs_vec

    def pixel_corner_grid(self) -> np.ndarray:
        """(n_ss + 1, n_fs + 1, 3) m, the corners shared by neighbouring pixels of the tile."""
        i = np.arange(self.n_ss + 1, dtype=np.float64)[:, None, None]
        j = np.arange(self.n_fs + 1, dtype=np.float64)[None, :, None]
        return self.corner + i * self.ss_vec + j * self.fs_vec

    # ---- transforms (return new panels) -------------------------------------------------------------
    def _replace(self, **changes: object) -> Panel:
        fields = dict(
            corner=self.corner,
            fs_vec=self.fs_vec,
            ss_vec=self.ss_vec,
            n_fs=self.n_fs,
            n_ss=self.n_ss,
            module=self.module,
            ss_offset=self.ss_offset,
            fs_offset=self.fs_offset,
            name=self.name,
        )
        fields.update(changes)
        return Panel(**fields)  # type: ignore[arg-type]

    def offset(self, shift: np.ndarray | tuple[float, float, float]) -> Panel:
        """A copy moved by ``shift`` (3,) m."""
        return self._replace(corner=self.corner + np.asarray(shift, dtype=np.float64))

    def rotate(self, matrix: np.ndarray, centre: np.ndarray | tuple[float, float, float] = (0, 0, 0)) -> Panel:
        """A copy rotated by the (3, 3) ``matrix`` about the point ``centre`` (3,) m."""
        m = np.asarray(matrix, dtype=np.float64)
        c = np.asarray(centre, dtype=np.float64)
        return self._replace(corner=m @ (self.corner - c) + c, fs_vec=m @ self.fs_vec, ss_vec=m @ self.ss_vec)

    def with_layout(self, module: int, ss_offset: int, fs_offset: int) -> Panel:
        """A copy that sits elsewhere in the data array (same position in space)."""
        return self._replace(module=module, ss_offset=ss_offset, fs_offset=fs_offset)


def rotation_x(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``deg`` degrees about the x axis."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``deg`` degrees about the y axis."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``deg`` degrees about the z axis (the beam)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def data_shape(panels: Sequence[Panel]) -> tuple[int, int, int]:
    """The smallest data shape (modules, ss, fs) that holds every tile of ``panels``."""
    return (
        max(p.module for p in panels) + 1,
        max(p.ss_offset + p.n_ss for p in panels),
        max(p.fs_offset + p.n_fs for p in panels),
    )


def mean_distance(panels: Sequence[Panel]) -> float:
    """Mean z (m) of all pixel centres of ``panels``: the sample-to-detector distance of a flat detector."""
    weights = np.array([p.n_pixels for p in panels], dtype=np.float64)
    z = np.array([p.centre()[2] for p in panels])
    return float(np.sum(weights * z) / np.sum(weights))


def moved_to_distance(panels: Sequence[Panel], distance_m: float) -> list[Panel]:
    """``panels`` moved along z so that their :func:`mean_distance` is ``distance_m`` (m, > 0)."""
    d = float(distance_m)
    if not (np.isfinite(d) and d > 0):
        raise ConfigError(f"detector distance must be a positive length in metres, got {distance_m!r}")
    shift = np.array([0.0, 0.0, d - mean_distance(panels)], dtype=np.float64)
    return [p.offset(shift) for p in panels]


@dataclass
class GeometryFile:
    """The description of a detector that a reader or a preset gives (no checks, no per-pixel arrays): what
    :class:`~spisim.detector.Detector` is built from, and what :meth:`Detector.description` gives back.

    Attributes:
        panels: the tiles.
        shape: data shape (modules, ss, fs) the tiles fill.
        mask: (modules, ss, fs) bool, True for bad pixels the source declares (uncovered pixels need not be set).
        metadata: what else the source said (source, format, photon energy, ...).
        name: a label (the file name, the preset name).
    """

    panels: list[Panel]
    shape: tuple[int, int, int]
    mask: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = ""


class Tiled(Protocol):
    """Anything that has tiles, a data shape and a mask: a :class:`GeometryFile` or a ``Detector``."""

    @property
    def panels(self) -> Sequence[Panel]: ...

    @property
    def shape(self) -> tuple[int, int, int]: ...

    @property
    def mask(self) -> np.ndarray: ...
