"""Exact structure factors: physics checks and agreement of the CPU, CUDA (simulator), NUFFT and numpy paths."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest
from numba import njit

from spisim.atoms import Atoms
from spisim.errors import ConfigError
from spisim.orientation import random_rotations
from spisim.photons import expected_photons
from spisim.scattering import structure_factor
from spisim.scattering.select import choose_method, estimate_direct_seconds, estimate_nufft_seconds
from spisim.scattering.trig import sincos

ENERGY = 8000.0  # eV
WAVELENGTH = 12398.419843320026 / ENERGY  # Å
K = 2 * np.pi / WAVELENGTH  # Å⁻¹
R_E_M = 2.8179403262e-15  # classical electron radius (m), typed here on purpose


def _gemmi_f(z: int, q_abs: np.ndarray, energy: float, anomalous: bool = True) -> np.ndarray:
    """f(|q|) straight from gemmi's IT92 coefficients and Cromer–Liberman (independent of spisim)."""
    it = gemmi.Element(z).it92
    s2 = (np.asarray(q_abs) / (4 * np.pi)) ** 2
    f = sum(a * np.exp(-b * s2) for a, b in zip(it.a, it.b, strict=True)) + it.c
    if anomalous:
        fp, fpp = gemmi.cromer_liberman(z=z, energy=energy)
        f = f + fp + 1j * fpp
    return np.asarray(f, dtype=np.complex128)


def _brute_force(atoms: Atoms, q: np.ndarray, energy: float, anomalous: bool = True) -> np.ndarray:
    """F(q) = Σ occ f(|q|) exp(i q·r) with numpy, atom by atom."""
    q_abs = np.linalg.norm(q, axis=1)
    out = np.zeros(q.shape[0], dtype=np.complex128)
    for r, z, occ in zip(atoms.positions, atoms.atomic_numbers, atoms.occupancies, strict=True):
        out += occ * _gemmi_f(int(z), q_abs, energy, anomalous) * np.exp(1j * (q @ r))
    return out


def _random_atoms(rng: np.random.Generator, n: int, elements=(1, 6, 7, 8, 16, 26), spread: float = 12.0) -> Atoms:
    return Atoms(
        rng.normal(size=(n, 3)) * spread + rng.normal(size=3) * 3,
        rng.choice(elements, n),
        rng.uniform(0.3, 1.0, n),
    )


def _random_q(rng: np.random.Generator, n: int, q_max: float = 1.5) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1)[:, None] * rng.uniform(0, q_max, n)[:, None]


def _flat_detector(n: int = 8, pixel: float = 200e-6, distance: float = 0.1, offset=(1.3e-3, -0.7e-3)):
    """Pixel centres (m), q (Å⁻¹), exact-enough solid angles (sr) and horizontal polarisation of a flat detector."""
    idx = np.arange(n) - n / 2 + 0.5
    xx, yy = np.meshgrid(idx * pixel + offset[0], idx * pixel + offset[1], indexing="ij")
    pos = np.stack([xx.ravel(), yy.ravel(), np.full(n * n, distance)], axis=1)
    dist = np.linalg.norm(pos, axis=1)
    k_out = pos / dist[:, None] * K
    q = k_out - np.array([0.0, 0.0, K])
    solid_angle = pixel**2 * (distance / dist) / dist**2
    polarization = 1.0 - (pos[:, 0] / dist) ** 2
    return q, solid_angle, polarization


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- single atom, photons ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cpu", "cuda", "nufft"])
def test_single_atom_off_origin_scatters_its_form_factor(method: str) -> None:
    rng = np.random.default_rng(1)
    atom = Atoms(np.array([[7.3, -4.1, 11.9]]), np.array([26]), np.array([0.8]))
    q = _random_q(rng, 60, 3.0)
    f = structure_factor(atom, q, ENERGY, method=method)
    expected = 0.8 * _gemmi_f(26, np.linalg.norm(q, axis=1), ENERGY)
    np.testing.assert_allclose(np.abs(f) ** 2, np.abs(expected) ** 2, rtol=1e-8)
    np.testing.assert_allclose(f, expected * np.exp(1j * q @ atom.positions[0]), rtol=1e-7, atol=1e-8)


