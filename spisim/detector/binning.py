"""Binned and subdivided detectors, and the matching operations on frames and masks.

Binning ``n`` joins ``n × n`` neighbouring pixels of a tile into one pixel of ``n`` times the pitch: a
binned pixel covers exactly the area of the pixels it joins, so its solid angle and the photons it records
are their sums (physics needs no special case: a binned detector is just a detector with larger pixels).
Subdividing ``n`` is the inverse: each pixel becomes ``n × n`` pixels of ``1/n`` the pitch. Rendering a
pattern on the subdivided detector and binning the expected photons back sums the intensity over
``n²`` points of each pixel's area: pixel-area integration (``detector.oversample`` in manifests).

Data arrays are ``(..., M, SS, FS)``; masks are True where bad. A binned pixel is bad when any pixel it
joins is bad (a conservative rule: the sum of its good pixels would under-count photons).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .panels import GeometryFile, Panel


def check_factor(n: int, what: str) -> int:
    """``n`` as an int; ConfigError unless it is a whole number >= 1 (``what`` names it)."""
    if int(n) != n or n < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, got {n!r}")
    return int(n)


def bin_sum(data: np.ndarray, n: int) -> np.ndarray:
    """Sum ``n × n`` blocks of the last two axes: (..., SS, FS) → (..., SS/n, FS/n).

    Both sizes must be multiples of ``n``. Works on numpy and CuPy arrays alike (reshape and sum).
    """
    n = check_factor(n, "bin factor")
    if n == 1:
        return data
    ss, fs = data.shape[-2:]
    if ss % n or fs % n:
        raise ConfigError(f"cannot bin {ss} x {fs} pixels by {n}: both sizes must be multiples of {n}")
    shape = (*data.shape[:-2], ss // n, n, fs // n, n)
    return data.reshape(shape).sum(axis=(-3, -1))


def bin_mask(mask: np.ndarray, n: int) -> np.ndarray:
    """(..., SS/n, FS/n) bool: a binned pixel is bad when any of its ``n × n`` pixels is bad."""
    return bin_sum(np.asarray(mask, dtype=np.int32), n) > 0


def upsample_mask(mask: np.ndarray, n: int) -> np.ndarray:
    """(..., SS·n, FS·n) bool: each pixel's flag repeated over the ``n × n`` pixels it is split into."""
    n = check_factor(n, "subdivision factor")
    m = np.asarray(mask, dtype=bool)
    return np.repeat(np.repeat(m, n, axis=-2), n, axis=-1)


def binned_panel(panel: Panel, n: int) -> Panel:
    """The tile with ``n × n`` pixels joined (pitch × n); its size and data offsets must divide by ``n``."""
    n = check_factor(n, "bin factor")
    bad = [k for k in ("n_ss", "n_fs", "ss_offset", "fs_offset") if getattr(panel, k) % n]
    if bad:
        label = f"panel {panel.name!r}" if panel.name else "a panel"
        sizes = ", ".join(f"{k} {getattr(panel, k)}" for k in ("n_ss", "n_fs", "ss_offset", "fs_offset"))
        raise ConfigError(f"cannot bin {label} by {n}: {sizes} must all be multiples of {n}")
    return Panel(corner=panel.corner, fs_vec=panel.fs_vec * n, ss_vec=panel.ss_vec * n, n_fs=panel.n_fs // n,
                 n_ss=panel.n_ss // n, module=panel.module, ss_offset=panel.ss_offset // n,
                 fs_offset=panel.fs_offset // n, name=panel.name)


def subdivided_panel(panel: Panel, n: int) -> Panel:
    """The tile with each pixel split into ``n × n`` pixels of 1/n the pitch (same area, same place)."""
    n = check_factor(n, "subdivision factor")
    return Panel(corner=panel.corner, fs_vec=panel.fs_vec / n, ss_vec=panel.ss_vec / n, n_fs=panel.n_fs * n,
                 n_ss=panel.n_ss * n, module=panel.module, ss_offset=panel.ss_offset * n,
                 fs_offset=panel.fs_offset * n, name=panel.name)


def binned_geometry(geometry: GeometryFile, n: int) -> GeometryFile:
    """``geometry`` with ``n × n`` pixels joined: data shape (M, SS/n, FS/n), mask by :func:`bin_mask` (``n`` > 1)."""
    n = check_factor(n, "bin factor")
    m, ss, fs = geometry.shape
    if ss % n or fs % n:
        raise ConfigError(f"cannot bin the detector's {ss} x {fs} data pixels per module by {n}: "
                          f"both sizes must be multiples of {n}")
    return GeometryFile(panels=[binned_panel(p, n) for p in geometry.panels], shape=(m, ss // n, fs // n),
                        mask=bin_mask(geometry.mask, n), metadata={**geometry.metadata, "binned": n},
                        name=f"{geometry.name} binned {n}x{n}")


def subdivided_geometry(geometry: GeometryFile, n: int) -> GeometryFile:
    """``geometry`` with every pixel split into ``n × n``: data shape (M, SS·n, FS·n), mask repeated."""
    n = check_factor(n, "subdivision factor")
    m, ss, fs = geometry.shape
    return GeometryFile(panels=[subdivided_panel(p, n) for p in geometry.panels], shape=(m, ss * n, fs * n),
                        mask=upsample_mask(geometry.mask, n), metadata=dict(geometry.metadata),
                        name=f"{geometry.name} subdivided {n}")
