"""Nearest-pixel assembly of detector data ``(..., modules, ss, fs)`` into a 2D image of the x–y plane.

The image is for display and for image-based models: rows run from +y (top) to −y, columns from −x
(left) to +x, i.e. the view of CrystFEL's GUI (+x right, +y up, looking from the detector back towards
the source). Every covered detector pixel adds its value to the image pixel that contains its centre,
so totals are conserved; image pixels that receive no detector pixel are NaN.

An :class:`AssemblyMap` is built once per geometry and pixel size and is then cheap to apply to many
shots (a sparse matrix product).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ..errors import ConfigError


@dataclass(frozen=True, eq=False)
class AssemblyMap:
    """Reusable index map from a detector's data array to an assembled image.

    Attributes:
        data_shape: ``(M, SS, FS)`` of the detector data.
        image_shape: ``(H, W)`` of the assembled image.
        pixel_size: edge of one image pixel (m).
        extent: ``(x_left, x_right, y_bottom, y_top)`` m, outer edges of the image (for matplotlib's
            ``imshow(image, extent=extent, origin="upper")``).
        pixel_index: (K,) flat indices into the data array of the K covered detector pixels.
        bin_index: (K,) flat indices into the image of the same pixels.
        counts: (H, W) int, detector pixels landing in each image pixel.
    """

    data_shape: tuple[int, int, int]
    image_shape: tuple[int, int]
    pixel_size: float
    extent: tuple[float, float, float, float]
    pixel_index: np.ndarray
    bin_index: np.ndarray
    counts: np.ndarray
    _matrix: scipy.sparse.csr_matrix

    @property
    def beam_centre(self) -> tuple[float, float]:
        """``(row, col)`` position of the beam axis (x = y = 0) in image pixel units (fractional)."""
        x_left, _, _, y_top = self.extent
        return (y_top / self.pixel_size, -x_left / self.pixel_size)

    def _check(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data)
        if data.shape[-3:] != tuple(self.data_shape) or data.ndim < 3:
            raise ConfigError(f"Wrong shape for detector data: {data.shape} does not end with {tuple(self.data_shape)}")
        return data

    def assemble(self, data: np.ndarray) -> np.ndarray:
        """Assemble ``data`` (..., M, SS, FS) into images (..., H, W); NaN where no detector pixel.

        Image pixels hit by several detector pixels hold their sum. Float32 input gives float32 output,
        anything else float64.
        """
        data = self._check(data)
        lead = data.shape[:-3]
        n_pix = int(np.prod(self.data_shape))
        dtype = np.float32 if data.dtype == np.float32 else np.float64
        flat = data.reshape(-1, n_pix).astype(dtype, copy=False)
        matrix = self._matrix.astype(dtype)
        out = np.asarray((matrix @ flat.T).T, dtype=dtype)
        out[:, self.counts.reshape(-1) == 0] = np.nan
        return out.reshape(*lead, *self.image_shape)

    def assemble_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) bool, True where an image pixel has no good detector pixel (``mask`` True = bad)."""
        mask = self._check(mask)
        if mask.shape != tuple(self.data_shape):
            raise ConfigError(f"mask must have shape {tuple(self.data_shape)}, got {mask.shape}")
        good = (~mask.astype(bool)).astype(np.float64).reshape(-1)
        good_counts = np.asarray(self._matrix @ good).reshape(self.image_shape)
        return good_counts == 0


def build_assembly_map(positions: np.ndarray, covered: np.ndarray, pixel_size: float) -> AssemblyMap:
    """Build the :class:`AssemblyMap` of pixel centres ``positions`` (M, SS, FS, 3) m.

    Args:
        positions: pixel centres (M, SS, FS, 3) m; only x and y are used.
        covered: (M, SS, FS) bool, pixels that exist (tiles cover them).
        pixel_size: image pixel edge (m), > 0.
    """
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ConfigError(f"assembly pixel size must be a positive length in metres, got {pixel_size!r}")
    data_shape = tuple(int(n) for n in covered.shape)
    pixel_index = np.flatnonzero(covered.reshape(-1))
    if pixel_index.size == 0:
        raise ConfigError("cannot assemble: the detector has no pixels")
    xy = positions.reshape(-1, 3)[pixel_index, :2]
    x_left = float(xy[:, 0].min()) - 0.5 * pixel_size
    y_top = float(xy[:, 1].max()) + 0.5 * pixel_size
    # Tiles offset by half a pixel put centres on bin edges; a tiny bias makes rounding consistent so
    # that such a tile still maps one pixel to one bin instead of splitting by floating-point noise.
    bias = 1e-6
    col = np.floor((xy[:, 0] - x_left) / pixel_size + bias).astype(np.int64)
    row = np.floor((y_top - xy[:, 1]) / pixel_size + bias).astype(np.int64)
    height, width = int(row.max()) + 1, int(col.max()) + 1
    if height * width > 2**31:
        raise ConfigError(
            f"assembled image would be {height} x {width} pixels; choose a larger pixel_size than {pixel_size} m"
        )
    bin_index = row * width + col
    n_pix = int(np.prod(data_shape))
    matrix = scipy.sparse.csr_matrix(
        (np.ones(pixel_index.size), (bin_index, pixel_index)), shape=(height * width, n_pix)
    )
    counts = np.bincount(bin_index, minlength=height * width).reshape(height, width)
    extent = (x_left, x_left + width * pixel_size, y_top - height * pixel_size, y_top)
    for arr in (pixel_index, bin_index, counts):
        arr.setflags(write=False)
    return AssemblyMap(
        data_shape=data_shape,  # type: ignore[arg-type]
        image_shape=(height, width),
        pixel_size=float(pixel_size),
        extent=extent,
        pixel_index=pixel_index,
        bin_index=bin_index,
        counts=counts,
        _matrix=matrix,
    )
