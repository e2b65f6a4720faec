"""Fits of spi match: radial shells, sphere sizes and amplitudes, hit spread, read noise (against physics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spisim.constants import R_E, wavelength_angstrom
from spisim.detector import Detector
from spisim.particles import UniformSphere
from spisim.photons import expected_photons
from spisim.realrun.fit import (
    SMEAR_SD,
    fit_spheres,
    fluence_from_amplitude,
    hit_spread,
    read_noise_from_negatives,
    smeared_phi2,
    sphere_electrons,
    sphere_phi2,
)
from spisim.realrun.profiles import RadialBins, first_minimum_contrast

ENERGY = 1600.0


def _detector_bins(n: int = 96, pixel: float = 600e-6, distance: float = 0.58, gap_rows: int = 2):
    det = Detector.square(n, pixel, distance)
    mask = np.zeros(det.shape, bool)
    mask[0, n // 2 - gap_rows // 2: n // 2 + gap_rows // 2 + 1, :] = True  # a gap row through the centre
    det = det.with_mask(mask)
    q = det.q_vectors(wavelength_angstrom(ENERGY))
    weight = det.solid_angles() * det.polarization_factor("horizontal")
    bins = RadialBins.from_detector(np.linalg.norm(q, axis=-1), weight, ~det.mask)
    return det, q, weight, bins


def _sphere_frames(det, q, weight, radii_nm, fluences, background=0.0, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for r_nm, j in zip(radii_nm, fluences, strict=True):
        sphere = UniformSphere(r_nm * 10.0, 0.43)
        f = sphere.form_factor(q.reshape(-1, 3)).reshape(det.shape)
        lam = expected_photons(f, j, det.solid_angles(), det.polarization_factor("horizontal")) + background
        frames.append(rng.poisson(lam).astype(np.float32))
    return np.array(frames)


def test_sphere_phi2_limits_and_zeros():
    assert sphere_phi2(np.array([0.0]))[0] == pytest.approx(1.0)
    assert sphere_phi2(np.array([4.4934]))[0] < 1e-8
    x = np.linspace(0.001, 0.05, 7)  # the small-x branch agrees with the closed form
    closed = (3 * (np.sin(x * 50) - x * 50 * np.cos(x * 50)) / (x * 50) ** 3) ** 2
    assert np.allclose(sphere_phi2(x * 50), closed, rtol=1e-6)


def test_smeared_profile_is_the_ring_average_of_the_sharp_one():
    assert smeared_phi2(np.array([0.0]))[0] == pytest.approx(1.0, rel=1e-6)
    # far out, Φ(sx)² oscillates as 9 cos²(sx) / (sx)⁴: over the size spread the rings average out to
    # 4.5/x⁴ · E[s⁻⁴] (E by Monte Carlo over the same Gaussian, an independent route)
    x = np.array([30.0, 45.0])
    s = np.random.default_rng(0).normal(1.0, SMEAR_SD, 2_000_000)
    assert np.allclose(smeared_phi2(x), 4.5 / x**4 * np.mean(s**-4.0), rtol=0.03)
    assert np.all(np.diff(smeared_phi2(np.linspace(5, 40, 200))) < 0)  # no rings left


def test_radial_profile_of_a_flat_frame_is_flat_and_counts_pixels():
    det, q, weight, bins = _detector_bins()
    frame = np.full((1, *det.shape), 2.5, np.float32)
    prof = bins.profiles(frame)
    assert np.allclose(prof, 2.5)
    assert bins.count.sum() <= (~det.mask).sum()
    assert np.all(np.diff(bins.q) > 0)


def test_sphere_fit_recovers_radius_and_fluence_from_poisson_shots():
    det, q, weight, bins = _detector_bins()
    radii = [28.0, 35.0, 41.0]
    fluences = [3e23, 1e23, 6e22]
    frames = _sphere_frames(det, q, weight, radii, fluences)
    fits = fit_spheres(bins.profiles(frames), bins)
    for f, r, j in zip(fits, radii, fluences, strict=True):
        assert f.radius / 10 == pytest.approx(r, rel=5e-3)
        assert f.quality > 0.5 and f.visibility > 0.8
        assert fluence_from_amplitude(f.amplitude, f.radius, 0.43) == pytest.approx(j, rel=0.1)


def test_sphere_fit_sees_a_flat_background():
    det, q, weight, bins = _detector_bins()
    frames = _sphere_frames(det, q, weight, [35.0], [1e23], background=0.3, seed=3)
    (f,) = fit_spheres(bins.profiles(frames), bins)
    assert f.radius / 10 == pytest.approx(35.0, rel=5e-3)
    assert f.background == pytest.approx(0.3, rel=0.15)


def test_featureless_shot_has_low_quality():
    det, q, weight, bins = _detector_bins()
    rng = np.random.default_rng(1)
    qa = np.linalg.norm(q, axis=-1)
    lam = 2e3 / (1 + (qa / 0.004) ** 2) ** 2  # a smooth blob, no rings
    (f,) = fit_spheres(bins.profiles(rng.poisson(lam)[None].astype(np.float32)), bins)
    assert f.quality < 0.3


def test_first_minimum_contrast_of_a_sphere_is_deep():
    det, q, weight, bins = _detector_bins()
    frames = _sphere_frames(det, q, weight, [35.0], [3e23])
    prof = bins.profiles(frames)[0]
    assert first_minimum_contrast(prof, bins.q, 350.0) < 0.2


def test_fluence_from_amplitude_inverts_the_photon_formula():
    radius, density, j = 300.0, 0.43, 2.5e23
    n_e = sphere_electrons(radius, density)
    amplitude = j * R_E**2 * n_e**2
    assert fluence_from_amplitude(amplitude, radius, density) == pytest.approx(j, rel=1e-12)
    assert n_e == pytest.approx(density * 4 / 3 * math.pi * radius**3)


def test_hit_spread_recovers_peak_fluence_and_hit_radius():
    rng = np.random.default_rng(7)
    w, h, j0 = 1.5e-6, 1.2e-6, 4e23
    r = h * np.sqrt(rng.random(20000))
    sigma = w / (2 * math.sqrt(2 * math.log(2)))
    spread = hit_spread(j0 * np.exp(-r**2 / (2 * sigma**2)), w)
    assert spread.peak_fluence == pytest.approx(j0, rel=0.02)
    assert spread.hit_radius == pytest.approx(h, rel=0.02)


def test_hit_spread_with_jitter_puts_part_of_the_spread_on_the_pulses():
    rng = np.random.default_rng(8)
    w, h, j0, jitter = 1.5e-6, 0.8e-6, 4e23, 0.3
    r = h * np.sqrt(rng.random(40000))
    sigma = w / (2 * math.sqrt(2 * math.log(2)))
    s2 = math.log1p(jitter**2)
    pulse = rng.lognormal(-s2 / 2, math.sqrt(s2), r.size)
    spread = hit_spread(j0 * pulse * np.exp(-r**2 / (2 * sigma**2)), w, jitter=jitter)
    assert spread.peak_fluence == pytest.approx(j0, rel=0.05)
    assert spread.hit_radius == pytest.approx(h, rel=0.08)


def test_read_noise_from_negative_values():
    rng = np.random.default_rng(2)
    frames = (rng.poisson(0.05, (20, 1, 64, 64)) + rng.normal(0, 0.2, (20, 1, 64, 64))).astype(np.float32)
    assert read_noise_from_negatives(frames, np.ones((1, 64, 64), bool)) == pytest.approx(0.2, rel=0.05)


def test_smeared_table_matches_the_quadrature():
    from spisim.realrun.fit import _smeared_interp

    x = np.random.default_rng(4).uniform(0, 120, 500)
    assert np.allclose(_smeared_interp(x), smeared_phi2(x), rtol=1e-3, atol=1e-12)
