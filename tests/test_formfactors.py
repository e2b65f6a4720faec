"""Atomic form factors: IT92 f0 from gemmi and Cromer–Liberman f′, f″."""

from __future__ import annotations

import numpy as np
import pytest

from spisim.errors import ConfigError
from spisim.formfactors import FormFactors, anomalous_correction, atomic_number, f0, it92_coefficients

# International Tables for Crystallography Vol. C (1992), Table 6.1.1.4, typed by hand:
# a1, b1, a2, b2, a3, b3, a4, b4, c (b in Å²).
IT92_ROWS = {
    6: (2.31000, 20.8439, 1.02000, 10.2075, 1.58860, 0.568700, 0.865000, 51.6512, 0.215600),
    8: (3.04850, 13.2771, 2.28680, 5.70110, 1.54630, 0.323900, 0.867000, 32.9089, 0.250800),
    16: (6.90530, 1.46790, 5.20340, 22.2151, 1.43790, 0.253600, 1.58630, 56.1720, 0.866900),
    26: (11.7695, 4.76110, 7.35730, 0.307200, 3.52220, 15.3535, 2.30450, 76.8805, 1.03690),
}


def _f0_from_row(row: tuple[float, ...], q_abs: np.ndarray) -> np.ndarray:
    s2 = (q_abs / (4 * np.pi)) ** 2
    a, b, c = row[0:8:2], row[1:8:2], row[8]
    return sum(ai * np.exp(-bi * s2) for ai, bi in zip(a, b, strict=True)) + c


@pytest.mark.parametrize("z", sorted(IT92_ROWS))
def test_f0_matches_typed_it92_row(z: int) -> None:
    q = np.random.default_rng(z).uniform(0, 12, 40)
    np.testing.assert_allclose(f0(z, q), _f0_from_row(IT92_ROWS[z], q), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("z", [1, 6, 7, 8, 16, 26, 30, 79, 92, 98])
def test_forward_f0_is_sum_of_coefficients_and_close_to_z(z: int) -> None:
    a, b, c = it92_coefficients(z)
    assert f0(z, 0.0) == pytest.approx(a.sum() + c, rel=1e-12)
    # IT92 fits the neutral atom: f0(0) = Z within a few hundredths of an electron
    assert abs(f0(z, 0.0) - z) < 0.03 + 0.002 * z
    assert np.all(np.diff(f0(z, np.linspace(0, 10, 50))) < 0)  # decreasing with |q|


def test_table_combines_f0_and_anomalous_terms() -> None:
    energy = 9000.0
    ff = FormFactors(["C", "O", "fe", "S", "C"], energy)
    assert FormFactors([6, "S", "8", "Fe"], energy).elements.tolist() == [6, 8, 16, 26]
    assert ff.elements.tolist() == [6, 8, 16, 26]
    q = np.array([0.0, 0.3, 1.7, 4.0])
    table = ff.table(q)
    assert table.shape == (4, 4) and table.dtype == np.complex128
    for row, z in enumerate(ff.elements):
        fp, fpp = anomalous_correction(int(z), energy)
        np.testing.assert_allclose(table[row], _f0_from_row(IT92_ROWS[int(z)], q) + fp + 1j * fpp, rtol=2e-6)
        np.testing.assert_allclose(ff.row(row, q), table[row], rtol=1e-14)
    plain = FormFactors([6, 26], energy, anomalous=False).table(q)
    assert np.all(plain.imag == 0)
    np.testing.assert_allclose(plain.real, table[[0, 3]].real - ff.f_prime[[0, 3], None], rtol=1e-12)


def test_fe_k_edge_gives_strongly_negative_f_prime_and_f_double_prime_jump() -> None:
    fp_edge, _ = anomalous_correction(26, 7112.0)
    fp_far, _ = anomalous_correction(26, 12000.0)
    _, fpp_below = anomalous_correction(26, 7100.0)
    _, fpp_above = anomalous_correction(26, 7130.0)
    assert fp_edge < -8.0 and fp_far > -1.0
    assert fpp_above > 3.0 * fpp_below  # the K absorption edge


def test_anomalous_values_at_cu_kalpha() -> None:
    # International Tables Vol. C Table 4.2.6.8, Cu Kα (8048 eV): Fe f′ −1.134, f″ 3.197; S f′ 0.319, f″ 0.557
    fp, fpp = anomalous_correction("Fe", 8047.8)
    assert fp == pytest.approx(-1.134, abs=0.05) and fpp == pytest.approx(3.197, abs=0.05)
    fp, fpp = anomalous_correction("S", 8047.8)
    assert fp == pytest.approx(0.319, abs=0.05) and fpp == pytest.approx(0.557, abs=0.05)
    # far above every edge of a light atom the corrections vanish
    fp, fpp = anomalous_correction(6, 1e5)
    assert abs(fp) < 0.01 and abs(fpp) < 0.01


def test_index_maps_atoms_to_rows() -> None:
    ff = FormFactors([8, 6, 26], 8000.0)
    np.testing.assert_array_equal(ff.index(np.array([26, 6, 6, 8])), [2, 0, 0, 1])
    with pytest.raises(ConfigError, match="not in this FormFactors"):
        ff.index(np.array([7]))


@pytest.mark.parametrize("bad", [0, 99, 120, "Xx", ""])
def test_unknown_element_is_a_config_error(bad: int | str) -> None:
    with pytest.raises(ConfigError):
        atomic_number(bad)
    with pytest.raises(ConfigError):
        FormFactors([6, bad], 8000.0)


def test_no_anomalous_tables_beyond_uranium_and_bad_energy() -> None:
    with pytest.raises(ConfigError, match="anomalous=False"):
        FormFactors([6, 95], 8000.0)
    assert FormFactors([6, 95], 8000.0, anomalous=False).table(np.zeros(1)).shape == (2, 1)
    with pytest.raises(ConfigError, match="positive"):
        FormFactors([6], -5.0)
