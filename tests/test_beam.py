"""Tests of spisim.beam: units, fluence normalisation and profile, particle positions, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from spisim.beam import Beam
from spisim.constants import EV
from spisim.errors import ConfigError


def test_wavelength_photons_and_units():
    beam = Beam(photon_energy_ev=1600.0, pulse_energy_j=2e-3, focus_diameter_m=1.5e-6)
    assert beam.wavelength_angstrom == pytest.approx(12398.419843 / 1600.0, rel=1e-9)
    assert beam.wavelength_m == pytest.approx(beam.wavelength_angstrom * 1e-10, rel=1e-15)
    assert beam.photons_per_pulse == pytest.approx(2e-3 / (1600.0 * 1.602176634e-19), rel=1e-12)
    assert beam.wavenumber_per_angstrom == pytest.approx(2 * math.pi / beam.wavelength_angstrom)
    assert beam.pulse_energy == pytest.approx(2e-3, rel=1e-12)
    by_photons = Beam(photon_energy_ev=9000.0, pulse_photons=3e11)
    assert by_photons.photons_per_pulse == 3e11
    assert by_photons.pulse_energy == pytest.approx(3e11 * 9000.0 * EV, rel=1e-12)


def test_from_wavelength_round_trip():
    beam = Beam.from_wavelength(7.3, pulse_photons=1e12, focus_diameter_m=2e-7, profile="flattop")
    assert beam.wavelength_angstrom == pytest.approx(7.3, rel=1e-12)
    assert beam.profile == "flattop"
    again = Beam.from_dict(beam.to_dict())
    assert again == beam
    from_lambda = Beam.from_dict({"wavelength_angstrom": 2.0, "pulse_energy_j": 1e-3})
    assert from_lambda.photon_energy_ev == pytest.approx(12398.419843 / 2.0, rel=1e-9)


@pytest.mark.parametrize("diameter", [0.3e-6, 1.7e-6])
def test_gaussian_fluence_integrates_to_photons_per_pulse(diameter):
    beam = Beam(photon_energy_ev=1700.0, pulse_energy_j=1.3e-3, focus_diameter_m=diameter)
    half = 4.0 * diameter
    x = np.linspace(-half, half, 1201)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    j = beam.fluence_at(np.stack([xx, yy], axis=-1))
    total = np.trapezoid(np.trapezoid(j, x, axis=1), x)
    assert total == pytest.approx(beam.photons_per_pulse, rel=1e-6)


def test_flattop_fluence_integrates_to_photons_per_pulse():
    beam = Beam(photon_energy_ev=6000.0, pulse_photons=5e12, focus_diameter_m=2e-6, profile="flattop")
    radius = 1e-6

    def ring(r: float) -> float:
        return float(beam.fluence_at(np.array([r, 0.0]))) * 2 * math.pi * r

    total, _ = integrate.quad(ring, 0, 3 * radius, points=[radius], epsabs=0, epsrel=1e-10)
    assert total == pytest.approx(5e12, rel=1e-8)
    # and on a 2D grid (edge pixels limit the accuracy to ~1e-3)
    x = np.linspace(-1.5 * radius, 1.5 * radius, 1501)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    grid_total = beam.fluence_at(np.stack([xx, yy], -1)).sum() * (x[1] - x[0]) ** 2
    assert grid_total == pytest.approx(5e12, rel=3e-3)


def test_gaussian_profile_shape_matches_fwhm_definition():
    beam = Beam(photon_energy_ev=1600.0, pulse_photons=1e12, focus_diameter_m=1e-6)
    assert beam.peak_fluence == pytest.approx(1e12 * 4 * math.log(2) / (math.pi * 1e-12), rel=1e-12)
    # half maximum at r = FWHM/2 in any direction; a (..., 3) input ignores z
    angles = np.linspace(0, 2 * np.pi, 7)
    pts = 0.5e-6 * np.stack([np.cos(angles), np.sin(angles), np.full(7, 123.0)], axis=-1)
    np.testing.assert_allclose(beam.fluence_at(pts), beam.peak_fluence / 2, rtol=1e-12)
    r = np.array([0.2e-6, 0.9e-6, 1.4e-6])
    sigma = 1e-6 / (2 * math.sqrt(2 * math.log(2)))
    expected = beam.peak_fluence * np.exp(-(r**2) / (2 * sigma**2))
    np.testing.assert_allclose(beam.fluence_at(np.stack([r / math.sqrt(2)] * 2, -1)), expected, rtol=1e-12)


def test_flattop_is_flat_inside_and_zero_outside():
    beam = Beam(photon_energy_ev=1600.0, pulse_photons=1e12, focus_diameter_m=2e-6, profile="flattop")
    assert beam.peak_fluence == pytest.approx(1e12 / (math.pi * 1e-12), rel=1e-12)
    j = beam.fluence_at(np.array([[0.0, 0.0], [0.7e-6, -0.7e-6], [1.0e-6, 0.1e-6], [0, 1.2e-6]]))
    np.testing.assert_array_equal(j, [beam.peak_fluence, beam.peak_fluence, 0.0, 0.0])


def test_sample_positions_are_uniform_in_the_focus_disk():
    rng = np.random.default_rng(7)
    beam = Beam(photon_energy_ev=1600.0, pulse_photons=1e12, focus_diameter_m=1e-6)
    pts = np.array([beam.sample_position(rng) for _ in range(4000)])
    r = np.hypot(pts[:, 0], pts[:, 1])
    assert pts.shape == (4000, 3) and np.all(pts[:, 2] == 0)
    assert r.max() <= 0.5e-6
    # uniform in a disk: P(r < R/2) = 1/4, and the mean is at the centre
    assert np.mean(r < 0.25e-6) == pytest.approx(0.25, abs=0.025)
    assert abs(pts[:, 0].mean()) < 0.03e-6 and abs(pts[:, 1].mean()) < 0.03e-6
    wide = Beam(photon_energy_ev=1600.0, pulse_photons=1e12, focus_diameter_m=1e-6, sample_radius_m=3e-6)
    many = wide.sample_positions(np.random.default_rng(8), 4000)
    assert np.hypot(many[:, 0], many[:, 1]).max() == pytest.approx(3e-6, rel=0.01)
    assert np.mean(np.hypot(many[:, 0], many[:, 1]) < 1.5e-6) == pytest.approx(0.25, abs=0.025)


def test_same_rng_seed_same_position():
    beam = Beam(photon_energy_ev=1600.0, pulse_photons=1e12)
    a = beam.sample_position(np.random.default_rng(3))
    b = beam.sample_position(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(photon_energy_ev=0.0, pulse_energy_j=1e-3),
        dict(photon_energy_ev=-5.0, pulse_energy_j=1e-3),
        dict(photon_energy_ev=float("nan"), pulse_energy_j=1e-3),
        dict(photon_energy_ev=1600.0),
        dict(photon_energy_ev=1600.0, pulse_energy_j=1e-3, pulse_photons=1e12),
        dict(photon_energy_ev=1600.0, pulse_energy_j=-1e-3),
        dict(photon_energy_ev=1600.0, pulse_photons=0),
        dict(photon_energy_ev=1600.0, pulse_photons=1e12, focus_diameter_m=0.0),
        dict(photon_energy_ev=1600.0, pulse_photons=1e12, profile="lorentzian"),
        dict(photon_energy_ev=1600.0, pulse_photons=1e12, polarization="circular"),
        dict(photon_energy_ev=1600.0, pulse_photons=1e12, sample_radius_m=-1.0),
        dict(photon_energy_ev="lots", pulse_photons=1e12),
    ],
)
def test_invalid_beams_raise_one_line_config_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        Beam(**kwargs)
    assert "\n" not in str(err.value) and str(err.value)


def test_invalid_inputs_elsewhere():
    with pytest.raises(ConfigError):
        Beam.from_wavelength(0.0, pulse_photons=1e12)
    with pytest.raises(ConfigError, match="unknown beam option"):
        Beam.from_dict({"photon_energy_ev": 1600, "pulse_photons": 1e12, "colour": "blue"})
    with pytest.raises(ConfigError):
        Beam.from_dict({"photon_energy_ev": 1600, "wavelength_angstrom": 7, "pulse_photons": 1e12})
    beam = Beam(photon_energy_ev=1600.0, pulse_photons=1e12)
    with pytest.raises(ConfigError):
        beam.fluence_at(np.zeros((4, 5)))


def test_replace_revalidates_and_switches_pulse_size():
    beam = Beam(photon_energy_ev=1600.0, pulse_energy_j=1e-3, polarization="unpolarized")
    assert beam.polarization == "none"
    other = beam.replace(pulse_photons=2e12)
    assert other.pulse_energy_j is None and other.photons_per_pulse == 2e12
    assert beam.pulse_energy_j == 1e-3  # the original is unchanged
    with pytest.raises(ConfigError):
        beam.replace(focus_diameter_m=-1.0)