def test_expected_photons_of_a_single_atom() -> None:
    atom = Atoms(np.array([[-3.0, 5.5, 2.25]]), np.array([16]))
    q, solid_angle, polarization = _flat_detector()
    fluence = 3.7e15 / (np.pi * (0.5e-6) ** 2)  # photons/m²: 3.7e15 photons in a 1 µm spot
    photons = expected_photons(structure_factor(atom, q, ENERGY), fluence, solid_angle, polarization)
    f = _gemmi_f(16, np.linalg.norm(q, axis=1), ENERGY)
    by_hand = fluence * R_E_M**2 * polarization * solid_angle * np.abs(f) ** 2
    np.testing.assert_allclose(photons, by_hand, rtol=1e-6)
    assert photons.shape == (64,) and np.all(photons > 0)


def test_expected_photons_broadcasts_and_is_quadratic_in_f() -> None:
    f = np.array([[1 + 2j, 3.0], [0.5j, -2.0]])
    n = expected_photons(f, 2e20, 1e-6, np.array([1.0, 0.5]))
    np.testing.assert_allclose(n, 2e20 * R_E_M**2 * 1e-6 * np.array([1.0, 0.5]) * np.abs(f) ** 2, rtol=1e-12)
    np.testing.assert_allclose(expected_photons(2 * f, 2e20, 1e-6, 1.0), 4 * expected_photons(f, 2e20, 1e-6, 1.0))


# ---- symmetry ---------------------------------------------------------------------------------


def test_friedel_law_holds_without_anomalous_terms_and_breaks_with_them() -> None:
    rng = np.random.default_rng(2)
    light = _random_atoms(rng, 60, elements=(6, 7, 8))
    heavy = Atoms(
        np.vstack([light.positions, [[4.0, -2.0, 6.0], [-5.0, 3.0, -1.0]]]),
        np.concatenate([light.atomic_numbers, [26, 26]]),
    )
    q = _random_q(rng, 300, 1.2)
    energy = 7150.0  # just above the Fe K edge: f″ ≈ 3.9
    for method in ("cpu", "nufft"):
        f_plus = structure_factor(heavy, q, energy, anomalous=False, method=method)
        f_minus = structure_factor(heavy, -q, energy, anomalous=False, method=method)
        np.testing.assert_allclose(np.abs(f_plus), np.abs(f_minus), rtol=1e-6)
    i_plus = np.abs(structure_factor(heavy, q, energy)) ** 2
    i_minus = np.abs(structure_factor(heavy, -q, energy)) ** 2
    bijvoet = np.abs(i_plus - i_minus) / (i_plus + i_minus)
    assert np.median(bijvoet) > 1e-3 and bijvoet.max() > 1e-2
    # one element alone obeys Friedel's law even with f″ (F = f·S(q), S(−q) = S(q)*)
    only_fe = Atoms(heavy.positions[-2:], heavy.atomic_numbers[-2:])
    np.testing.assert_allclose(
        np.abs(structure_factor(only_fe, q, energy)), np.abs(structure_factor(only_fe, -q, energy)), rtol=1e-10
    )


@pytest.mark.parametrize("method", ["cpu", "nufft"])
def test_rotation_convention(method: str) -> None:
    rng = np.random.default_rng(3)
    atoms = _random_atoms(rng, 80)
    q = _random_q(rng, 200, 0.8)
    r = random_rotations(1, rng)[0]
    f_rot = structure_factor(atoms, q, ENERGY, rotation=r, method=method)
    np.testing.assert_allclose(f_rot, structure_factor(atoms.transformed(r), q, ENERGY, method=method), rtol=1e-7)
    np.testing.assert_allclose(f_rot, structure_factor(atoms, q @ r, ENERGY, method=method), rtol=1e-7)  # F(Rᵀq)
    np.testing.assert_allclose(f_rot, _brute_force(atoms.transformed(r), q, ENERGY), rtol=1e-7)
    assert _rel(f_rot, structure_factor(atoms, q, ENERGY, method=method)) > 0.1  # the rotation matters


