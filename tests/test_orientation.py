"""Unit quaternions: uniform sampling of SO(3) and conversions to and from rotation matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from spisim.errors import ConfigError
from spisim.orientation import (
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_quaternions,
    random_rotations,
    rotation_angle,
)


def test_random_quaternions_are_unit_and_reproducible() -> None:
    q = random_quaternions(1000, np.random.default_rng(5))
    assert q.shape == (1000, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(q, random_quaternions(1000, np.random.default_rng(5)))
    assert not np.array_equal(q, random_quaternions(1000, np.random.default_rng(6)))


def test_rotation_angle_follows_haar_distribution() -> None:
    # Uniform on SO(3): the rotation angle ω has density (1 − cos ω)/π, CDF (ω − sin ω)/π.
    def haar_cdf(w: np.ndarray) -> np.ndarray:
        return (w - np.sin(w)) / np.pi

    omega = rotation_angle(random_quaternions(20000, np.random.default_rng(11)))
    assert stats.kstest(omega, haar_cdf).pvalue > 1e-3
    # a sampler that is uniform in the angle instead must fail the same test
    assert stats.kstest(np.random.default_rng(1).uniform(0, np.pi, 20000), haar_cdf).pvalue < 1e-6


def test_rotated_vectors_are_uniform_on_the_sphere() -> None:
    rng = np.random.default_rng(12)
    r = random_rotations(20000, rng)
    for v in (np.array([0.0, 0.0, 1.0]), np.array([0.6, -0.8, 0.0])):
        w = r @ v
        # z-component uniform on [−1, 1], azimuth uniform on (−π, π]: Archimedes
        assert stats.kstest(w[:, 2], "uniform", args=(-1, 2)).pvalue > 1e-3
        assert stats.kstest(np.arctan2(w[:, 1], w[:, 0]), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
        # χ² on 8 octants
        octant = (w[:, 0] > 0) * 4 + (w[:, 1] > 0) * 2 + (w[:, 2] > 0)
        assert stats.chisquare(np.bincount(octant, minlength=8)).pvalue > 1e-3


def test_matrices_are_proper_rotations_and_match_scipy() -> None:
    q = random_quaternions(500, np.random.default_rng(3))
    m = quaternion_to_matrix(q)
    np.testing.assert_allclose(np.einsum("nji,njk->nik", m, m), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    # scipy orders quaternions scalar-last
    np.testing.assert_allclose(m, Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix(), atol=1e-12)


def test_known_rotation_about_z() -> None:
    angle = 0.7
    q = np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
    m = quaternion_to_matrix(q)
    np.testing.assert_allclose(m @ [1.0, 0.0, 0.0], [np.cos(angle), np.sin(angle), 0.0], atol=1e-15)
    assert rotation_angle(q) == pytest.approx(angle)


def test_round_trips() -> None:
    q = random_quaternions(300, np.random.default_rng(8))
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    assert np.all(back[:, 0] >= 0)
    np.testing.assert_allclose(back, q * np.sign(q[:, :1]), atol=1e-12)
    m = random_rotations(300, np.random.default_rng(9))
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(m)), m, atol=1e-12)
    assert matrix_to_quaternion(m.reshape(30, 10, 3, 3)).shape == (30, 10, 4)


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        quaternion_to_matrix(np.zeros(4))
    with pytest.raises(ConfigError):
        quaternion_to_matrix(np.ones(3))
    with pytest.raises(ConfigError, match="proper rotation"):
        matrix_to_quaternion(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ConfigError, match="proper rotation"):
        matrix_to_quaternion(2 * np.eye(3))
