"""Tiles recovered from per-pixel centres: the geometry of a CXI/HDF5 file (``pixel_position``) as panels.

A CXI file stores the centre of every pixel, ``(M, SS, FS, 3)`` m, not its tiles. Each module is cut
where the step between neighbouring pixel centres jumps (gaps between ASICs or panels) or where pixels
have no position (NaN), and each rectangular block is fitted by a flat grid ``corner + (i + ½) ss +
(j + ½) fs``; a block that is not such a grid (to 1 % of a pixel) is refused. The result reproduces the
stored centres, so a file written by ``spi simulate`` or ``spi import`` can serve as the detector of a
manifest (``detector.geometry: run.cxi``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputFileError
from .panels import GeometryFile, Panel

FIT_TOLERANCE = 0.01
"""Largest misfit of a pixel centre from its tile's flat grid, in pixels."""


def _cuts(steps: np.ndarray, valid: np.ndarray) -> list[int]:
    """Indices i where a new block starts between pixel i−1 and i, along the axis of ``steps`` (n−1,)."""
    out = []
    good = steps[valid]
    if good.size == 0:
        return out
    median = float(np.median(good))
    for i, (s, v) in enumerate(zip(steps, valid, strict=True)):
        if not v or abs(s - median) > FIT_TOLERANCE * median:
            out.append(i + 1)
    return out


def _blocks(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = [0, *sorted(set(cuts)), n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def panels_from_pixel_positions(pixel_position: np.ndarray, source: str = "pixel_position") -> list[Panel]:
    """Flat tiles whose pixel centres are ``pixel_position`` (M, SS, FS, 3) m (NaN: no pixel).

    Raises:
        ConfigError: a block of pixels that is not a flat, regular grid, or no pixel at all.
    """
    pos = np.asarray(pixel_position, dtype=np.float64)
    if pos.ndim != 4 or pos.shape[-1] != 3:
        raise ConfigError(f"{source}: expected pixel centres of shape (modules, ss, fs, 3), got {pos.shape}")
    panels: list[Panel] = []
    for m in range(pos.shape[0]):
        p = pos[m]
        finite = np.all(np.isfinite(p), axis=-1)
        if not finite.any():
            continue
        # where the step along a row (fs) or a column (ss) differs from the typical step, a tile ends
        fs_steps = np.linalg.norm(np.diff(p, axis=1), axis=-1)  # (SS, FS-1)
        ss_steps = np.linalg.norm(np.diff(p, axis=0), axis=-1)  # (SS-1, FS)
        fs_ok = finite[:, 1:] & finite[:, :-1]
        ss_ok = finite[1:, :] & finite[:-1, :]
        col_cuts = _cuts(np.nanmedian(np.where(fs_ok, fs_steps, np.nan), axis=0), fs_ok.any(axis=0)) \
            if p.shape[1] > 1 else []
        row_cuts = _cuts(np.nanmedian(np.where(ss_ok, ss_steps, np.nan), axis=1), ss_ok.any(axis=1)) \
            if p.shape[0] > 1 else []
        for r0, r1 in _blocks(p.shape[0], row_cuts):
            for c0, c1 in _blocks(p.shape[1], col_cuts):
                block_ok = finite[r0:r1, c0:c1]
                if not block_ok.any():
                    continue
                if not block_ok.all():
                    raise ConfigError(f"{source}: module {m}, rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1} mix "
                                      "pixels with and without positions: not a rectangular tile")
                panels.append(_fit_block(p[r0:r1, c0:c1], m, r0, c0, source))
    if not panels:
        raise ConfigError(f"{source}: no pixel has a finite position")
    return panels


def _fit_block(block: np.ndarray, module: int, r0: int, c0: int, source: str) -> Panel:
    n_ss, n_fs = block.shape[:2]
    i = np.arange(n_ss, dtype=np.float64) + 0.5
    j = np.arange(n_fs, dtype=np.float64) + 0.5
    ii, jj = np.meshgrid(i, j, indexing="ij")
    design = np.stack([np.ones_like(ii), ii, jj], axis=-1).reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(design, block.reshape(-1, 3), rcond=None)
    corner, ss_vec, fs_vec = coef
    if n_ss == 1:  # a single row fixes no slow-scan step: take a square pixel normal to the beam ray
        ss_vec = np.cross(fs_vec, corner / np.linalg.norm(corner))
        ss_vec *= np.linalg.norm(fs_vec) / np.linalg.norm(ss_vec)
        corner = block[0, 0] - 0.5 * ss_vec - 0.5 * fs_vec
    if n_fs == 1:
        fs_vec = np.cross(corner / np.linalg.norm(corner), ss_vec)
        fs_vec *= np.linalg.norm(ss_vec) / np.linalg.norm(fs_vec)
        corner = block[0, 0] - 0.5 * ss_vec - 0.5 * fs_vec
    pitch = float(np.sqrt(np.linalg.norm(np.cross(fs_vec, ss_vec))))
    misfit = float(np.abs(design @ np.stack([corner, ss_vec, fs_vec]) - block.reshape(-1, 3)).max()) / pitch
    if not np.isfinite(misfit) or misfit > FIT_TOLERANCE:
        raise ConfigError(f"{source}: module {module}, rows {r0}..{r0 + n_ss - 1}, columns {c0}..{c0 + n_fs - 1} "
                          f"is not a flat regular pixel grid (misfit {misfit:.3g} pixels)")
    return Panel(corner=corner, fs_vec=fs_vec, ss_vec=ss_vec, n_fs=n_fs, n_ss=n_ss, module=module, ss_offset=r0,
                 fs_offset=c0, name=f"m{module}r{r0}c{c0}")


def read_cxi_geometry(path: str | Path) -> GeometryFile:
    """The geometry and mask of a CXI/HDF5 file (``/entry_1/instrument_1/detector_1/pixel_position``, ``mask``)."""
    import h5py

    from ..constants import EV
    from ..cxi import DETECTOR_PATH, SOURCE_PATH

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputFileError(f"{path} is not a readable HDF5 file") from None
    with f:
        key = f"{DETECTOR_PATH}/pixel_position"
        if key not in f:
            raise InputFileError(f"{path} has no {key}: not a geometry a detector can be read from")
        pos = np.asarray(f[key][()], dtype=np.float64)
        if pos.ndim == 3 and pos.shape[-1] == 3:
            pos = pos[None]
        shape = tuple(pos.shape[:3])
        mask = np.zeros(shape, bool)
        if f"{DETECTOR_PATH}/mask" in f:
            raw = np.asarray(f[f"{DETECTOR_PATH}/mask"][()])
            if raw.size != mask.size:
                raise InputFileError(f"{path}: mask of shape {raw.shape} does not fit pixel_position {pos.shape}")
            mask = raw.reshape(shape) != 0
        metadata: dict = {"source": str(path), "format": "cxi"}
        if f"{SOURCE_PATH}/energy" in f:
            metadata["photon_energy_ev"] = float(f[f"{SOURCE_PATH}/energy"][()]) / EV
    panels = panels_from_pixel_positions(pos, source=str(path))
    return GeometryFile(panels=panels, shape=shape, mask=mask, metadata=metadata,  # type: ignore[arg-type]
                        name=path.name)