# ---- shapes -----------------------------------------------------------------------------------


def test_sphere_of_point_scatterers_has_the_analytic_minima() -> None:
    rng = np.random.default_rng(4)
    radius, n = 40.0, 3000
    u = rng.normal(size=(n, 3))
    points = u / np.linalg.norm(u, axis=1)[:, None] * radius * rng.random(n)[:, None] ** (1 / 3)
    sphere = Atoms(points + np.array([6.0, -3.0, 2.0]), np.full(n, 6))
    q_abs = np.linspace(0.02, 0.35, 150)
    q = (q_abs[:, None, None] * _fibonacci_sphere(200)[None]).reshape(-1, 3)
    f = structure_factor(sphere, q, ENERGY, anomalous=False, method="cpu")
    profile = (np.abs(f) ** 2).reshape(q_abs.size, -1).mean(1) / _gemmi_f(6, q_abs, ENERGY, False).real ** 2
    minima = []
    for i in range(1, q_abs.size - 1):
        if profile[i] < profile[i - 1] and profile[i] < profile[i + 1]:
            a, b, c = profile[i - 1 : i + 2]
            minima.append(q_abs[i] + 0.5 * (a - c) / (a - 2 * b + c) * (q_abs[1] - q_abs[0]))
    # zeros of the sphere amplitude 3(sin x − x cos x)/x³: tan x = x
    np.testing.assert_allclose(np.array(minima[:3]) * radius, [4.4934, 7.7253, 10.9041], rtol=0.02)
    # and the profile follows N + N(N−1)Φ(qR)² where it is large
    x = q_abs * radius
    phi = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    low = x < 3.5
    np.testing.assert_allclose(profile[low], n + n * (n - 1) * phi[low] ** 2, rtol=0.05)


def test_guinier_radius_of_gyration_of_a_protein(shared_data) -> None:
    st = gemmi.read_structure(str(shared_data / "structures" / "2cex_skopi.pdb"))
    st.remove_waters()
    atoms_list = [(a.pos.tolist(), a.element.atomic_number, a.occ) for res in st[0]["A"] for a in res]
    atoms = Atoms(
        np.array([a[0] for a in atoms_list]), np.array([a[1] for a in atoms_list]), np.array([a[2] for a in atoms_list])
    )
    rg = atoms.radius_of_gyration()  # electron weighted
    assert 15 < rg < 30
    q_abs = np.linspace(0.1, 1.0, 12) / rg  # Guinier region q·Rg ≤ 1
    q = (q_abs[:, None, None] * _fibonacci_sphere(400)[None]).reshape(-1, 3)
    intensity = (np.abs(structure_factor(atoms, q, ENERGY)) ** 2).reshape(q_abs.size, -1).mean(1)
    slope = np.polyfit(q_abs**2, np.log(intensity), 1)[0]  # ln I = ln I0 − Rg² q² / 3
    assert np.sqrt(-3 * slope) == pytest.approx(rg, rel=0.02)


# ---- agreement between methods ----------------------------------------------------------------


