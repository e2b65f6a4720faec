"""Tests of spisim.particles: analytic form factors against numerical integrals, atomistic shapes
against their volumes, densities and radii of gyration, and the spec registry."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from scipy import integrate, special
from scipy.spatial import ConvexHull

from spisim.atoms import Atoms
from spisim.errors import ConfigError
from spisim.particles import (
    MATERIALS,
    NACL_ELECTRON_DENSITY,
    PROTEIN_ELECTRON_DENSITY,
    WATER_ELECTRON_DENSITY,
    UniformShell,
    UniformSphere,
    UniformSpheroid,
    icosahedron,
    lobe_layout,
    lobed,
    make_particle,
    shell,
    sphere,
    spheroid,
)

AVOGADRO = 6.02214076e23


def _random_q(rng: np.random.Generator, n: int, q_max: float) -> np.ndarray:
    """(n, 3) vectors with random directions and magnitudes from ~1e-4 up to q_max (1/Å)."""
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    mags = np.concatenate([[1e-4, 3e-3], rng.uniform(0.0, q_max, n - 2)])
    return d * mags[:, None]


def _radial_integral(q: float, rho: float, r_in: float, r_out: float) -> float:
    """∫ 4π r² ρ sin(qr)/(qr) dr over r_in..r_out, numerically."""

    def integrand(r: float) -> float:
        return 4 * math.pi * r * r * rho * np.sinc(q * r / math.pi)  # np.sinc(x) = sin(πx)/(πx)

    scale = 4 / 3 * math.pi * r_out**3 * rho
    value, _ = integrate.quad(integrand, r_in, r_out, limit=400, epsabs=1e-12 * scale, epsrel=1e-11)
    return value


# ---------------------------------------------------------------- constants


def test_electron_density_constants_from_first_principles():
    water = 0.9982 / 18.015 * AVOGADRO * 10 / 1e24  # g/cm³ / (g/mol) · N_A · e  per Å³
    nacl = 2.165 / 58.44 * AVOGADRO * 28 / 1e24
    assert WATER_ELECTRON_DENSITY == pytest.approx(water, rel=1e-3)
    assert WATER_ELECTRON_DENSITY == pytest.approx(0.334, abs=0.001)
    assert NACL_ELECTRON_DENSITY == pytest.approx(nacl, rel=1e-3)
    assert NACL_ELECTRON_DENSITY == pytest.approx(0.62, abs=0.01)
    # averagine residue: 111.1 Da and 59.4 electrons at 1.35 g/cm³
    protein = MATERIALS["protein"]
    assert protein.formula_mass_da == pytest.approx(111.1254, abs=0.01)
    assert protein.electrons_per_formula == pytest.approx(59.378, abs=0.01)
    assert PROTEIN_ELECTRON_DENSITY == pytest.approx(1.35 / 111.1254 * AVOGADRO * 59.378 / 1e24, rel=1e-3)
    assert 0.42 < PROTEIN_ELECTRON_DENSITY < 0.44


# ---------------------------------------------------------------- continuum form factors


def test_uniform_sphere_against_radial_integral():
    rng = np.random.default_rng(11)
    radius, rho = 137.0, 0.41
    particle = UniformSphere(radius, rho)
    q = _random_q(rng, 25, 0.12)
    f = particle.form_factor(q)
    assert f.dtype == np.complex128 and f.shape == (25,)
    assert np.all(f.imag == 0)
    f0 = rho * 4 / 3 * math.pi * radius**3
    assert particle.n_electrons == pytest.approx(f0, rel=1e-12)
    expected = np.array([_radial_integral(np.linalg.norm(v), rho, 0.0, radius) for v in q])
    np.testing.assert_allclose(f.real, expected, rtol=1e-7, atol=1e-9 * f0)
    assert particle.form_factor(np.zeros((1, 3)))[0].real == pytest.approx(f0, rel=1e-14)


def test_sphere_series_and_closed_form_join_smoothly():
    particle = UniformSphere(100.0, 1.0)
    x = np.array([0.01, 0.0499, 0.0501, 0.2])  # q·R on both sides of the series cut at 0.05
    q = np.column_stack([x / 100.0, np.zeros(4), np.zeros(4)])
    expected = np.array([_radial_integral(v / 100.0, 1.0, 0.0, 100.0) for v in x])
    np.testing.assert_allclose(particle.form_factor(q).real, expected, rtol=1e-10)


def _spheroid_integral(qx: float, qz: float, a: float, c: float, rho: float) -> float:
    """F of a uniform spheroid for q = (qx, 0, qz): slices of discs, ∫ e^{i qz z} πs² 2J1(qx s)/(qx s) dz."""

    def disc(z: float) -> float:
        s = a * math.sqrt(max(0.0, 1.0 - (z / c) ** 2))
        arg = qx * s
        airy = 1.0 if arg < 1e-8 else 2.0 * special.j1(arg) / arg
        return rho * math.pi * s * s * airy * math.cos(qz * z)

    value, _ = integrate.quad(disc, -c, c, limit=400, epsabs=1e-10, epsrel=1e-11)
    return value


def test_uniform_spheroid_against_disc_slice_integral():
    rng = np.random.default_rng(5)
    a, c, rho = 80.0, 150.0, 0.3
    particle = UniformSpheroid(a, c, rho)
    for _ in range(12):
        qx, qz = rng.uniform(-0.06, 0.06, 2)
        phi = rng.uniform(0, 2 * math.pi)  # rotational symmetry about z: any azimuth
        q = np.array([[qx * math.cos(phi), qx * math.sin(phi), qz]])
        expected = _spheroid_integral(abs(qx), qz, a, c, rho)
        assert particle.form_factor(q)[0].real == pytest.approx(expected, rel=1e-7, abs=1e-9 * particle.n_electrons)
    assert particle.max_radius() == c
    assert particle.n_electrons == pytest.approx(rho * 4 / 3 * math.pi * a * a * c)


def test_spheroid_reduces_to_spheres():
    rng = np.random.default_rng(2)
    q = _random_q(rng, 40, 0.1)
    np.testing.assert_allclose(
        UniformSpheroid(90.0, 90.0, 0.5).form_factor(q), UniformSphere(90.0, 0.5).form_factor(q), rtol=1e-13
    )
    a, c = 60.0, 110.0
    particle = UniformSpheroid(a, c, 1.0)
    qs = np.linspace(0.0, 0.15, 31)
    along_x = particle.form_factor(np.column_stack([qs, 0 * qs, 0 * qs])).real / particle.n_electrons
    along_z = particle.form_factor(np.column_stack([0 * qs, 0 * qs, qs])).real / particle.n_electrons
    sphere_a, sphere_c = UniformSphere(a, 1.0), UniformSphere(c, 1.0)
    np.testing.assert_allclose(
        along_x, sphere_a.form_factor(np.column_stack([qs, 0 * qs, 0 * qs])).real / sphere_a.n_electrons, atol=1e-13
    )
    np.testing.assert_allclose(
        along_z, sphere_c.form_factor(np.column_stack([0 * qs, qs, 0 * qs])).real / sphere_c.n_electrons, atol=1e-13
    )


def test_shell_is_outer_minus_inner_sphere():
    rng = np.random.default_rng(9)
    q = _random_q(rng, 30, 0.1)
    outer, inner, rho = 120.0, 95.0, 0.43
    s = UniformShell(outer, inner, rho)
    expected = UniformSphere(outer, rho).form_factor(q) - UniformSphere(inner, rho).form_factor(q)
    np.testing.assert_allclose(s.form_factor(q), expected, rtol=1e-10, atol=1e-9 * s.n_electrons)
    radial = np.array([_radial_integral(np.linalg.norm(v), rho, inner, outer) for v in q[:8]])
    np.testing.assert_allclose(s.form_factor(q[:8]).real, radial, rtol=1e-7, atol=1e-9 * s.n_electrons)
    assert s.n_electrons == pytest.approx(rho * 4 / 3 * math.pi * (outer**3 - inner**3))
    # radius of gyration: ∫ r⁴ dr / ∫ r² dr over the shell
    rg2 = integrate.quad(lambda r: r**4, inner, outer)[0] / integrate.quad(lambda r: r**2, inner, outer)[0]
    assert s.radius_of_gyration() == pytest.approx(math.sqrt(rg2), rel=1e-10)
    assert s.max_radius() == outer


def test_continuum_validation():
    with pytest.raises(ConfigError, match=r"shape \(P, 3\)"):
        UniformSphere(10.0, 0.4).form_factor(np.zeros(3))
    with pytest.raises(ConfigError, match="positive"):
        UniformSphere(-1.0, 0.4)
    with pytest.raises(ConfigError, match="inner < outer"):
        UniformShell(10.0, 12.0, 0.4)
    with pytest.raises(ConfigError, match="electron_density"):
        UniformSpheroid(10.0, 12.0, float("nan"))


# ---------------------------------------------------------------- atomistic shapes


def test_atomistic_sphere_count_density_radius_and_composition():
    radius_nm = 3.0
    atoms = sphere(radius_nm, seed=3)
    r = radius_nm * 10
    volume = 4 / 3 * math.pi * r**3
    protein = MATERIALS["protein"]
    assert len(atoms) == round(protein.atom_density * volume)
    assert atoms.electron_weights().sum() / volume == pytest.approx(PROTEIN_ELECTRON_DENSITY, rel=2e-3)
    assert np.linalg.norm(atoms.positions, axis=1).max() <= r
    assert atoms.radius_of_gyration() == pytest.approx(math.sqrt(3 / 5) * r, rel=0.02)
    # uniform: the inner half-radius ball holds 1/8 of the atoms (binomial, 5 sigma)
    inner = (np.linalg.norm(atoms.positions, axis=1) < r / 2).mean()
    assert abs(inner - 1 / 8) < 5 * math.sqrt(1 / 8 * 7 / 8 / len(atoms))
    fractions = protein.atom_fractions()
    for z, frac in fractions.items():
        assert (atoms.atomic_numbers == z).sum() == pytest.approx(frac * len(atoms), abs=1)
    # elements are mixed in space: carbon's Rg like everyone's
    carbon = Atoms(atoms.positions[atoms.atomic_numbers == 6], np.full((atoms.atomic_numbers == 6).sum(), 6))
    assert carbon.radius_of_gyration() == pytest.approx(math.sqrt(3 / 5) * r, rel=0.03)


def test_atomistic_particles_are_deterministic_given_the_seed():
    a, b, c = sphere(2.0, seed=7), sphere(2.0, seed=7), sphere(2.0, seed=8)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.atomic_numbers, b.atomic_numbers)
    assert len(a) == len(c) and not np.allclose(a.positions, c.positions)
    ico1, ico2 = icosahedron(2.0, seed=1), icosahedron(2.0, seed=1)
    np.testing.assert_array_equal(ico1.positions, ico2.positions)


def test_without_hydrogens_keeps_heavy_atom_density():
    with_h = sphere(2.5, seed=0)
    without = sphere(2.5, seed=0, hydrogens=False)
    assert 1 not in without.atomic_numbers
    heavy = int((with_h.atomic_numbers > 1).sum())
    assert abs(len(without) - heavy) <= 1
    volume = 4 / 3 * math.pi * 25.0**3
    heavy_electrons = PROTEIN_ELECTRON_DENSITY * (59.378 - 7.7583) / 59.378
    assert without.electron_weights().sum() / volume == pytest.approx(heavy_electrons, rel=3e-3)


def _icosahedron_reference(circumradius: float) -> np.ndarray:
    """The 12 vertices built here independently: (0, ±1, ±φ) and cyclic permutations."""
    phi = (1 + 5**0.5) / 2
    pts = []
    for s1 in (1, -1):
        for s2 in (1, -1):
            pts += [(0, s1, s2 * phi), (s2 * phi, 0, s1), (s1, s2 * phi, 0)]
    pts = np.array(pts, dtype=float)
    return pts * circumradius / np.linalg.norm(pts[0])


def test_atomistic_icosahedron_inside_and_radius_of_gyration():
    radius_nm = 4.0
    r = radius_nm * 10
    atoms = icosahedron(radius_nm, seed=4)
    verts = _icosahedron_reference(r)
    hull = ConvexHull(verts)
    assert len(hull.simplices) == 20
    # all atoms inside: n·x + d ≤ 0 for every face plane
    inside = atoms.positions @ hull.equations[:, :3].T + hull.equations[:, 3]
    assert inside.max() <= 1e-9
    # volume and Rg of the uniform solid from its 20 tetrahedra (centre + face):
    # a uniform tetrahedron with vertices v_i has <|r|²> = (Σ|v_i|² + |Σ v_i|²) / 20
    vol, second = 0.0, 0.0
    for tri in hull.simplices:
        v = np.vstack([np.zeros(3), verts[tri]])
        t_vol = abs(np.linalg.det(v[1:])) / 6
        vol += t_vol
        second += t_vol * ((v**2).sum() + (v.sum(0) ** 2).sum()) / 20
    rg = math.sqrt(second / vol)
    edge = min(np.linalg.norm(verts[i] - verts[j]) for i, j in combinations(range(12), 2))
    assert vol == pytest.approx(5 / 12 * (3 + 5**0.5) * edge**3, rel=1e-12)
    assert rg == pytest.approx(math.sqrt(3 / 20) * (1 + 5**0.5) / 2 * edge, rel=1e-12)  # Rg² = 3φ²a²/20
    assert len(atoms) == round(MATERIALS["protein"].atom_density * vol)
    assert atoms.radius_of_gyration() == pytest.approx(rg, rel=0.01)
    # uniform: a ball of radius 0.6 r (inside the insphere, 0.795 r) holds its volume share
    frac = (np.linalg.norm(atoms.positions, axis=1) < 0.6 * r).mean()
    expected = 4 / 3 * math.pi * (0.6 * r) ** 3 / vol
    assert abs(frac - expected) < 5 * math.sqrt(expected * (1 - expected) / len(atoms))


def test_atomistic_spheroid_and_shell():
    a_nm, c_nm = 2.0, 3.5
    sp = spheroid(a_nm, c_nm, seed=1)
    a, c = a_nm * 10, c_nm * 10
    p = sp.positions
    assert ((p[:, 0] ** 2 + p[:, 1] ** 2) / a**2 + p[:, 2] ** 2 / c**2).max() <= 1 + 1e-12
    assert sp.radius_of_gyration() == pytest.approx(math.sqrt((2 * a * a + c * c) / 5), rel=0.02)
    assert np.ptp(p[:, 2]) > 1.8 * c > 1.8 * a > 0.5 * np.ptp(p[:, 0])
    sh = shell(3.0, 1.0, seed=2, material="water")
    radii = np.linalg.norm(sh.positions, axis=1)
    assert radii.min() >= 20.0 and radii.max() <= 30.0
    rg_expected = math.sqrt(3 / 5 * (30.0**5 - 20.0**5) / (30.0**3 - 20.0**3))
    assert sh.radius_of_gyration() == pytest.approx(rg_expected, rel=0.02)
    assert set(np.unique(sh.atomic_numbers).tolist()) == {1, 8}
    volume = 4 / 3 * math.pi * (30.0**3 - 20.0**3)
    assert sh.electron_weights().sum() / volume == pytest.approx(WATER_ELECTRON_DENSITY, rel=3e-3)


def test_max_atoms_guard_suggests_the_continuum_model():
    with pytest.raises(ConfigError, match=r"max_atoms=1,000.*continuum"):
        sphere(2.0, max_atoms=1000)
    with pytest.raises(ConfigError, match="continuum"):
        make_particle({"shape": "sphere", "radius_nm": 35})  # 20 M atoms > default 10 M


# ---------------------------------------------------------------- registry


def test_make_particle_builds_both_models():
    atoms = make_particle({"shape": "icosahedron", "radius_nm": 2.0, "seed": 5})
    np.testing.assert_array_equal(atoms.positions, icosahedron(2.0, seed=5).positions)
    cont = make_particle({"shape": "sphere", "radius_nm": 35, "model": "continuum", "seed": 0})
    assert isinstance(cont, UniformSphere)
    assert cont.radius_angstrom == 350.0 and cont.electron_density == PROTEIN_ELECTRON_DENSITY
    water = make_particle({"shape": "spheroid", "a_nm": 10, "c_nm": 20, "model": "continuum", "material": "water"})
    assert isinstance(water, UniformSpheroid) and (water.a, water.c) == (100.0, 200.0)
    assert water.electron_density == WATER_ELECTRON_DENSITY
    sh = make_particle(
        {"shape": "shell", "outer_radius_nm": 30, "thickness_nm": 4, "model": "continuum", "electron_density": 0.5}
    )
    assert isinstance(sh, UniformShell) and (sh.outer, sh.inner, sh.electron_density) == (300.0, 260.0, 0.5)
    small = make_particle({"shape": "sphere", "radius_nm": 1.5, "hydrogens": False, "material": "nacl"})
    assert set(np.unique(small.atomic_numbers).tolist()) == {11, 17}


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"shape": "cube", "radius_nm": 3}, "unknown particle shape 'cube'"),
        ({"shape": "sphere", "radius_nm": 3, "colour": "red"}, "unknown key.*'colour'"),
        ({"shape": "sphere", "radius_nm": 3, "model": "continuum", "max_atoms": 5}, "unknown key.*'max_atoms'"),
        ({"shape": "sphere", "radius_nm": 3, "electron_density": 0.4}, "unknown key.*'electron_density'"),
        ({"shape": "spheroid", "a_nm": 3}, "needs c_nm"),
        ({"shape": "sphere", "radius_nm": 3, "model": "voxels"}, "unknown particle model"),
        ({"shape": "sphere", "radius_nm": 3, "material": "cheese"}, "unknown material 'cheese'"),
        ({"shape": "sphere", "radius_nm": True}, "must be a number"),
        ({"shape": "sphere", "radius_nm": -2}, "positive"),
        ({"shape": "sphere", "radius_nm": 3, "seed": -1}, "seed"),
        ({"shape": "shell", "outer_radius_nm": 3, "thickness_nm": 4}, "exceeds"),
        ({"shape": "lobed", "radius_nm": 3, "lobes": 2, "model": "continuum"}, "no continuum model"),
        ({"shape": "lobed", "radius_nm": 3}, "needs lobes"),
        ({"shape": "lobed", "radius_nm": 3, "lobes": 0}, "lobes must be a positive integer"),
    ],
)
def test_make_particle_rejects_bad_specs(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_particle(spec)


# ---------------------------------------------------------------- lobed bodies


def _lens_union_volume(r1: float, r2: float, d: float) -> float:
    """Volume of the union of two balls (radii r1, r2, centre distance d), closed form (Å³)."""
    v = 4 / 3 * math.pi * (r1**3 + r2**3)
    if d >= r1 + r2:
        return v
    lens = math.pi * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d)
    return v - lens


def test_lobe_layout_is_contiguous_within_the_envelope_and_seeded():
    for seed in range(5):
        centres, radii = lobe_layout(20.0, 5, seed)
        reach = np.linalg.norm(centres, axis=1) + radii
        assert reach.max() == pytest.approx(200.0, rel=1e-12)  # the farthest lobe surface touches 20 nm
        # contiguous: every lobe overlaps at least one other
        d = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        overlap = (d < radii[:, None] + radii[None]) & ~np.eye(5, dtype=bool)
        assert overlap.any(axis=1).all()
    np.testing.assert_array_equal(lobe_layout(20.0, 5, 3)[0], lobe_layout(20.0, 5, 3)[0])
    assert not np.allclose(lobe_layout(20.0, 5, 3)[0], lobe_layout(20.0, 5, 4)[0])


def test_lobed_atom_count_matches_the_closed_form_union_of_two_balls():
    centres, radii = lobe_layout(6.0, 2, seed=1)
    exact = _lens_union_volume(radii[0], radii[1], float(np.linalg.norm(centres[0] - centres[1])))
    body = lobed(6.0, 2, seed=1, hydrogens=False)
    density = MATERIALS["protein"].without_hydrogen().atom_density
    assert len(body) == pytest.approx(density * exact, rel=5e-3)  # Monte Carlo volume, 400k samples
    # every atom lies in a lobe, and the two lobes hold atoms in proportion to their exclusive volumes
    inside = np.linalg.norm(body.positions[:, None] - centres[None], axis=2) <= radii[None] + 1e-9
    assert inside.any(axis=1).all()
    only = [(inside[:, i] & ~inside[:, 1 - i]).sum() for i in range(2)]
    d = float(np.linalg.norm(centres[0] - centres[1]))
    excl = [_lens_union_volume(radii[0], radii[1], d) - 4 / 3 * math.pi * radii[1 - i] ** 3 for i in range(2)]
    assert only[0] / only[1] == pytest.approx(excl[0] / excl[1], rel=0.05)


def test_lobed_body_is_asymmetric_and_one_lobe_is_a_sphere():
    body = lobed(15.0, 4, seed=2)
    x = body.positions - body.positions.mean(axis=0)
    eig = np.linalg.eigvalsh(x.T @ x / len(x))
    assert eig[-1] / eig[0] > 1.3  # a sphere or icosahedron would give 1
    one = lobed(5.0, 1, seed=0, hydrogens=False)
    r = np.linalg.norm(one.positions, axis=1)
    assert r.max() <= 50.0 + 1e-9
    expected = MATERIALS["protein"].without_hydrogen().atom_density * 4 / 3 * math.pi * 50.0**3
    assert len(one) == round(expected)  # one lobe: the union volume is the ball's, exactly
    assert np.median(r) == pytest.approx(50.0 * 0.5 ** (1 / 3), rel=0.02)  # uniform in the ball
    np.testing.assert_array_equal(lobed(4.0, 3, seed=9).positions, lobed(4.0, 3, seed=9).positions)


def test_make_particle_builds_a_continuum_shell_with_a_core():
    p = make_particle({"shape": "shell", "model": "continuum", "outer_radius_nm": 30, "thickness_nm": 4,
                       "electron_density": 0.43, "core_electron_density": 0.38})
    assert isinstance(p, UniformShell) and p.core_density == 0.38 and p.inner == pytest.approx(260.0)
    assert p.n_electrons == pytest.approx(0.43 * 4 / 3 * math.pi * (300.0**3 - 260.0**3)
                                          + 0.38 * 4 / 3 * math.pi * 260.0**3, rel=1e-12)
    with pytest.raises(ConfigError, match="core_electron_density"):
        make_particle({"shape": "sphere", "model": "continuum", "radius_nm": 3, "core_electron_density": 0.3})
    with pytest.raises(ConfigError, match="electron_density must be finite and ≥ 0"):
        UniformShell(300.0, 260.0, 0.43, -0.1)
