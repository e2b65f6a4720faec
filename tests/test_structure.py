"""Tests of spisim.structure: reading PDB/mmCIF, filters, alternate locations and assemblies.

Atom counts are those of ../shared/data/README.md; assemblies are checked against gemmi's own
make_assembly where gemmi is right, and against operators composed by hand where it is not.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.spatial import cKDTree

from spisim.errors import ConfigError, InputFileError
from spisim.structure import expand_operator_expression, list_assemblies, load_structure


@pytest.fixture(scope="module")
def structures(shared_data: Path) -> Path:
    return shared_data / "structures"


def _pdb_atom(serial, name, res, chain, seq, xyz, occ=1.0, element="C", altloc=" ", record="ATOM"):
    name4 = name if len(name) == 4 else f" {name:<3}"
    x, y, z = xyz
    return (
        f"{record:<6}{serial:5d} {name4}{altloc:1}{res:>3} {chain:1}{seq:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}{occ:6.2f}{10.0:6.2f}{'':10}{element:>2}"
    )


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


def _same_point_sets(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> bool:
    """True when every point of `a` has a partner in `b` within `tol` and the counts agree."""
    if a.shape != b.shape:
        return False
    d_ab, _ = cKDTree(b).query(a)
    d_ba, _ = cKDTree(a).query(b)
    return bool(d_ab.max() < tol and d_ba.max() < tol)


def _gemmi_positions(model: gemmi.Model) -> np.ndarray:
    return np.array([(a.pos.x, a.pos.y, a.pos.z) for ch in model for r in ch for a in r])


# ---------------------------------------------------------------- plain files, formats, filters


def test_crambin_pdb_and_cif_agree(structures):
    pdb = load_structure(structures / "1crn.pdb", centre=False)
    cif = load_structure(structures / "1crn.cif", centre=False)
    assert len(pdb) == len(cif) == 327
    assert pdb.name == "1crn" and cif.name == "1crn"
    np.testing.assert_allclose(pdb.positions, cif.positions, atol=1e-3)
    np.testing.assert_array_equal(pdb.atomic_numbers, cif.atomic_numbers)
    counts = {int(z): int(n) for z, n in zip(*np.unique(pdb.atomic_numbers, return_counts=True), strict=True)}
    assert counts == {6: 202, 7: 55, 8: 64, 16: 6}


def test_centre_false_keeps_file_coordinates_and_centre_true_centres(structures):
    raw = load_structure(structures / "1crn.pdb", centre=False)
    np.testing.assert_allclose(raw.positions[0], [17.047, 14.099, 3.625])  # ATOM 1 N THR A 1
    centred = load_structure(structures / "1crn.pdb")
    w = raw.atomic_numbers * raw.occupancies
    expected_centre = (w[:, None] * raw.positions).sum(0) / w.sum()
    assert np.linalg.norm(expected_centre) > 5.0  # the file's frame is far from the centre
    np.testing.assert_allclose(centred.positions, raw.positions - expected_centre, atol=1e-9)
    np.testing.assert_allclose(centred.electron_centre(), 0.0, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "without_waters", "with_waters"),
    [("1ubi.pdb", 602, 683), ("1aki.cif", 1001, 1079), ("2cex_skopi.pdb", 2363, 2452), ("1crn.cif", 327, 327)],
)
def test_water_filter_counts(structures, name, without_waters, with_waters):
    assert len(load_structure(structures / name)) == without_waters
    assert len(load_structure(structures / name, keep_waters=True)) == with_waters


def test_water_occupancies_are_kept(structures):
    atoms = load_structure(structures / "1ubi.pdb", keep_waters=True)
    st = gemmi.read_structure(str(structures / "1ubi.pdb"))
    occ = np.array([a.occ for ch in st[0] for r in ch for a in r])
    assert (occ < 1).sum() == 50
    np.testing.assert_allclose(np.sort(atoms.occupancies), np.sort(occ))


def test_gzipped_files_and_format_from_content(structures, tmp_path):
    reference = load_structure(structures / "1crn.pdb", centre=False)
    for src, dst in [("1crn.pdb", "a.pdb.gz"), ("1crn.cif", "b.cif.gz"), ("1crn.cif", "c.txt")]:
        data = (structures / src).read_bytes()
        path = tmp_path / dst
        path.write_bytes(gzip.compress(data) if dst.endswith(".gz") else data)
        atoms = load_structure(path, centre=False)
        np.testing.assert_allclose(atoms.positions, reference.positions, atol=1e-3)
    assert load_structure(tmp_path / "b.cif.gz").name == "b"


def test_pdb_id_resolves_through_the_cache_without_network(structures, tmp_path, monkeypatch):
    monkeypatch.setenv("SPI_PDB_URL", "http://127.0.0.1:9/{ID}.cif.gz")  # never reached
    monkeypatch.delenv("SPI_STRUCTURE_PATH", raising=False)  # the cache, not the shared folder
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "1crn.cif.gz").write_bytes(gzip.compress((structures / "1crn.cif").read_bytes()))
    monkeypatch.chdir(tmp_path)  # no file called 1CRN here
    atoms = load_structure("1CRN", cache_dir=cache)
    assert len(atoms) == 327 and atoms.name == "1crn"


def test_hydrogens_and_deuterium(tmp_path):
    path = _write(
        tmp_path / "h.pdb",
        [
            _pdb_atom(1, "CA", "GLY", "A", 1, (1.0, 2.0, 3.0), element="C"),
            _pdb_atom(2, "HA2", "GLY", "A", 1, (1.5, 2.9, 3.1), element="H"),
            _pdb_atom(3, "DA3", "GLY", "A", 1, (0.3, 2.4, 3.9), element="D"),
            _pdb_atom(4, "O", "HOH", "A", 2, (5.0, 5.0, 5.0), element="O", record="HETATM"),
            _pdb_atom(5, "H1", "HOH", "A", 2, (5.9, 5.0, 5.0), element="H", record="HETATM"),
            _pdb_atom(6, "H2", "HOH", "A", 2, (5.0, 5.9, 5.0), element="H", record="HETATM"),
        ],
    )
    assert load_structure(path).atomic_numbers.tolist() == [6]
    assert load_structure(path, keep_hydrogens=True).atomic_numbers.tolist() == [6, 1, 1]
    assert load_structure(path, keep_waters=True).atomic_numbers.tolist() == [6, 8]
    both = load_structure(path, keep_waters=True, keep_hydrogens=True, centre=False)
    assert both.atomic_numbers.tolist() == [6, 1, 1, 8, 1, 1]
    np.testing.assert_allclose(both.positions[2], [0.3, 2.4, 3.9])


# ---------------------------------------------------------------- alternate locations


@pytest.fixture
def altloc_file(tmp_path) -> Path:
    return _write(
        tmp_path / "alt.pdb",
        [
            _pdb_atom(1, "N", "SER", "A", 1, (0.0, 0.0, 0.0), element="N"),
            _pdb_atom(2, "CA", "SER", "A", 1, (1.0, 0.0, 0.0), occ=0.40, altloc="A"),
            _pdb_atom(3, "CA", "SER", "A", 1, (1.2, 0.3, 0.0), occ=0.60, altloc="B"),
            _pdb_atom(4, "OG", "SER", "A", 1, (2.0, 1.0, 0.0), occ=0.40, element="O", altloc="A"),
            _pdb_atom(5, "OG", "SER", "A", 1, (2.2, 1.4, 0.5), occ=0.60, element="O", altloc="B"),
            _pdb_atom(6, "CB", "ALA", "A", 2, (4.0, 0.0, 1.0), occ=0.70, altloc="A"),
            _pdb_atom(7, "CB", "ALA", "A", 2, (4.1, 0.5, 1.5), occ=0.30, altloc="B"),
            _pdb_atom(8, "SG", "CYS", "B", 1, (9.0, 9.0, 9.0), occ=0.50, element="S", altloc="A"),
        ],
    )


def test_altloc_occupancy_keeps_the_best_conformer_per_atom(altloc_file):
    atoms = load_structure(altloc_file, altloc="occupancy", centre=False)
    np.testing.assert_allclose(
        atoms.positions, [[0, 0, 0], [1.2, 0.3, 0], [2.2, 1.4, 0.5], [4.0, 0.0, 1.0], [9, 9, 9]], atol=1e-6
    )
    np.testing.assert_allclose(atoms.occupancies, [1.0, 1.0, 1.0, 1.0, 0.5])


def test_altloc_first_and_all(altloc_file):
    first = load_structure(altloc_file, altloc="first", centre=False)
    np.testing.assert_allclose(
        first.positions, [[0, 0, 0], [1.0, 0, 0], [2.0, 1.0, 0], [4.0, 0.0, 1.0], [9, 9, 9]], atol=1e-6
    )
    every = load_structure(altloc_file, altloc="all", centre=False)
    assert len(every) == 8
    np.testing.assert_allclose(every.occupancies, [1.0, 0.4, 0.6, 0.4, 0.6, 0.7, 0.3, 0.5])
    best = load_structure(altloc_file, altloc="occupancy")
    electrons = [a.electron_weights().sum() for a in (first, every, best)]
    np.testing.assert_allclose(electrons, electrons[0])
    with pytest.raises(ConfigError, match="altloc must be one of"):
        load_structure(altloc_file, altloc="best")


# ---------------------------------------------------------------- errors


def test_unknown_or_out_of_range_elements_name_the_atom(tmp_path):
    bad = _write(tmp_path / "x.pdb", [_pdb_atom(1, "CA", "GLY", "A", 7, (1, 2, 3), element="X")])
    with pytest.raises(ConfigError, match=r"unknown element for atom 'CA' of residue GLY 7 in chain 'A'"):
        load_structure(bad)
    heavy = _write(tmp_path / "es.pdb", [_pdb_atom(1, "ES", "ES", "C", 3, (1, 2, 3), element="ES")])
    with pytest.raises(ConfigError, match=r"Es \(Z = 99\) outside 1..98.*residue ES 3"):
        load_structure(heavy)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "is empty"),
        (b"HEADER    nothing here\nREMARK   1 no atoms\nEND\n", "contains no atoms"),
        (b"\x1f\x8b\x08\x00garbage-not-gzip", "not a valid gzip file"),
        (b"data_broken\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1 'unterminated\n", "cannot parse"),
        (b"data_empty\n_entry.id EMPTY\n", "no _atom_site coordinates"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_broken_files_give_one_line_input_file_errors(tmp_path, content, pattern):
    path = tmp_path / "broken.cif"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=pattern) as info:
        load_structure(path)
    assert "\n" not in str(info.value)
    # no chained gemmi/zlib traceback behind the message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_truncated_files_say_where_and_why(structures, tmp_path):
    atoms = [ln for ln in (structures / "1crn.pdb").read_text().splitlines() if ln.startswith("ATOM")]
    (tmp_path / "cut.pdb").write_text("\n".join(atoms[:40]) + "\n" + atoms[40][:30] + "\n")
    with pytest.raises(InputFileError) as info:
        load_structure(tmp_path / "cut.pdb")
    assert str(info.value) == (f"cannot parse structure file {tmp_path / 'cut.pdb'}: Problem in line 41: The line "
                               f"is too short to be correct: {atoms[40][:30].rstrip()!r} (is the file truncated?)")
    text = (structures / "1aki.cif").read_text()
    (tmp_path / "cut.cif").write_text(text[:20000])
    line = text[:20000].count("\n") + 1
    with pytest.raises(InputFileError, match=rf"cut.cif: line {line}: parse error \(is the file truncated\?\)$"):
        load_structure(tmp_path / "cut.cif")


@pytest.mark.parametrize(("field", "shown"), [("abc.def", "abc.def"), ("        ", ""), (" 1.2.3.4", "1.2.3.4"),
                                              ("     nan", "nan"), ("    -inf", "-inf"), ("  12,5  ", "12,5")])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_non_numeric_pdb_coordinate_is_an_error_with_its_line(tmp_path, field, shown, axis):
    """gemmi reads 'abc.def' and blanks as 0 and '1.2.3.4' as 1.2: the record is refused, with its line."""
    rng = np.random.default_rng(axis)
    lines = ["HEADER    TEST", *(_pdb_atom(i + 1, "CA", "GLY", "A", i + 1, rng.uniform(-20, 20, 3)) for i in range(6))]
    good = _write(tmp_path / "good.pdb", lines)
    assert len(load_structure(good)) == 6
    lines[4] = lines[4][: 30 + 8 * axis] + field + lines[4][38 + 8 * axis :]
    bad = _write(tmp_path / "bad.pdb", lines)
    with pytest.raises(InputFileError) as info:
        load_structure(bad)
    cols = f"{31 + 8 * axis}-{38 + 8 * axis}"
    assert str(info.value) == (f"structure file {bad}, line 5: coordinate {'xyz'[axis]} (columns {cols}) is "
                               f"{shown!r}, not a number: {lines[4][:54]!r}")
    assert info.value.__cause__ is None


@pytest.mark.parametrize("value", ["abc.def", "?", ".", "nan", "1.2.3"])
def test_a_non_numeric_mmcif_coordinate_is_an_error_with_its_line(tmp_path, value):
    """gemmi reads a non-numeric Cartn_x/y/z as NaN: the row is refused, with its line and atom id."""
    rng = np.random.default_rng(7)
    pdb = "\n".join(_pdb_atom(i + 1, "CA", "GLY", "A", i + 1, rng.uniform(-20, 20, 3)) for i in range(20)) + "\nEND\n"
    text = gemmi.read_pdb_string(pdb).make_mmcif_document().as_string()
    lines = text.splitlines()
    tags = [ln.split()[0] for ln in lines if ln.startswith("_atom_site.")]
    y_col = tags.index("_atom_site.Cartn_y")
    row = next(i for i, ln in enumerate(lines) if ln.startswith("ATOM") and ln.split()[1] == "17")
    tokens = lines[row].split()
    assert len(tokens) == len(tags) and float(tokens[y_col]) != 0  # Cartn_y of atom 17
    good = tmp_path / "good.cif"
    good.write_text(text)
    assert len(load_structure(good)) == 20
    lines[row] = " ".join([*tokens[:y_col], value, *tokens[y_col + 1 :]])
    path = tmp_path / "bad.cif"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError) as info:
        load_structure(path)
    assert str(info.value) == (f"structure file {path}, line {row + 1}: _atom_site.Cartn_y (atom id 17) is "
                               f"{value!r}, not a number")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_structure(tmp_path / "nope.pdb")
    with pytest.raises(InputFileError, match="not a file"):
        load_structure(tmp_path)


def test_only_waters_without_keep_waters_is_an_error(tmp_path):
    path = _write(tmp_path / "w.pdb", [_pdb_atom(1, "O", "HOH", "A", 1, (0, 0, 0), element="O", record="HETATM")])
    with pytest.raises(InputFileError, match="no atoms left"):
        load_structure(path)
    assert len(load_structure(path, keep_waters=True)) == 1


# ---------------------------------------------------------------- operator expressions


def test_expand_operator_expression():
    assert expand_operator_expression("1") == [("1",)]
    assert expand_operator_expression("P") == [("P",)]
    assert expand_operator_expression("(1-3)") == [("1",), ("2",), ("3",)]
    assert expand_operator_expression("1,2") == [("1",), ("2",)]
    assert expand_operator_expression("(1,5-6)(X0)") == [("1", "X0"), ("5", "X0"), ("6", "X0")]
    assert expand_operator_expression(" (1-2) (61, 62) ") == [("1", "61"), ("1", "62"), ("2", "61"), ("2", "62")]
    assert len(expand_operator_expression("(1-60)(61-88)")) == 1680
    for bad in ["", "(1-2", "(1,,2)", "(3-1)", "()"]:
        with pytest.raises(ValueError):
            expand_operator_expression(bad)


_SYNTHETIC_CIF = """data_TEST
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_entity_id
_atom_site.label_seq_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
_atom_site.auth_seq_id
_atom_site.auth_asym_id
_atom_site.pdbx_PDB_model_num
ATOM   1 C CA . GLY A 1 1 1.0 2.0 3.0 1.0 10.0 1 A 1
ATOM   2 O O  . GLY A 1 1 2.5 -1.0 0.5 1.0 10.0 1 A 1
HETATM 3 FE FE . FE B 2 . -4.0 0.0 7.0 1.0 10.0 2 A 1
loop_
_pdbx_struct_assembly.id
1
2
3
loop_
_pdbx_struct_assembly_gen.assembly_id
_pdbx_struct_assembly_gen.oper_expression
_pdbx_struct_assembly_gen.asym_id_list
1 '(1)(2)' A
1 '3' B
2 '(2)(1)' A,B
3 '(1-3)' A
loop_
_pdbx_struct_oper_list.id
_pdbx_struct_oper_list.type
_pdbx_struct_oper_list.matrix[1][1]
_pdbx_struct_oper_list.matrix[1][2]
_pdbx_struct_oper_list.matrix[1][3]
_pdbx_struct_oper_list.vector[1]
_pdbx_struct_oper_list.matrix[2][1]
_pdbx_struct_oper_list.matrix[2][2]
_pdbx_struct_oper_list.matrix[2][3]
_pdbx_struct_oper_list.vector[2]
_pdbx_struct_oper_list.matrix[3][1]
_pdbx_struct_oper_list.matrix[3][2]
_pdbx_struct_oper_list.matrix[3][3]
_pdbx_struct_oper_list.vector[3]
1 'rotate 90 deg about z' 0 -1 0 0   1 0 0 0   0 0 1 0
2 'translate x'           1 0 0 10   0 1 0 0   0 0 1 0
3 'translate z'           1 0 0 0    0 1 0 0   0 0 1 -5
"""


def test_product_expressions_apply_right_to_left(tmp_path):
    path = tmp_path / "synthetic.cif"
    path.write_text(_SYNTHETIC_CIF)
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    shift = np.array([10.0, 0, 0])
    chain_a = np.array([[1.0, 2.0, 3.0], [2.5, -1.0, 0.5]])
    fe = np.array([-4.0, 0.0, 7.0])
    one = load_structure(path, assembly="1", centre=False)
    expected_one = np.vstack([(chain_a + shift) @ rot.T, fe + [0, 0, -5]])  # (1)(2): shift first, then rotate
    np.testing.assert_allclose(one.positions, expected_one, atol=1e-12)
    assert one.atomic_numbers.tolist() == [6, 8, 26]
    two = load_structure(path, assembly="2", centre=False)
    expected_two = np.vstack([chain_a, fe]) @ rot.T + shift  # (2)(1): rotate first, then shift
    np.testing.assert_allclose(two.positions, expected_two, atol=1e-12)
    assert len(load_structure(path, assembly="3")) == 6
    assert len(load_structure(path, assembly=None)) == 3
    assert list_assemblies(path) == {"1": 2, "2": 1, "3": 3}
    with pytest.raises(ConfigError, match=r"unknown assembly 'PAU'.*'1', '2', '3'"):
        load_structure(path, assembly="PAU")


def test_assembly_given_as_int(tmp_path):
    path = tmp_path / "synthetic.cif"
    path.write_text(_SYNTHETIC_CIF)
    by_int, by_name = load_structure(path, assembly=3), load_structure(path, assembly="3")
    assert len(by_int) == 6
    np.testing.assert_array_equal(by_int.positions, by_name.positions)


def test_missing_operator_is_an_input_file_error(tmp_path):
    path = tmp_path / "bad_op.cif"
    path.write_text(_SYNTHETIC_CIF.replace("3 '(1-3)' A", "3 '(1-4)' A"))
    with pytest.raises(InputFileError, match=r"operator\(s\) 4 .* not in _pdbx_struct_oper_list"):
        load_structure(path, assembly=None)


# ---------------------------------------------------------------- real assemblies (README counts)


def test_2buk_biomt_assembly_matches_gemmi(structures):
    path = structures / "2buk.pdb"
    assert len(load_structure(path, assembly=None, keep_waters=True)) == 1588
    assert len(load_structure(path)) == 60 * 1430  # waters dropped by default
    full = load_structure(path, keep_waters=True, centre=False)
    assert len(full) == 95_280
    st = gemmi.read_structure(str(path))
    reference = gemmi.make_assembly(st.assemblies[0], st[0], gemmi.HowToNameCopiedChain.Short)
    assert _same_point_sets(full.positions, _gemmi_positions(reference))
    assert 18 < 2 * full.max_radius() / 10 < 23  # about 20 nm across (README)
    with pytest.raises(ConfigError, match=r"available assemblies are '1'"):
        load_structure(path, assembly="2")


def test_1f2n_assemblies_including_x0_and_p_expressions(structures):
    path = structures / "1f2n.cif"
    assert list_assemblies(path) == {"1": 60, "2": 1, "3": 5, "4": 6, "5": 1, "6": 60}
    full = load_structure(path, keep_waters=True, centre=False)
    assert len(full) == 283_800
    st = gemmi.read_structure(str(path))
    reference = gemmi.make_assembly(st.assemblies[0], st[0], gemmi.HowToNameCopiedChain.Short)
    assert _same_point_sets(full.positions, _gemmi_positions(reference))
    x0 = load_structure(path, assembly="6", keep_waters=True, centre=False)  # '(X0)(1-60)', X0 = identity
    assert _same_point_sets(x0.positions, full.positions)
    # 'P' (transform to point frame), composed by hand from the oper_list read here
    block = gemmi.cif.read(str(path)).sole_block()
    table = block.find(
        "_pdbx_struct_oper_list.",
        ["id"] + [f"matrix[{i}][{j}]" for i in (1, 2, 3) for j in (1, 2, 3)] + [f"vector[{i}]" for i in (1, 2, 3)],
    )
    row = next(r for r in table if r[0] == "P")
    values = np.array([float(row[k]) for k in range(1, 13)])
    rot, vec = values[:9].reshape(3, 3), values[9:]
    asym = load_structure(path, assembly=None, keep_waters=True, centre=False)
    p_frame = load_structure(path, assembly="5", keep_waters=True, centre=False)
    np.testing.assert_allclose(p_frame.positions, asym.positions @ rot.T + vec, atol=1e-9)
    assert len(load_structure(path, assembly="4", keep_waters=True)) == 6 * 4730


def test_3j6r_biomt_assembly_counts(structures):
    path = structures / "3j6r.pdb.gz"
    full = load_structure(path, keep_waters=True, keep_hydrogens=True)
    assert len(full) == 1_032_840
    assert len(load_structure(path)) == 60 * (17_214 - 5_748)  # hydrogens dropped by default
    assert 500 < 2 * full.max_radius() < 700  # ~60 nm across (README)
    np.testing.assert_allclose(full.electron_centre(), 0.0, atol=1e-6)


def _oper_list(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    block = gemmi.cif.read(str(path)).sole_block()
    tags = [f"matrix[{i}][{j}]" for i in (1, 2, 3) for j in (1, 2, 3)] + [f"vector[{i}]" for i in (1, 2, 3)]
    out = {}
    for row in block.find("_pdbx_struct_oper_list.", ["id", *tags]):
        v = np.array([float(row[k]) for k in range(1, 13)])
        out[row[0]] = (v[:9].reshape(3, 3), v[9:])
    return out


def test_1m4x_product_expression_against_hand_composition(structures):
    path = structures / "1m4x.cif.gz"
    ops = _oper_list(path)
    asym = load_structure(path, assembly=None, centre=False)
    assert len(asym) == 9693
    for name, left, right in [("3", range(1, 6), range(61, 89)), ("PAU", ["P"], range(61, 89))]:
        got = load_structure(path, assembly=name, centre=False)
        expected = []
        for i in left:
            r_i, t_i = ops[str(i)]
            for j in right:
                r_j, t_j = ops[str(j)]
                expected.append((asym.positions @ r_j.T + t_j) @ r_i.T + t_i)  # right operator first
        expected = np.vstack(expected)
        assert len(got) == len(expected)
        np.testing.assert_allclose(got.positions, expected, atol=1e-9)


@pytest.mark.slow
def test_1m4x_full_assembly_has_1680_copies_that_do_not_clash(structures):
    path = structures / "1m4x.cif.gz"
    assert list_assemblies(path)["1"] == 1680
    atoms = load_structure(path)
    assert len(atoms) == 1680 * 9693 == 16_284_240
    radius_nm = atoms.max_radius() / 10
    assert 85 < radius_nm < 100  # ~190 nm across (README)
    # copies are contiguous blocks; atoms of different copies must not overlap (the reversed product
    # order, build-then-rotate swapped, puts ~3 % of these atoms within 2 Å of another copy)
    sample = atoms.positions.reshape(1680, 9693, 3)[:, ::20]
    copy = np.repeat(np.arange(1680), sample.shape[1])
    pairs = cKDTree(sample.reshape(-1, 3)).query_pairs(2.0, output_type="ndarray")
    inter = int((copy[pairs[:, 0]] != copy[pairs[:, 1]]).sum())
    assert inter < 1e-4 * copy.size
    shell = np.linalg.norm(sample.reshape(-1, 3), axis=1) / 10
    assert shell.min() > 0.75 * radius_nm  # a capsid: a shell, not a filled ball


def test_6zu5_ribosome_count(structures):
    atoms = load_structure(structures / "6zu5.cif.gz")
    assert len(atoms) == 165_175
    assert set(np.unique(atoms.atomic_numbers).tolist()) == {6, 7, 8, 12, 15, 16, 30}
    assert math.isclose(atoms.max_radius() / 10, 16.0, rel_tol=0.1)
