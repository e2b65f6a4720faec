"""From detector frames (B, M, SS, FS) to network input images (B, 1, S, S), the same at training and inference.

Steps (each set in :class:`spinet.config.PreprocessConfig`):

1. divide by ``photon_scale`` (ADU → photons);
2. assemble the panels into one image: every raw pixel goes to the output pixel that contains its centre
   (nearest-pixel binning), with ``bin × bin`` assembled pixels per output pixel, around the beam centre,
   cropped to ``S × S``. Masked raw pixels are left out, and so are non-finite values (NaN, ±inf) frame by
   frame; an output pixel is the mean of its valid raw pixels and is *invalid* in a frame when it has none
   (gaps, beamstop, outside the detector, or only non-finite values). A frame with no valid pixel at all is
   invalid (:meth:`Preprocessor.has_data`) and must not be classified;
3. clip at 0 and scale (``log(1 + x)``, ``sqrt`` or none);
4. z-score over the valid pixels of each image; invalid pixels become 0.

Assembly coordinates come from the file's ``pixel_position`` (m): pixel centres are projected along
their ray onto the plane z = mean z (so tilted panels land where a flat detector would see them) and
divided by the pixel size; the beam axis is (0, 0). Without geometry (``assemble: stack``) panels are
placed one below the other as stored and the image centre is (0, 0). (This small assembly lives here
because the network needs a gather table that it can carry into TorchScript and ONNX.)

The gather table is an (S², K) index into the flattened frame (K = the most raw pixels any output pixel
receives; unused entries have weight 0), so the whole of :class:`Preprocessor` is index_select + sum +
elementwise ops, reads only the pixels inside the crop, and exports as such.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from spisim.errors import ConfigError, InputFileError

from .config import PreprocessConfig

_EPS = 1e-6


def estimate_pixel_size(pixel_position: np.ndarray) -> float:
    """Median distance (m) between neighbouring pixel centres along fast and slow scan.

    Args:
        pixel_position: (M, SS, FS, 3) m.
    """
    p = np.asarray(pixel_position, dtype=np.float64)
    steps = []
    if p.shape[2] > 1:
        steps.append(np.linalg.norm(np.diff(p, axis=2), axis=-1).ravel())
    if p.shape[1] > 1:
        steps.append(np.linalg.norm(np.diff(p, axis=1), axis=-1).ravel())
    if not steps:
        raise InputFileError("cannot estimate the pixel size of a detector with single-pixel panels")
    d = np.concatenate(steps)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        raise InputFileError("pixel_position has no two distinct neighbouring pixels")
    return float(np.median(d))


def geometry_coordinates(pixel_position: np.ndarray, pixel_size: float | None = None) -> tuple[np.ndarray, float]:
    """Assembled-image coordinates of each pixel centre, beam axis at (0, 0).

    Each centre (x, y, z) is projected along its ray onto the plane z = D (mean z):
    u = x D / z, v = y D / z; row = −v / pixel_size (y points up, rows down), column = u / pixel_size.

    Args:
        pixel_position: (M, SS, FS, 3) m, lab frame (x horizontal, y up, z along the beam).
        pixel_size: m; None: :func:`estimate_pixel_size`.

    Returns:
        ((M, SS, FS, 2) float64 (row, column) in assembled pixels, pixel size in m).
    """
    p = np.asarray(pixel_position, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != 3:
        raise InputFileError(f"pixel_position must have shape (M, SS, FS, 3), got {p.shape}")
    z = p[..., 2]
    if not np.all(np.isfinite(z)) or np.any(z <= 0):
        raise InputFileError("pixel_position has pixels at or behind the interaction point (z <= 0)")
    size = estimate_pixel_size(p) if pixel_size is None else float(pixel_size)
    d = float(np.mean(z))
    u = p[..., 0] * d / z
    v = p[..., 1] * d / z
    return np.stack([-v / size, u / size], axis=-1), size


def stack_coordinates(frame_shape: tuple[int, int, int]) -> np.ndarray:
    """Coordinates of panels placed one below the other, image centre at (0, 0).

    Args:
        frame_shape: (M, SS, FS).

    Returns:
        (M, SS, FS, 2) float64 (row, column).
    """
    m, ss, fs = frame_shape
    rows = np.arange(m * ss, dtype=np.float64).reshape(m, ss) - (m * ss - 1) / 2
    cols = np.arange(fs, dtype=np.float64) - (fs - 1) / 2
    r = np.broadcast_to(rows[:, :, None], (m, ss, fs))
    c = np.broadcast_to(cols[None, None, :], (m, ss, fs))
    return np.stack([r, c], axis=-1)


def build_gather_table(
    coords: np.ndarray, mask: np.ndarray | None, size: int, bin: int, centre: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Which raw pixels make each output pixel.

    Raw pixel with coordinate t (rows or columns, assembled pixels) goes to output index
    ``floor((t − centre) / bin + size / 2)``; pixels outside [0, size) or masked are dropped.

    Args:
        coords: (M, SS, FS, 2) (row, column), assembled pixels.
        mask: (M, SS, FS) bool, True = bad; None: all good.
        size: S, output side.
        bin: assembled pixels per output pixel along each axis.
        centre: (row, column) of the output image centre.

    Returns:
        (index (S*S, K) int64 into the flattened frame, with n_raw meaning "none"; count (S*S,) int64).
    """
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n_raw = c.shape[0]
    jr = np.floor((c[:, 0] - centre[0]) / bin + size / 2 + _EPS)
    jc = np.floor((c[:, 1] - centre[1]) / bin + size / 2 + _EPS)
    keep = (jr >= 0) & (jr < size) & (jc >= 0) & (jc < size) & np.isfinite(jr) & np.isfinite(jc)
    if mask is not None:
        keep &= ~np.asarray(mask, dtype=bool).reshape(-1)
    raw = np.nonzero(keep)[0]
    out = (jr[keep] * size + jc[keep]).astype(np.int64)
    order = np.argsort(out, kind="stable")
    raw, out = raw[order], out[order]
    count = np.bincount(out, minlength=size * size).astype(np.int64)
    k = max(int(count.max()) if count.size else 0, 1)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    rank = np.arange(out.size) - start[out]
    index = np.full((size * size, k), n_raw, dtype=np.int64)
    index[out, rank] = raw
    return index, count


