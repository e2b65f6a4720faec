"""Scenes and patterns against independent formulas: fluence, form factors, coherent sums, hit mixes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spisim.constants import EV, HC_EV_ANGSTROM, R_E
from spisim.cxi import HIT_TYPES
from spisim.generate import Simulator
from spisim.manifest import parse_manifest
from spisim.scene import alias_distance, coherent_groups, place_in_cluster, place_touching

BASE = """
seed: {seed}
shots: 50
beam: {{photon_energy: 1.6 keV, pulse_energy: 0.4 mJ, focus_diameter: 1.5 um, profile: gaussian}}
detector: {{preset: square, n_pixels: 24, pixel_size: 400 um, distance: 0.12 m}}
particles:
{particles}
hits: {hits}
noise: {noise}
"""
SPHERE = "  - {name: s30, shape: sphere, radius: 30 nm, model: continuum, density: 0.41 e/A^3}"


def _sim(particles=SPHERE, hits="{single: 1}", noise="none", seed=3, extra=""):
    text = BASE.format(seed=seed, particles=particles, hits=hits, noise=noise) + extra
    return Simulator(parse_manifest(text))


def _independent_geometry(sim):
    """q (Å⁻¹), ΔΩ (sr) and horizontal P per pixel from the pixel centres, by textbook formulas."""
    pos = sim.detector.pixel_positions.reshape(-1, 3)
    r = np.linalg.norm(pos, axis=1)
    lam = HC_EV_ANGSTROM / 1600.0
    k = 2 * np.pi / lam
    q = k * (pos / r[:, None] - np.array([0.0, 0.0, 1.0]))
    omega = (400e-6) ** 2 * (pos[:, 2] / r) / r**2  # flat pixel facing the beam: A cos α / R²
    pol = 1.0 - (pos[:, 0] / r) ** 2
    return q, omega, pol


def _fluence(xy, pulse_scale):
    n = 0.4e-3 / (1600.0 * EV)
    sigma = 1.5e-6 / (2 * math.sqrt(2 * math.log(2)))
    return pulse_scale * n / (2 * np.pi * sigma**2) * math.exp(-(xy[0] ** 2 + xy[1] ** 2) / (2 * sigma**2))


def _sphere_amplitude(q_abs, radius_a, rho):
    x = q_abs * radius_a
    return rho * 4 / 3 * np.pi * radius_a**3 * 3 * (np.sin(x) - x * np.cos(x)) / x**3


def _matrix(quat):
    w, x, y, z = quat / np.linalg.norm(quat)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def test_noise_off_single_sphere_equals_the_physics():
    sim = _sim()
    q, omega, pol = _independent_geometry(sim)
    for i in range(4):
        frame, lab = sim.shot(i)
        assert frame.dtype == np.float32 and lab.hit_type == HIT_TYPES.index("single")
        j = _fluence(lab.position[0], lab.pulse_scale)
        assert lab.pulse_scale == 1.0 and lab.fluence == pytest.approx(j, rel=1e-12)
        f = _sphere_amplitude(np.linalg.norm(q, axis=1), 300.0, 0.41)
        expected = j * R_E**2 * pol * omega * f**2
        np.testing.assert_allclose(frame.reshape(-1), expected, rtol=2e-4)
        assert lab.total_photons == pytest.approx(expected.sum(), rel=2e-4)
        assert np.linalg.norm(lab.position[0][:2]) <= 0.75e-6 and lab.position[0][2] == 0


def test_spheroid_orientation_follows_the_label_quaternion():
    p = "  - {name: sp, shape: spheroid, radius: 20 nm, polar_radius: 45 nm, model: continuum}"
    sim = _sim(particles=p)
    q, omega, pol = _independent_geometry(sim)
    frame, lab = sim.shot(5)
    rot = _matrix(lab.orientation[0])
    k = q @ rot  # rows: Rᵀ q
    x = np.sqrt(200.0**2 * (k[:, 0] ** 2 + k[:, 1] ** 2) + 450.0**2 * k[:, 2] ** 2)
    f = 0.43 * 4 / 3 * np.pi * 200.0**2 * 450.0 * 3 * (np.sin(x) - x * np.cos(x)) / x**3
    expected = _fluence(lab.position[0], 1.0) * R_E**2 * pol * omega * f**2
    np.testing.assert_allclose(frame.reshape(-1), expected, rtol=2e-4)
    # a different orientation gives a different pattern (the test could fail)
    frame2, _ = sim.shot(6)
    assert np.abs(frame2 - frame).max() > 0.05 * frame.max()


def test_two_touching_spheres_add_coherently_with_position_phases():
    sim = _sim(hits="{multi: 1}", extra="multi: {n_min: 2, n_max: 2, placement: touching}\n")
    q, omega, pol = _independent_geometry(sim)
    frame, lab = sim.shot(2)
    assert lab.n_particles == 2
    t = lab.position  # m
    assert np.linalg.norm(t[0] - t[1]) == pytest.approx(60e-9, rel=1e-9)  # touching: r1 + r2
    f = _sphere_amplitude(np.linalg.norm(q, axis=1), 300.0, 0.41)
    j = np.array([_fluence(p, lab.pulse_scale) for p in t])
    amp = sum(np.sqrt(j[i]) * f * np.exp(1j * (q @ (t[i] * 1e10))) for i in range(2))
    expected = R_E**2 * pol * omega * np.abs(amp) ** 2
    np.testing.assert_allclose(frame.reshape(-1), expected, rtol=5e-4, atol=1e-6 * expected.max())
    incoherent = R_E**2 * pol * omega * f**2 * j.sum()
    assert np.abs(expected - incoherent).max() > 0.2 * incoherent.max()  # the fringes are really there


def test_far_particles_add_incoherently():
    extra = "multi: {n_min: 3, n_max: 3, placement: cluster, cluster_radius: 5 um}\n"
    sim = _sim(hits="{multi: 1}", seed=1, extra=extra)
    limit = sim.pattern_model.alias_limit
    assert 0.05e-6 < limit < 0.5e-6
    q, omega, pol = _independent_geometry(sim)
    f2 = _sphere_amplitude(np.linalg.norm(q, axis=1), 300.0, 0.41) ** 2
    for i in range(6):
        frame, lab = sim.shot(i)
        d = np.linalg.norm(lab.position[:, None] - lab.position[None], axis=-1)
        if (d + np.eye(3) * 1e9).min() > limit:
            j = sum(_fluence(p, lab.pulse_scale) for p in lab.position)
            np.testing.assert_allclose(frame.reshape(-1), R_E**2 * pol * omega * f2 * j, rtol=2e-4)
            return
    pytest.fail("no shot with all particles beyond the aliasing limit")


def test_coherent_groups():
    pos = np.array([[0, 0, 0], [1.0, 0, 0], [5.0, 0, 0], [5.5, 0, 0], [20.0, 0, 0]])
    groups = coherent_groups(pos, 1.2)
    assert sorted(map(sorted, groups)) == [[0, 1], [2, 3], [4]]
    assert coherent_groups(pos, 100.0) == [[0, 1, 2, 3, 4]]
    assert coherent_groups(pos, 100.0, "incoherent") == [[0], [1], [2], [3], [4]]
    assert coherent_groups(pos, 0.1, "coherent") == [[0, 1, 2, 3, 4]]
    assert coherent_groups(pos[:0], 1.0) == []


def test_alias_distance_of_a_square_detector():
    sim = _sim()
    k = 2 * np.pi * 1600.0 / HC_EV_ANGSTROM
    small_angle = np.pi / (k * 400e-6 / 0.12) * 1e-10  # π / Δq with Δq ≈ k p / D near the beam
    assert alias_distance(sim._q, sim.covered) == pytest.approx(small_angle, rel=0.01)


def test_placements():
    rng = np.random.default_rng(0)
    radii = rng.uniform(5, 20, 7)
    pos = place_touching(rng, radii, gap=1.0)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    sums = radii[:, None] + radii[None] + 1.0
    off = ~np.eye(7, dtype=bool)
    assert np.all(d[off] >= sums[off] * (1 - 1e-9))  # no overlaps
    for k in range(1, 7):  # each touches (gap 1) an earlier one
        assert np.isclose(d[k, :k], sums[k, :k], rtol=1e-9).any()
    pos = place_in_cluster(rng, [3.0] * 6, 40.0)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    assert np.linalg.norm(pos, axis=1).max() <= 40.0 and d[~np.eye(6, dtype=bool)].min() >= 6.0


def test_hit_type_mix_and_counts():
    extra = ("multi: {n_min: 2, n_max: 4}\n"
             "unintended: {kinds: {droplet: 2, salt: 1, debris: 1}, debris: {n: [3, 5]}, "
             "droplet: {radius: [20 nm, 40 nm]}}\n")
    sim = _sim(hits="{no_hit: 4, single: 3, multi: 2, unintended: 1}", extra=extra)
    model = sim.scene_model
    n = 4000
    codes, counts, kinds, radii = [], {}, [], []
    for i in range(n):
        scene = model.draw(np.random.default_rng([i, 7]))
        codes.append(scene.hit_type)
        name = HIT_TYPES[scene.hit_type]
        counts.setdefault(name, []).append(len(scene.particles))
        if name == "unintended":
            kinds.append(sim.spec.structure_names[scene.particles[0].structure])
            if kinds[-1] == "droplet":
                radii.append(scene.particles[0].body.particle.a)
    freq = np.bincount(codes, minlength=4) / n
    expected = np.array([0.4, 0.3, 0.2, 0.1])  # HIT_TYPES order: no_hit, single, multi, unintended
    assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / n))
    assert set(counts["no_hit"]) == {0} and set(counts["single"]) == {1}
    assert set(counts["multi"]) == {2, 3, 4}
    kinds = np.array(kinds)
    assert (kinds == "droplet").mean() == pytest.approx(0.5, abs=0.1)
    assert set(np.array(counts["unintended"])[kinds == "debris"]) <= {3, 4, 5}
    assert min(radii) >= 200.0 and max(radii) <= 400.0  # Å


def test_no_hit_shots_hold_only_background():
    noise = "{poisson: false, jitter: 0.3, background: {kind: gas, photons: 80}}"
    sim = _sim(hits="{no_hit: 1}", noise=noise)
    seen = set()
    for i in range(5):
        frame, lab = sim.shot(i)
        assert lab.hit_type == 0 and lab.n_particles == 0 and lab.total_photons == 0
        np.testing.assert_allclose(frame, (sim.effects.background * lab.pulse_scale).astype(np.float32), rtol=1e-6)
        assert lab.background_photons == pytest.approx(80 * lab.pulse_scale)
        seen.add(round(lab.pulse_scale, 6))
    assert len(seen) == 5  # the jitter changes from shot to shot
    frame, _ = _sim(hits="{no_hit: 1}").shot(0)
    assert not frame.any()  # without background a miss is dark


def test_shots_do_not_depend_on_order():
    a = _sim(hits="balanced", noise="{jitter: 0.2, background: {photons: 30}}")
    b = _sim(hits="balanced", noise="{jitter: 0.2, background: {photons: 30}}")
    in_order = [a.shot(i) for i in range(6)]
    for i in (5, 2, 0):
        frame, lab = b.shot(i)
        np.testing.assert_array_equal(frame, in_order[i][0])
        assert lab.total_photons == in_order[i][1].total_photons
        np.testing.assert_array_equal(lab.orientation, in_order[i][1].orientation)


def test_atomistic_particle_matches_the_exact_path():
    from spisim.scattering import structure_factor

    p = "  - {name: blob, shape: spheroid, radius: 2 nm, polar_radius: 3 nm, model: atoms}"
    sim = _sim(particles=p)
    q, omega, pol = _independent_geometry(sim)
    frame, lab = sim.shot(0)
    atoms = sim.scene_model.particles[0].body.atoms
    f = structure_factor(atoms, q, 1600.0, rotation=_matrix(lab.orientation[0]), method="cpu")
    expected = _fluence(lab.position[0], 1.0) * R_E**2 * pol * omega * np.abs(f) ** 2
    rel = np.linalg.norm(frame.reshape(-1) - expected) / np.linalg.norm(expected)
    assert rel < 0.01  # the fast path's stated accuracy