def test_all_methods_agree_with_brute_force() -> None:
    rng = np.random.default_rng(5)
    atoms = _random_atoms(rng, 20)
    assert len(np.unique(atoms.atomic_numbers)) >= 4
    q = _random_q(rng, 50)
    r = random_rotations(1, rng)[0]
    ref = _brute_force(atoms.transformed(r), q, ENERGY)
    tolerances = {
        ("cpu", "double"): 1e-9,
        ("cuda", "double"): 1e-9,
        ("nufft", "double"): 1e-7,
        ("cpu", "single"): 1e-4,
        ("cuda", "single"): 1e-4,
        ("nufft", "single"): 1e-4,
    }
    for (method, precision), tol in tolerances.items():
        f = structure_factor(atoms, q, ENERGY, rotation=r, method=method, precision=precision)
        assert f.dtype == np.complex128 and f.shape == (50,)
        assert _rel(f, ref) < tol, (method, precision, _rel(f, ref))
        assert np.abs(f - ref).max() < tol * np.abs(ref).max() * 10, (method, precision)
    # single precision is really single: not as exact as double
    assert _rel(structure_factor(atoms, q, ENERGY, rotation=r, method="cpu", precision="single"), ref) > 1e-12


def test_cpu_and_cuda_agree_across_blocks_and_tiles() -> None:
    rng = np.random.default_rng(6)
    atoms = _random_atoms(rng, 150, spread=20.0)  # more atoms than one 128-atom tile
    q = _random_q(rng, 70, 2.0)  # more pixels than one 64-pixel CPU block
    f_cpu = structure_factor(atoms, q, ENERGY, method="cpu")
    np.testing.assert_allclose(structure_factor(atoms, q, ENERGY, method="cuda"), f_cpu, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f_cpu, _brute_force(atoms, q, ENERGY), rtol=1e-10, atol=1e-10)


def test_large_phases_stay_exact() -> None:
    rng = np.random.default_rng(7)
    atoms = _random_atoms(rng, 40, spread=400.0)  # a 100 nm particle: phases of several thousand radians
    q = _random_q(rng, 300, 6.0)
    ref = _brute_force(atoms, q, ENERGY)
    assert np.abs(q @ atoms.positions.T).max() > 2000
    assert _rel(structure_factor(atoms, q, ENERGY, method="cpu"), ref) < 1e-11
    assert _rel(structure_factor(atoms, q, ENERGY, method="cpu", precision="single"), ref) < 1e-3
    assert _rel(structure_factor(atoms, q, ENERGY, method="auto"), ref) < 1e-11  # auto avoids the NUFFT here
    with pytest.raises(ConfigError, match="NUFFT grid"):
        structure_factor(atoms, q, ENERGY, method="nufft")


def test_nufft_tolerance_is_honoured() -> None:
    rng = np.random.default_rng(8)
    atoms = _random_atoms(rng, 200)
    q = _random_q(rng, 500)
    ref = structure_factor(atoms, q, ENERGY, method="cpu")
    err_loose = _rel(structure_factor(atoms, q, ENERGY, method="nufft", nufft_tol=1e-4), ref)
    err_tight = _rel(structure_factor(atoms, q, ENERGY, method="nufft", nufft_tol=1e-11), ref)
    assert err_loose < 1e-3 and err_tight < 1e-9 and err_tight < err_loose / 100


def test_sincos_kernel_is_accurate() -> None:
    @njit
    def evaluate(x, s, c):
        for i in range(x.size):
            s[i], c[i] = sincos(x[i])

    rng = np.random.default_rng(9)
    x = np.concatenate([rng.uniform(-1e5, 1e5, 20000), rng.uniform(-4, 4, 20000), np.arange(-64, 65) * np.pi / 4])
    s, c = np.empty_like(x), np.empty_like(x)
    evaluate(x, s, c)
    assert np.abs(s - np.sin(x)).max() < 5e-16 and np.abs(c - np.cos(x)).max() < 5e-16
    x32 = x[np.abs(x) < 1e3].astype(np.float32)
    s32, c32 = np.empty_like(x32), np.empty_like(x32)
    evaluate(x32, s32, c32)
    assert s32.dtype == np.float32
    assert np.abs(s32 - np.sin(x32.astype(np.float64))).max() < 2e-7
    assert np.abs(c32 - np.cos(x32.astype(np.float64))).max() < 2e-7