class Preprocessor(nn.Module):
    """Frames (B, M, SS, FS) float32 → images (B, 1, S, S) float32; exportable (TorchScript, ONNX).

    Build with :meth:`from_geometry`; the gather table is stored as buffers, so ``state_dict`` holds
    everything needed to rebuild it (:meth:`from_state`).
    """

    def __init__(
        self,
        index: torch.Tensor,
        count: torch.Tensor,
        frame_shape: tuple[int, int, int],
        size: int,
        *,
        scale: str = "log",
        photon_scale: float = 1.0,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        if scale not in ("log", "sqrt", "none"):
            raise ConfigError(f"preprocess.scale must be log, sqrt or none, got {scale!r}")
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.n_raw = int(np.prod(self.frame_shape))
        self.size = int(size)
        self.k = int(index.shape[1])
        self.scale = scale
        self.photon_scale = float(photon_scale)
        self.standardize = bool(standardize)
        count = count.to(torch.float32)
        # rows of the table are filled from the left: entry k of output pixel p is real when k < count[p]
        real = torch.arange(self.k, dtype=torch.float32)[None, :] < count[:, None]
        idx = index.reshape(-1, self.k).to(torch.int64)
        self.register_buffer("index", torch.where(real, idx, torch.zeros_like(idx)).reshape(-1))
        self.register_buffer("entry_weight", real.to(torch.float32))
        self.register_buffer("count", count)
        self.register_buffer("inv_count", torch.where(count > 0, 1.0 / count.clamp(min=1.0), torch.zeros_like(count)))
        self.register_buffer("valid", (count > 0).reshape(self.size, self.size))

    # ------------------------------------------------------------------------------------- building

    @classmethod
    def from_geometry(
        cls,
        config: PreprocessConfig,
        frame_shape: tuple[int, int, int],
        pixel_position: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        *,
        size: int | None = None,
    ) -> Preprocessor:
        """Build for one detector.

        Args:
            config: preprocessing settings.
            frame_shape: (M, SS, FS).
            pixel_position: (M, SS, FS, 3) m, or None (then ``assemble`` must be ``auto`` or ``stack``).
            mask: (M, SS, FS) bool, True = bad.
            size: output side; default ``config.input_size`` (training uses a wider one before
                geometric augmentation and crops afterwards).
        """
        size = int(config.input_size if size is None else size)
        mode = config.assemble
        if mode == "auto":
            mode = "geometry" if pixel_position is not None else "stack"
        if mode == "geometry":
            if pixel_position is None:
                raise InputFileError("preprocess.assemble is geometry but the file has no pixel_position")
            coords, _ = geometry_coordinates(pixel_position, config.pixel_size)
        else:
            coords = stack_coordinates(frame_shape)
        centre = (0.0, 0.0) if config.centre is None else (float(config.centre[0]), float(config.centre[1]))
        index, count = build_gather_table(coords, mask, size, config.bin, centre)
        if count.sum() == 0:
            raise InputFileError(
                f"no valid detector pixel falls inside the {size}×{size} crop (bin {config.bin}): "
                "check preprocess.centre, bin and the geometry"
            )
        return cls(
            torch.from_numpy(index),
            torch.from_numpy(count),
            frame_shape,
            size,
            scale=config.scale,
            photon_scale=config.photon_scale,
            standardize=config.standardize,
        )

    def describe(self) -> dict:
        """The settings that rebuild this module with :meth:`from_state` (plus the buffers)."""
        return {
            "frame_shape": list(self.frame_shape),
            "size": self.size,
            "k": self.k,
            "scale": self.scale,
            "photon_scale": self.photon_scale,
            "standardize": self.standardize,
        }

    @classmethod
    def from_state(cls, meta: dict, state: dict[str, torch.Tensor]) -> Preprocessor:
        """Rebuild from :meth:`describe` and ``state_dict()``."""
        size = int(meta["size"])
        index = state["index"].reshape(size * size, int(meta["k"]))
        return cls(
            index,
            state["count"],
            tuple(meta["frame_shape"]),
            size,
            scale=meta["scale"],
            photon_scale=meta["photon_scale"],
            standardize=meta["standardize"],
        )

    # ------------------------------------------------------------------------------------- running

    def _gather(self, flat: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_raw) → (sums (B, S*S), weights (B, S*S)) over each output pixel's raw pixels.

        A non-finite raw value (NaN, ±inf) is left out like a masked pixel: it adds nothing to the sum and
        nothing to the weight, so an output pixel whose raw pixels are all non-finite is invalid in that frame.
        ``weight`` (B, n_raw) in [0, 1] weights each raw pixel (None: 1). Only the table's pixels are read
        (the cost follows the crop, not the frame size)."""
        g = torch.index_select(flat, 1, self.index).reshape(-1, self.size * self.size, self.k)
        # 1 where finite, 0 where NaN or ±inf: g − g is 0 or NaN (cheaper than isfinite, and exportable)
        finite = torch.nan_to_num((g - g) + 1.0, nan=0.0, posinf=0.0, neginf=0.0)
        w = finite * self.entry_weight
        if weight is not None:
            w = w * torch.index_select(weight, 1, self.index).reshape(-1, self.size * self.size, self.k)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        return (g * w).sum(dim=2), w.sum(dim=2)

    def _flat(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.reshape(-1, self.n_raw).to(torch.float32)

    def assemble_valid(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean photons per output pixel over its finite unmasked raw pixels, and where there are any.

        Args:
            frames: (B, M, SS, FS).

        Returns:
            (images (B, S, S) photons, 0 where invalid; valid (B, S, S) bool: the pixel has at least one finite
            unmasked raw pixel in that frame).
        """
        num, den = self._gather(self._flat(frames))
        inv = torch.where(den > 0, 1.0 / den.clamp(min=1.0), torch.zeros_like(den))
        img = num * (inv / self.photon_scale)
        return img.reshape(-1, self.size, self.size), (den > 0).reshape(-1, self.size, self.size)

    def assemble(self, frames: torch.Tensor) -> torch.Tensor:
        """Mean photons per output pixel (0 where invalid): (B, M, SS, FS) → (B, S, S)."""
        return self.assemble_valid(frames)[0]

    def has_data(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the frame has at least one finite unmasked pixel inside the crop (what the network sees);
        a frame without any is invalid and must not be given a class."""
        _, den = self._gather(self._flat(frames))
        return (den > 0).any(dim=1)

    def assemble_weighted(self, frames: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`assemble_valid` with per-shot raw pixel weights (0 = drop, e.g. a missing panel).

        Args:
            frames: (B, M, SS, FS).
            weight: (B, M, SS, FS) in [0, 1].

        Returns:
            (images (B, S, S), valid (B, S, S) bool).
        """
        w = weight.reshape(-1, self.n_raw).to(torch.float32)
        num, den = self._gather(self._flat(frames), w)
        img = torch.where(den > 0, num / (den.clamp(min=1e-12) * self.photon_scale), torch.zeros_like(num))
        return img.reshape(-1, self.size, self.size), (den > 0).reshape(-1, self.size, self.size)

    def normalise(self, img: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Scale and standardise: (B, S, S) photons, valid (S, S) or (B, S, S) bool → (B, 1, S, S)."""
        x = img.clamp(min=0.0)
        if self.scale == "log":
            x = torch.log1p(x)
        elif self.scale == "sqrt":
            x = torch.sqrt(x)
        v = valid.to(x.dtype).expand_as(x)
        if self.standardize:
            n = v.sum(dim=(1, 2), keepdim=True).clamp(min=1.0)
            mean = (x * v).sum(dim=(1, 2), keepdim=True) / n
            var = (((x - mean) * v) ** 2).sum(dim=(1, 2), keepdim=True) / n
            x = (x - mean) / torch.sqrt(var + 1e-8)
        return (x * v).unsqueeze(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, M, SS, FS) photons (or ADU with photon_scale) → (B, 1, S, S) network input; pixels invalid in a
        frame (masked, outside the detector, or non-finite in that frame) are 0 and left out of its z-score."""
        return self.normalise(*self.assemble_valid(frames))

    def __repr__(self) -> str:
        return (
            f"Preprocessor(frame_shape={self.frame_shape}, size={self.size}, k={self.k}, "
            f"scale={self.scale!r}, standardize={self.standardize})"
        )


def geometry_key(frame_shape: tuple[int, ...], pixel_position: np.ndarray | None, mask: np.ndarray | None) -> str:
    """A short hash of a detector's frame shape, pixel positions and mask (to tell detectors apart)."""
    h = hashlib.sha1(repr(tuple(int(v) for v in frame_shape)).encode())
    if pixel_position is not None:
        h.update(np.ascontiguousarray(np.asarray(pixel_position, dtype=np.float64)).tobytes())
    if mask is not None:
        h.update(np.packbits(np.asarray(mask, dtype=bool)).tobytes())
    return h.hexdigest()[:16]
