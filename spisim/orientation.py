"""Particle orientations as unit quaternions q = (w, x, y, z), scalar first.

A quaternion stands for the active rotation R(q) that turns the particle: a point r of the
particle frame goes to R r in the laboratory frame. q and −q give the same rotation;
:func:`matrix_to_quaternion` returns the one with w ≥ 0.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import ConfigError


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit quaternions (n, 4), (w, x, y, z), uniform on SO(3) (Shoemake 1992, Graphics Gems III).

    With u1, u2, u3 uniform on [0, 1): q = (√u1 cos 2πu3, √(1−u1) sin 2πu2, √(1−u1) cos 2πu2, √u1 sin 2πu3).
    """
    if n < 0:
        raise ConfigError(f"number of orientations must be >= 0, got {n}")
    u1, u2, u3 = rng.random((3, int(n)))
    a = np.sqrt(1.0 - u1)
    b = np.sqrt(u1)
    return np.stack(
        [
            b * np.cos(2 * np.pi * u3),
            a * np.sin(2 * np.pi * u2),
            a * np.cos(2 * np.pi * u2),
            b * np.sin(2 * np.pi * u3),
        ],
        axis=-1,
    )


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of quaternions `q` (..., 4), (w, x, y, z); normalised first."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ConfigError(f"quaternions must have shape (..., 4), got {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ConfigError("a quaternion of zero length is no rotation")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quaternion(matrix: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """Unit quaternions (..., 4), (w, x, y, z) with w ≥ 0, of rotation matrices (..., 3, 3).

    ConfigError if a matrix is not a proper rotation (RᵀR = 1 and det R = +1 within `atol`).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ConfigError(f"rotation matrices must have shape (..., 3, 3), got {m.shape}")
    flat = m.reshape(-1, 3, 3)
    ortho_err = np.abs(np.einsum("nji,njk->nik", flat, flat) - np.eye(3)).max(initial=0.0)
    if ortho_err > atol or np.any(np.abs(np.linalg.det(flat) - 1.0) > atol):
        raise ConfigError(f"not a proper rotation matrix (|RᵀR − 1| = {ortho_err:.2g} or det R ≠ +1)")
    xyzw = Rotation.from_matrix(flat).as_quat()
    q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(m.shape[:-2] + (4,))


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` rotation matrices (n, 3, 3) uniform on SO(3)."""
    return quaternion_to_matrix(random_quaternions(n, rng))


def rotation_angle(q: np.ndarray) -> np.ndarray:
    """Rotation angle ω ∈ [0, π] (radians) of quaternions `q` (..., 4): ω = 2 arccos |w|."""
    q = np.asarray(q, dtype=np.float64)
    w = np.abs(q[..., 0]) / np.linalg.norm(q, axis=-1)
    return 2.0 * np.arccos(np.clip(w, 0.0, 1.0))