@pytest.mark.gpu
def test_real_gpu_paths_agree_with_cpu() -> None:
    rng = np.random.default_rng(14)
    atoms = _random_atoms(rng, 3000, spread=25.0)
    q = _random_q(rng, 20000, 1.0)
    ref = structure_factor(atoms, q, ENERGY, method="cpu")
    assert _rel(structure_factor(atoms, q, ENERGY, method="cuda"), ref) < 1e-9
    assert _rel(structure_factor(atoms, q, ENERGY, method="cuda", precision="single"), ref) < 1e-4


@pytest.mark.gpu
def test_real_gpu_cufinufft_agrees_with_cpu() -> None:
    pytest.importorskip("cupy", reason="the GPU NUFFT path needs cupy")
    pytest.importorskip("cufinufft", reason="the GPU NUFFT path needs cufinufft (pip install '.[gpu]')")
    from spisim.scattering.inputs import group_atoms
    from spisim.scattering.nufft import structure_factor_cufinufft

    rng = np.random.default_rng(15)
    atoms = _random_atoms(rng, 3000, spread=25.0)
    q = _random_q(rng, 20000, 1.0)
    ref = structure_factor(atoms, q, ENERGY, method="cpu")
    groups = group_atoms(atoms, ENERGY)
    assert _rel(structure_factor_cufinufft(groups, q, "double", 1e-9), ref) < 1e-7
    assert _rel(structure_factor_cufinufft(groups, q, "single", 1e-5), ref) < 1e-4


# ---- method choice and errors -----------------------------------------------------------------


def test_auto_method_choice() -> None:
    small = dict(n_elements=5, atom_half_widths=np.full(3, 25.0), q_half_widths=np.full(3, 0.5))
    assert choose_method(2000, 10_000, **small) == "cpu"
    assert choose_method(100_000, 1_000_000, **small) == "nufft"
    assert choose_method(100_000, 1_000_000, **small, gpu=True) == "cuda"
    # a huge space–bandwidth product makes the NUFFT grid expensive: stay direct
    wide = dict(n_elements=5, atom_half_widths=np.full(3, 2000.0), q_half_widths=np.full(3, 3.0))
    assert choose_method(20_000, 20_000, **wide) == "cpu"
    assert estimate_direct_seconds(10, 10) < estimate_nufft_seconds(10, 10, 1, np.ones(3), np.ones(3), 1e-9)
    rng = np.random.default_rng(10)
    atoms = _random_atoms(rng, 30)
    q = _random_q(rng, 40)
    np.testing.assert_allclose(
        structure_factor(atoms, q, ENERGY, method="auto"), _brute_force(atoms, q, ENERGY), rtol=1e-9
    )


def test_empty_inputs() -> None:
    atoms = _random_atoms(np.random.default_rng(11), 5)
    assert structure_factor(atoms, np.zeros((0, 3)), ENERGY, method="cpu").shape == (0,)
    empty = Atoms(np.zeros((0, 3)), np.zeros(0, dtype=int))
    f = structure_factor(empty, _random_q(np.random.default_rng(1), 5), ENERGY, method="cpu")
    np.testing.assert_array_equal(f, np.zeros(5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "gpu"}, "method"),
        ({"precision": "half"}, "precision"),
        ({"rotation": np.diag([1.0, 1.0, -1.0])}, "rotation"),
        ({"rotation": np.eye(2)}, "rotation"),
        ({"method": "nufft", "nufft_tol": 1e-20}, "tolerance"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict, match: str) -> None:
    atoms = _random_atoms(np.random.default_rng(12), 5)
    with pytest.raises(ConfigError, match=match):
        structure_factor(atoms, _random_q(np.random.default_rng(1), 5), ENERGY, **kwargs)


def test_bad_q_is_a_config_error() -> None:
    atoms = _random_atoms(np.random.default_rng(13), 5)
    with pytest.raises(ConfigError, match="shape"):
        structure_factor(atoms, np.zeros((5, 2)), ENERGY)
    with pytest.raises(ConfigError, match="NaN"):
        structure_factor(atoms, np.full((5, 3), np.nan), ENERGY)
