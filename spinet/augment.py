"""Shot transforms: preprocessing alone (validation, inference) or with training augmentations.

Augmentations, in the order applied (each set in :class:`spinet.config.AugmentConfig`):

* on the raw frame, in photons: fluence scale (log-uniform) with Poisson resampling, Gaussian noise, a
  missing panel (its pixels become invalid);
* on the assembled image: rotation, flips, centre shift and zoom in one affine resampling (bilinear; an
  output pixel that touches an invalid or outside pixel becomes invalid), computed from a wider assembled
  image so that rotating does not pull in empty corners where the detector has data;
* lost quarter, half or three quarters of the detector (an angular sector about the centre), and
  occluding square patches (both become invalid, i.e. 0 after standardisation).

All randomness comes from the ``numpy.random.Generator`` passed per shot, so a shot's augmentation
depends only on its seed, never on worker order.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig, PreprocessConfig
from .preprocess import Preprocessor


def _affine_pad(size: int, aug: AugmentConfig) -> int:
    """Extra output pixels on each side so that the affine sampling stays inside the wide image."""
    reach = 1.0 / (1.0 - aug.zoom) if aug.zoom > 0 else 1.0  # zooming out samples further
    if aug.rotation > 0:
        reach *= math.sqrt(2.0)
    half = size / 2 * reach + size * aug.shift
    return int(math.ceil(half - size / 2)) + 1


class ShotTransform:
    """Frame (M, SS, FS) float32 → network input (1, S, S) float32, optionally augmented.

    Args:
        preprocess: preprocessing settings.
        augment: augmentation settings; None or ``enabled: false`` gives plain preprocessing.
        frame_shape: (M, SS, FS).
        pixel_position: (M, SS, FS, 3) m, or None.
        mask: (M, SS, FS) bool, True = bad, or None.
        preprocessor: an already built :class:`Preprocessor` for this detector (else built here).
    """

    def __init__(
        self,
        preprocess: PreprocessConfig,
        augment: AugmentConfig | None,
        frame_shape: tuple[int, int, int],
        pixel_position: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        self.config = preprocess
        self.augment = augment if (augment is not None and augment.enabled) else None
        self.frame_shape = tuple(frame_shape)
        self.final = preprocessor or Preprocessor.from_geometry(preprocess, self.frame_shape, pixel_position, mask)
        self.size = self.final.size
        self.wide: Preprocessor | None = None
        self.pad = 0
        if self.augment is not None and self.augment.geometric:
            self.pad = _affine_pad(self.size, self.augment)
            self.wide = Preprocessor.from_geometry(
                preprocess, self.frame_shape, pixel_position, mask, size=self.size + 2 * self.pad
            )

    def __call__(self, frame: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """One shot: (M, SS, FS) → (1, S, S). Augmented only when this transform has augmentations and
        ``rng`` is given."""
        x = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)).reshape(1, *self.frame_shape)
        if self.augment is None or rng is None:
            with torch.no_grad():
                return self.final(x)[0]
        return self._augmented(np.asarray(frame, dtype=np.float64), rng)

    def _augmented(self, frame: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        aug = self.augment
        assert aug is not None
        scale = self.final.photon_scale
        photons = np.nan_to_num(frame, nan=0.0, posinf=0.0, neginf=0.0) / scale
        if aug.fluence_scale is not None:
            lo, hi = aug.fluence_scale
            s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            photons = rng.poisson(np.clip(photons, 0.0, None) * s).astype(np.float64)
        if aug.gaussian_noise > 0:
            photons = photons + rng.normal(0.0, aug.gaussian_noise, size=photons.shape)
        weight = np.ones(self.frame_shape, dtype=np.float32)
        m = self.frame_shape[0]
        if m > 1 and aug.missing_panels > 0 and rng.random() < aug.missing_panels:
            weight[rng.integers(m)] = 0.0
        x = torch.from_numpy((photons * scale).astype(np.float32)).reshape(1, *self.frame_shape)
        w = torch.from_numpy(weight).reshape(1, *self.frame_shape)
        with torch.no_grad():
            if self.wide is not None:
                img, valid = self.wide.assemble_weighted(x, w)
                img, valid = self._affine(img, valid, rng)
            else:
                img, valid = self.final.assemble_weighted(x, w)
            valid = valid.clone()
            if aug.missing_region > 0 and rng.random() < aug.missing_region:
                valid &= ~self._sector(rng)
            for _ in range(aug.occlusion_patches):
                p = min(aug.occlusion_size, self.size)
                r0, c0 = rng.integers(0, self.size - p + 1, size=2)
                valid[:, r0 : r0 + p, c0 : c0 + p] = False
            return self.final.normalise(img, valid)[0]

    def _affine(self, img: torch.Tensor, valid: torch.Tensor, rng: np.random.Generator):
        aug = self.augment
        assert aug is not None
        phi = math.radians(rng.uniform(-aug.rotation, aug.rotation)) if aug.rotation > 0 else 0.0
        zoom = rng.uniform(1 - aug.zoom, 1 + aug.zoom) if aug.zoom > 0 else 1.0
        sx, sy = rng.uniform(-aug.shift, aug.shift, size=2) if aug.shift > 0 else (0.0, 0.0)
        fx = -1.0 if (aug.flip and rng.random() < 0.5) else 1.0
        fy = -1.0 if (aug.flip and rng.random() < 0.5) else 1.0
        ratio = self.size / (self.size + 2 * self.pad)
        c, s = math.cos(phi), math.sin(phi)
        # output normalised coords (x, y) -> wide-image normalised coords
        a = np.array([[c * fx, -s * fy], [s * fx, c * fy]]) * (ratio / zoom)
        t = np.array([2 * sx, 2 * sy]) * ratio
        grid = torch.from_numpy(self._grid(a, t))
        out = F.grid_sample(img[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        v = F.grid_sample(
            valid[:, None].to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out[:, 0], v[:, 0] > 0.999

    def _grid(self, a: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(1, S, S, 2) float32 sampling grid (x, y) = a @ (x_out, y_out) + t in normalised coordinates
        (what ``F.affine_grid`` gives, computed in numpy: cheaper for one small image)."""
        ax = (2 * np.arange(self.size) + 1) / self.size - 1  # pixel centres, align_corners=False
        xo, yo = np.meshgrid(ax, ax)  # rows = y, columns = x
        x = a[0, 0] * xo + a[0, 1] * yo + t[0]
        y = a[1, 0] * xo + a[1, 1] * yo + t[1]
        return np.stack([x, y], axis=-1)[None].astype(np.float32)

    def _sector(self, rng: np.random.Generator) -> torch.Tensor:
        """(1, S, S) bool: a random quarter, half or three quarters of the image about its centre."""
        frac = float(rng.choice([0.25, 0.5, 0.75]))
        start = rng.uniform(0, 2 * math.pi)
        ax = torch.arange(self.size, dtype=torch.float64) - (self.size - 1) / 2
        ang = torch.atan2(ax[:, None].expand(self.size, self.size), ax[None, :].expand(self.size, self.size))
        rel = torch.remainder(ang - start, 2 * math.pi)
        return (rel < 2 * math.pi * frac)[None]
