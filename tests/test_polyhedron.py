"""The continuum polyhedron (icosahedron): its form factor against independent formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spisim.errors import ConfigError
from spisim.manifest import parse_manifest
from spisim.particles import UniformPolyhedron, icosahedron_vertices, make_particle
from spisim.scene import continuum_form_factor

PHI = (1 + math.sqrt(5)) / 2


def _cube(half: float, density: float = 1.0) -> UniformPolyhedron:
    v = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)])
    faces = []
    for f in [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]:
        p = v[list(f)]
        outward = np.dot(np.cross(p[1] - p[0], p[2] - p[0]), p.mean(0)) > 0
        faces.append(f if outward else f[::-1])
    return UniformPolyhedron(v, tuple(faces), density)


def test_cube_equals_the_product_of_sincs_in_every_direction():
    half = 37.0
    cube = _cube(half, 0.5)
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3000, 3)) * 0.06
    q[:6] = [[0.03, 0, 0], [0, 0.02, 0], [0, 0, 0.01], [1e-9, 0, 0.04], [0, 0, 0], [0.02, 0.02, 0]]  # face normals
    exact = 0.5 * (2 * half) ** 3 * np.prod(np.sinc(q * half / np.pi), axis=1)
    assert np.allclose(cube.form_factor(q), exact, atol=1e-10 * abs(exact).max(), rtol=0)


def test_icosahedron_volume_and_radius_of_gyration_are_the_analytic_ones():
    r = 123.0
    ico = UniformPolyhedron.icosahedron(r, 0.43)
    edge = min(np.linalg.norm(a - b) for a in icosahedron_vertices(r) for b in icosahedron_vertices(r) if
               np.linalg.norm(a - b) > 0)
    assert ico.volume == pytest.approx(5 / 12 * (3 + math.sqrt(5)) * edge**3, rel=1e-12)
    assert ico.radius_of_gyration() == pytest.approx(math.sqrt(3 * PHI**2 * edge**2 / 20), rel=1e-12)
    assert ico.form_factor(np.zeros((1, 3)))[0] == pytest.approx(0.43 * ico.volume, rel=1e-12)
    assert ico.max_radius() == pytest.approx(r)


def test_icosahedron_form_factor_matches_a_numerical_volume_integral():
    r = 60.0
    ico = UniformPolyhedron.icosahedron(r, 1.0)
    # a fine grid of cells: keep the cells whose centre lies inside every face plane (independent route)
    h = 1.0
    ax = np.arange(-r, r + h, h)
    pts = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    inside = np.ones(len(pts), bool)
    for face in ico.faces:
        p = ico.vertices[list(face)]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        inside &= (pts - p[0]) @ n <= 0
    pts = pts[inside]
    rng = np.random.default_rng(1)
    q = rng.normal(size=(12, 3))
    q *= (rng.uniform(0.005, 0.08, 12) / np.linalg.norm(q, axis=1))[:, None]
    # cells straddling the surface make the grid's volume off by a fraction of a percent: compare the shapes
    numeric = np.array([np.exp(1j * pts @ qq).sum() for qq in q]) / len(pts)
    analytic = ico.form_factor(q) / ico.volume
    assert len(pts) * h**3 == pytest.approx(ico.volume, rel=0.01)
    assert np.allclose(analytic, numeric, rtol=0, atol=2e-3)
    assert np.abs(analytic.imag).max() < 1e-9 * ico.volume  # centrosymmetric: real


def test_array_generic_twin_and_make_particle():
    ico = make_particle({"shape": "icosahedron", "radius_nm": 20, "model": "continuum", "electron_density": 0.4})
    assert isinstance(ico, UniformPolyhedron)
    q = np.random.default_rng(2).normal(size=(50, 3)) * 0.03
    assert np.allclose(continuum_form_factor(ico, q), ico.form_factor(q))


def test_manifest_icosahedron_continuum_on_request_atoms_by_default():
    base = "beam: {photon_energy: 1.6 keV, pulse_energy: 1 mJ}\ndetector: {preset: square, n_pixels: 16}\n"
    auto = parse_manifest(base + "particles: [{shape: icosahedron, radius: 20 nm}]")
    assert not auto.spec.particles[0].continuum  # auto keeps the atomistic icosahedron (existing datasets)
    cont = parse_manifest(base + "particles: [{shape: icosahedron, radius: 20 nm, model: continuum}]")
    assert cont.spec.particles[0].continuum
    with pytest.raises(ConfigError, match="lobed"):
        parse_manifest(base + "particles: [{shape: lobed, radius: 20 nm, model: continuum}]")


def test_faces_in_the_wrong_order_are_refused():
    cube = _cube(10.0)
    with pytest.raises(ConfigError, match="counter-clockwise"):
        UniformPolyhedron(cube.vertices, tuple(f[::-1] for f in cube.faces))
