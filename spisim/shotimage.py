"""Shots as pictures: a frame in its assembled detector layout, coloured into a PNG (``spi label``'s page).

The layout comes from a file's ``pixel_position`` at its own pixel pitch (rows from +y down, columns from −x to
+x, as everywhere in the toolkit), or, for files without geometry, from modules stacked one above the other.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np

from .detector.assemble import AssemblyMap, build_assembly_map
from .errors import InputFileError

COLORMAPS: tuple[str, ...] = ("magma", "viridis", "inferno", "cividis", "gray", "gray_r")
"""Colour maps the page may ask for."""

GAP_RGB = (38, 42, 50)
"""Colour of gaps between modules and of masked pixels."""

MAX_IMAGE_PIXELS = 16_000_000
"""Largest assembled image accepted (a geometry beyond it is taken as wrong)."""


def pixel_pitch(pixel_position: np.ndarray) -> float:
    """Median distance (m) between neighbouring pixel centres along the first row and column of each
    module of ``pixel_position`` (M, SS, FS, 3) m."""
    pos = np.asarray(pixel_position, dtype=np.float64)
    if pos.ndim != 4 or pos.shape[-1] != 3:
        raise InputFileError(f"pixel_position must have shape (M, SS, FS, 3), got {pos.shape}")
    steps = [np.array([])]
    if pos.shape[2] > 1:
        steps.append(np.linalg.norm(np.diff(pos[:, 0, :, :2], axis=1), axis=-1).ravel())
    if pos.shape[1] > 1:
        steps.append(np.linalg.norm(np.diff(pos[:, :, 0, :2], axis=1), axis=-1).ravel())
    step = np.concatenate(steps)
    step = step[np.isfinite(step) & (step > 0)]
    if not step.size or not np.all(np.isfinite(pos[..., :2])):
        raise InputFileError("pixel_position has no usable pixel pitch (non-finite or coincident pixels)")
    return float(np.median(step))


def stacked_positions(frame_shape: tuple[int, int, int], gap: int = 4) -> np.ndarray:
    """Stand-in pixel centres (M, SS, FS, 3), pitch 1, for files without geometry: modules one above the
    other, ``gap`` pixels apart, fast scan to the right, slow scan down."""
    m, ss, fs = frame_shape
    pos = np.zeros((m, ss, fs, 3))
    pos[..., 0] = np.arange(fs)[None, None, :]
    pos[..., 1] = -(np.arange(ss)[None, :, None] + (ss + gap) * np.arange(m)[:, None, None])
    return pos


def assembly_for(pixel_position: np.ndarray | None, frame_shape: tuple[int, int, int]) -> AssemblyMap:
    """The nearest-pixel :class:`~spisim.detector.AssemblyMap` of a file's geometry at its own pixel pitch
    (rows from +y down, columns from −x to +x, as everywhere in the toolkit); stacked modules when the
    file has no ``pixel_position``."""
    pos = stacked_positions(frame_shape) if pixel_position is None else np.asarray(pixel_position, np.float64)
    pitch = pixel_pitch(pos)
    span = np.ptp(pos[..., 0]) / pitch + 1, np.ptp(pos[..., 1]) / pitch + 1
    if span[0] * span[1] > MAX_IMAGE_PIXELS:
        raise InputFileError(f"assembled image would be {span[1]:.0f}×{span[0]:.0f} pixels: pixel_position "
                             f"looks wrong (pitch {pitch:.3g} m)")
    return build_assembly_map(pos, np.ones(frame_shape, bool), pitch)


def to_image(frame: np.ndarray, assembly: AssemblyMap, mask: np.ndarray) -> np.ndarray:
    """(H, W) float32 image of a (M, SS, FS) frame; NaN in gaps and where ``mask`` (M, SS, FS) is True."""
    return assembly.assemble(np.where(mask, np.float32(np.nan), frame.astype(np.float32)))


def render_png(image: np.ndarray, lo: float, hi: float, scale: str = "log", cmap: str = "magma") -> bytes:
    """Colour a (H, W) image (NaN = gap) into PNG bytes.

    Args:
        image: (H, W) values (photons or ADU); negative values count as 0 on the log scale.
        lo, hi: contrast limits as percentiles (0 ≤ lo < hi ≤ 100) of the finite scaled values.
        scale: ``log`` (log(1 + v)) or ``linear``.
        cmap: a matplotlib colour-map name from :data:`COLORMAPS`.
    """
    import matplotlib
    from PIL import Image

    v = np.log1p(np.clip(image, 0, None)) if scale == "log" else image.astype(np.float64)
    finite = np.isfinite(v)
    if finite.any():
        vmin, vmax = np.percentile(v[finite], [lo, hi])
        if not vmax > vmin:
            vmax = float(v[finite].max())
        if not vmax > vmin:
            vmax = vmin + 1.0
    else:
        vmin, vmax = 0.0, 1.0
    # an indexed PNG: 255 colour levels and the gap colour last (several times faster than RGB)
    level = np.clip((np.where(finite, v, vmin) - vmin) * (254.0 / (vmax - vmin)) + 0.5, 0, 254).astype(np.uint8)
    level[~finite] = 255
    lut = np.round(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 255))[:, :3] * 255).astype(np.uint8)
    palette = np.vstack([lut, np.array(GAP_RGB, np.uint8)[None]])
    out = Image.fromarray(level, "P")
    out.putpalette(palette.ravel().tolist())
    buf = BytesIO()
    out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
