"""Perturbations of test shots for robustness sweeps: fluence resampled, detector area lost."""

from __future__ import annotations

import numpy as np


def resample_fluence(frames: np.ndarray, scale: float, file_indices: np.ndarray,
                     photon_scale: float = 1.0) -> np.ndarray:
    """Measured frames as if the fluence were ``scale`` × higher: photon counts binomially thinned (scale < 1,
    exact for Poisson data) or Poisson-resampled at ``scale`` × the counts (scale > 1, an approximation: the
    noise of the measured counts is kept and magnified). Each shot draws from ``(scale, file index)``.

    Args:
        frames: (n, M, SS, FS) in photons × ``photon_scale``.
        scale: > 0.
        file_indices: (n,) shot indices (seed the draws).
        photon_scale: frame units per photon.
    """
    out = np.empty_like(frames, dtype=np.float32)
    for i, (frame, idx) in enumerate(zip(frames, file_indices, strict=True)):
        rng = np.random.default_rng([int(idx), int(round(scale * 1e6)), 0xF1])
        photons = np.clip(np.rint(np.nan_to_num(frame / photon_scale)), 0, None).astype(np.int64)
        if scale <= 1:
            new = rng.binomial(photons, scale)
        else:
            new = rng.poisson(photons * scale)
        out[i] = new.astype(np.float32) * photon_scale
    return out


def missing_area_weights(frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None, fraction: float,
                         file_indices: np.ndarray) -> np.ndarray:
    """Per-shot pixel weights (n, M, SS, FS): 0 over an angular sector of ``fraction`` × 360° about the beam
    axis (a random start angle per shot, from its file index), 1 elsewhere.

    Without geometry the sector is taken about the centre of the stacked panels.
    """
    if pixel_position is not None:
        p = np.asarray(pixel_position).reshape(*frame_shape, 3)
        phi = np.arctan2(p[..., 1], p[..., 0])
    else:
        from ..preprocess import stack_coordinates

        c = stack_coordinates(frame_shape)
        phi = np.arctan2(-c[..., 0], c[..., 1])
    out = np.ones((len(file_indices), *frame_shape), dtype=np.float32)
    for i, idx in enumerate(file_indices):
        start = np.random.default_rng([int(idx), 0x5EC7]).uniform(0, 2 * np.pi)
        rel = np.mod(phi - start, 2 * np.pi)
        out[i][rel < 2 * np.pi * fraction] = 0.0
    return out

