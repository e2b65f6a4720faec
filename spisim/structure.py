"""Read atomic structures (PDB, mmCIF; plain or gzipped; or a PDB ID) into :class:`~spisim.atoms.Atoms`.

The entry point is :func:`load_structure`. It reads the first model of a file with gemmi, filters waters,
hydrogens and alternate conformations, builds a biological assembly and centres the result on its
electron-density centre. Positions are in ångström (Å).

Biological assemblies
---------------------
* mmCIF: ``_pdbx_struct_assembly_gen`` and ``_pdbx_struct_oper_list`` are parsed here rather than by
  gemmi, because gemmi 0.7.5's ``make_assembly`` expands product expressions such as
  ``'(1-60)(61-88)'`` incompletely (60 of 1680 operators for PDB 1M4X). Expressions may be a single
  operator (``1``, ``P``), a list (``(1,2,5)``), a range (``(1-60)``) or a product of parenthesised
  groups: ``(A)(B)`` is every composition a∘b, applied right to left as the mmCIF dictionary
  defines it (first b, then a).
* PDB: ``REMARK 350 BIOMT`` records, as gemmi reads them into ``Structure.assemblies``.

Coordinates are checked after gemmi has read a file: gemmi reads a PDB coordinate such as ``abc.def`` or a
blank field as 0 and ``1.2.3`` as 1.2, and a non-numeric mmCIF ``Cartn_x`` as NaN; here any of these is an
error that names its line.

Operators are applied with numpy to the whole coordinate array at once (n_operators × n_atoms), so
an assembly of millions of atoms takes about a second.
"""

from __future__ import annotations

import gzip
import itertools
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from .atoms import Atoms
from .errors import ConfigError, InputFileError

ALTLOC_MODES = ("occupancy", "all", "first")
"""Ways to treat alternate conformations (see :func:`load_structure`)."""

_STRUCTURE_SUFFIXES = (".gz", ".cif", ".mmcif", ".pdb", ".ent")


@dataclass(frozen=True)
class AssemblyPart:
    """One generator of an assembly: operators applied to a selection of chains.

    Attributes:
        chains: chain identifiers the operators apply to (label_asym_id for mmCIF, author chain
            names for PDB BIOMT records).
        by_subchain: True when `chains` are mmCIF label_asym_ids, False for author chain names.
        operators: (n_operators, 3, 4) float64, each [R | t] mapping x -> R·x + t with t in Å.
    """

    chains: tuple[str, ...]
    by_subchain: bool
    operators: np.ndarray


@dataclass
class _RawAtoms:
    """Atoms of the first model after filtering, before any assembly (private)."""

    positions: np.ndarray  # (N, 3) Å
    atomic_numbers: np.ndarray  # (N,) int16
    occupancies: np.ndarray  # (N,) float64
    chain_codes: np.ndarray  # (N,) int32: index into chain_ids (author chain names)
    subchain_codes: np.ndarray  # (N,) int32: index into subchain_ids (mmCIF label_asym_id)
    chain_ids: dict[str, int]
    subchain_ids: dict[str, int]


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def load_structure(
    source: str | Path,
    *,
    assembly: str | int | None = "auto",
    keep_waters: bool = False,
    keep_hydrogens: bool = False,
    altloc: str = "occupancy",
    cache_dir: Path | None = None,
    centre: bool = True,
) -> Atoms:
    """Read a structure file or PDB ID into :class:`~spisim.atoms.Atoms` (positions in Å).

    Args:
        source: path to a PDB or mmCIF file, plain or gzipped (the format is recognised from the
            content, not the name), or a 4-character PDB ID such as ``"1crn"`` that is looked up in
            (and if needed downloaded to) the PDB cache, see :func:`spisim.pdb_cache.fetch_pdb`.
            An existing path always wins over an ID.
        assembly: ``"auto"`` builds assembly ``"1"`` when the file defines one and otherwise keeps the
            asymmetric unit; ``None`` keeps the asymmetric unit; any other string selects that
            assembly by name (mmCIF ``_pdbx_struct_assembly.id``; for PDB files the BIOMT number).
            An int is taken as its string (``1`` -> ``"1"``).
        keep_waters: keep water molecules (HOH, DOD, WAT, ...).
        keep_hydrogens: keep hydrogen and deuterium atoms.
        altloc: alternate conformations of an atom (same chain, residue number, insertion code and
            atom name, different altloc letter):

            * ``"occupancy"``: keep the conformer of highest occupancy (the first on ties);
            * ``"first"``: keep the first conformer in file order;
            * ``"all"``: keep every conformer with its own occupancy.

            With ``"occupancy"`` and ``"first"`` the kept atom carries the summed occupancy of its
            conformers (capped at 1), so all three modes give the same number of electrons.
        cache_dir: folder of the PDB cache for IDs (default ``$SPI_CACHE_DIR`` or
            ``~/.cache/spi-toolkit/pdb``).
        centre: translate the atoms so that their electron-density centre (Z × occupancy weighted)
            lies at the origin. With False, positions are the file's Cartesian coordinates (after the
            assembly operators).

    Returns:
        Atoms of the first model; ``name`` is the file stem or the PDB ID. Atoms keep file order; in an
        assembly, each operator's copy of the selected atoms is one contiguous block, generator by
        generator and operator by operator in the order of the expanded expression.

    Raises:
        InputFileError: missing, unreadable, corrupt or empty file; a coordinate that is not a finite number
            (the message gives its line); no atoms left after filtering; PDB ID that is neither found
            locally nor downloadable.
        ConfigError: unknown option value, unknown assembly name (the message lists the available
            ones), an atom whose element is unknown or outside Z = 1..98.
    """
    if altloc not in ALTLOC_MODES:
        raise ConfigError(f"altloc must be one of {', '.join(ALTLOC_MODES)}, got {altloc!r}")
    path, name = _resolve_source(source, cache_dir)
    structure, block = _read_file(path)
    raw = _extract_atoms(structure, path, keep_waters=keep_waters, keep_hydrogens=keep_hydrogens, altloc=altloc)
    assemblies = _assemblies_from_block(block, path) if block is not None else _assemblies_from_gemmi(structure)

    chosen = _choose_assembly(assembly, assemblies, path)
    if chosen is None:
        pos, z, occ = raw.positions, raw.atomic_numbers, raw.occupancies
    else:
        pos, z, occ = _apply_assembly(raw, assemblies[chosen])
        if pos.shape[0] == 0:
            raise InputFileError(
                f"assembly {chosen!r} of {path} selects no atoms (its chains hold only waters or "
                f"hydrogens that were dropped?)"
            )
    if centre:
        w = z.astype(np.float64) * occ
        total = w.sum()
        if total > 0:
            pos -= (w @ pos) / total
    return Atoms(pos, z, occ, name)


def list_assemblies(source: str | Path, *, cache_dir: Path | None = None) -> dict[str, int]:
    """Assemblies a structure defines: name -> number of copies of the selected chains (operators).

    `source` as in :func:`load_structure`. For an assembly with several generators, the number is the
    sum of their operator counts.
    """
    path, _ = _resolve_source(source, cache_dir)
    structure, block = _read_file(path)
    assemblies = _assemblies_from_block(block, path) if block is not None else _assemblies_from_gemmi(structure)
    return {name: sum(p.operators.shape[0] for p in parts) for name, parts in assemblies.items()}


def expand_operator_expression(expression: str) -> list[tuple[str, ...]]:
    """Expand an mmCIF ``oper_expression`` into operator-id tuples.

    Each returned tuple lists operator ids left to right; the transformation it stands for is their
    composition applied right to left (the last id acts first), as the mmCIF dictionary defines for
    ``_pdbx_struct_assembly_gen.oper_expression``.

    Examples: ``"1"`` -> [("1",)]; ``"(1-3)"`` -> [("1",), ("2",), ("3",)];
    ``"(1,2)(P)"`` -> [("1", "P"), ("2", "P")]; ``"(X0)(1-2)"`` -> [("X0", "1"), ("X0", "2")].

    Raises:
        ValueError: malformed expression (unbalanced parentheses, empty group, reversed range).
    """
    text = "".join(expression.split())
    if not text:
        raise ValueError("empty operator expression")
    if "(" in text or ")" in text:
        groups = re.findall(r"\(([^()]*)\)", text)
        if "".join(f"({g})" for g in groups) != text:
            raise ValueError(f"malformed operator expression {expression!r}")
    else:
        groups = [text]
    expanded = []
    for group in groups:
        ids: list[str] = []
        for item in group.split(","):
            if not item:
                raise ValueError(f"empty item in operator expression {expression!r}")
            m = re.fullmatch(r"(-?\d+)-(-?\d+)", item)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise ValueError(f"reversed range {item!r} in operator expression {expression!r}")
                ids.extend(str(i) for i in range(lo, hi + 1))
            else:
                ids.append(item)
        expanded.append(ids)
    return [tuple(combo) for combo in itertools.product(*expanded)]


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def _resolve_source(source: str | Path, cache_dir: Path | None) -> tuple[Path, str]:
    """Path of the file to read and the particle name (file stem or PDB ID)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_file():
            raise InputFileError(f"structure {path} is not a file")
        return path, _stem(path)
    from .pdb_cache import fetch_pdb, is_pdb_id

    if isinstance(source, str) and is_pdb_id(source):
        return fetch_pdb(source, cache_dir=cache_dir), source.lower()
    raise InputFileError(f"structure file not found: {path} (give a PDB or mmCIF file, or a 4-character PDB ID)")


def _stem(path: Path) -> str:
    name = path.name
    while True:
        low = name.lower()
        for suffix in _STRUCTURE_SUFFIXES:
            if low.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
        else:
            return name


def _read_text(path: Path) -> str:
    """The file's text, decompressed when it is gzipped (recognised by its magic bytes)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read structure file {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputFileError(f"structure file {path} is not a valid gzip file: {exc}") from None
    if b"\x00" in data[:4096]:
        raise InputFileError(f"structure file {path} is binary, not a PDB or mmCIF text file")
    return data.decode("utf-8", errors="replace")


def _is_cif(text: str) -> bool:
    for line in text[:65536].splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return stripped.lower().startswith("data_")
    return False


def _first_line(exc: BaseException) -> str:
    """gemmi's parse error on one line: ``string:627:4(20000): parse error`` reads ``line 627: parse error``;
    a message that ends in ':' gets the offending line (the next one of gemmi's text) appended."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    first = re.sub(r"^string:(\d+):\d+(?:\(\d+\))?:", r"line \1:", lines[0].strip())
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} {lines[1][:80]!r}"
    if "parse error" in first or "too short" in first:
        first += " (is the file truncated?)"
    return first


def _read_file(path: Path) -> tuple[gemmi.Structure, gemmi.cif.Block | None]:
    """Parse a PDB or mmCIF file; for mmCIF also return the data block (for the assembly tables)."""
    text = _read_text(path)
    if not text.strip():
        raise InputFileError(f"structure file {path} is empty")
    block = None
    try:
        if _is_cif(text):
            doc = gemmi.cif.read_string(text)
            blocks = [
                b
                for b in doc
                if len(b.find_loop("_atom_site.Cartn_x")) > 0 or b.find_value("_atom_site.Cartn_x") is not None
            ]
            if not blocks:
                raise InputFileError(f"mmCIF file {path} has no _atom_site coordinates")
            block = blocks[0]
            structure = gemmi.make_structure_from_block(block)
        else:
            structure = gemmi.read_pdb_string(text)
    except InputFileError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InputFileError(f"cannot parse structure file {path}: {_first_line(exc)}") from None
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise InputFileError(f"structure file {path} contains no atoms (is it a PDB or mmCIF file?)")
    if block is not None:
        _check_cif_coordinates(block, text, path)
    else:
        _check_pdb_coordinates(text, path)
    return structure, block


_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
"""A coordinate field as the PDB format writes it (gemmi reads 'abc.def' or blanks as 0 and '1.2.3' as 1.2)."""


def _check_pdb_coordinates(text: str, path: Path) -> None:
    """InputFileError naming the line of the first ATOM/HETATM record whose x, y or z (columns 31-54) is not a
    finite number. gemmi does not check these fields, so they are checked here, after gemmi has read the file."""
    lines = text.splitlines()
    records = [(i, ln) for i, ln in enumerate(lines) if ln.startswith(("ATOM", "HETATM"))]
    fields = [ln[c : c + 8] for _, ln in records for c in (30, 38, 46)]
    try:
        ok = bool(np.isfinite(np.array(fields, dtype=np.float64)).all()) and all(map(_NUMBER.fullmatch, fields))
    except ValueError:
        ok = False
    if ok:
        return
    for i, ln in records:
        for axis, c in zip("xyz", (30, 38, 46), strict=True):
            value = ln[c : c + 8]
            if not _NUMBER.fullmatch(value) or not np.isfinite(float(value)):
                raise InputFileError(
                    f"structure file {path}, line {i + 1}: coordinate {axis} (columns {c + 1}-{c + 8}) is "
                    f"{value.strip()!r}, not a number: {ln.rstrip()[:54]!r}"
                )


def _check_cif_coordinates(block: gemmi.cif.Block, text: str, path: Path) -> None:
    """InputFileError naming the first _atom_site row (and its line when found) whose Cartn_x/y/z is not a finite
    number (gemmi reads such values as NaN)."""
    columns = [block.find_values(f"_atom_site.Cartn_{axis}") for axis in "xyz"]
    for axis, column in zip("xyz", columns, strict=True):
        values = np.array([gemmi.cif.as_number(v) for v in column], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size == 0:
            continue
        row = int(bad[0])
        value = column[row]
        ids = block.find_values("_atom_site.id")
        atom_id = ids[row] if len(ids) > row else None
        line = _cif_row_line(text, atom_id, value)
        where = f"line {line}" if line else f"row {row + 1} of _atom_site"
        what = f" (atom id {atom_id})" if atom_id is not None else ""
        raise InputFileError(
            f"structure file {path}, {where}: _atom_site.Cartn_{axis}{what} is {value!r}, not a number"
        )


def _cif_row_line(text: str, atom_id: str | None, value: str) -> int | None:
    """1-based line of the _atom_site row with `atom_id` that holds `value` (rows written one per line), or None."""
    if atom_id is None:
        return None
    for i, ln in enumerate(text.splitlines()):
        tokens = ln.split()
        if len(tokens) > 2 and tokens[0] in ("ATOM", "HETATM") and tokens[1] == atom_id and value in tokens:
            return i + 1
    return None


def _describe(atom: gemmi.Atom, residue: gemmi.Residue, chain: gemmi.Chain) -> str:
    icode = residue.seqid.icode.strip()
    return f"atom {atom.name!r} of residue {residue.name} {residue.seqid.num}{icode} in chain {chain.name!r}"


def _extract_atoms(
    structure: gemmi.Structure, path: Path, *, keep_waters: bool, keep_hydrogens: bool, altloc: str
) -> _RawAtoms:
    """Atoms of the first model after the water, hydrogen and altloc filters."""
    model = structure[0]
    xyz: list[tuple[float, float, float]] = []
    z: list[int] = []
    occ: list[float] = []
    chain_codes: list[int] = []
    subchain_codes: list[int] = []
    chain_ids: dict[str, int] = {}
    subchain_ids: dict[str, int] = {}
    alt_groups: dict[tuple, list[int]] = {}
    for chain in model:
        cname = chain.name
        ccode = chain_ids.setdefault(cname, len(chain_ids))
        for residue in chain:
            if not keep_waters and residue.is_water():
                continue
            scode = subchain_ids.setdefault(residue.subchain, len(subchain_ids))
            for atom in residue:
                if not keep_hydrogens and atom.is_hydrogen():
                    continue
                zz = atom.element.atomic_number
                if not 1 <= zz <= 98:
                    what = "unknown element" if zz == 0 else f"element {atom.element.name} (Z = {zz}) outside 1..98"
                    raise ConfigError(
                        f"{what} for {_describe(atom, residue, chain)} in {path}: "
                        f"fix the element column (77-78 in PDB, _atom_site.type_symbol in mmCIF)"
                    )
                if atom.altloc != "\0":
                    key = (cname, residue.seqid.num, residue.seqid.icode, atom.name)
                    alt_groups.setdefault(key, []).append(len(z))
                p = atom.pos
                xyz.append((p.x, p.y, p.z))
                z.append(zz)
                occ.append(atom.occ)
                chain_codes.append(ccode)
                subchain_codes.append(scode)
    if not z:
        raise InputFileError(
            f"no atoms left in {path} after dropping waters and hydrogens "
            f"(keep_waters={keep_waters}, keep_hydrogens={keep_hydrogens})"
        )
    raw = _RawAtoms(
        positions=np.array(xyz, dtype=np.float64).reshape(-1, 3),
        atomic_numbers=np.array(z, dtype=np.int16),
        occupancies=np.array(occ, dtype=np.float64),
        chain_codes=np.array(chain_codes, dtype=np.int32),
        subchain_codes=np.array(subchain_codes, dtype=np.int32),
        chain_ids=chain_ids,
        subchain_ids=subchain_ids,
    )
    if altloc != "all" and alt_groups:
        raw = _resolve_altlocs(raw, alt_groups, altloc)
    return raw


def _resolve_altlocs(raw: _RawAtoms, groups: dict[tuple, list[int]], mode: str) -> _RawAtoms:
    """Keep one conformer per alternate-location group; it carries the group's summed occupancy."""
    keep = np.ones(raw.atomic_numbers.shape[0], dtype=bool)
    occ = raw.occupancies.copy()
    for idx in groups.values():
        if len(idx) == 1:
            continue
        idx_arr = np.asarray(idx)
        group_occ = raw.occupancies[idx_arr]
        best = idx_arr[int(np.argmax(group_occ))] if mode == "occupancy" else idx_arr[0]
        keep[idx_arr] = False
        keep[best] = True
        occ[best] = min(1.0, float(group_occ.sum()))
    return _RawAtoms(
        raw.positions[keep],
        raw.atomic_numbers[keep],
        occ[keep],
        raw.chain_codes[keep],
        raw.subchain_codes[keep],
        raw.chain_ids,
        raw.subchain_ids,
    )


# --------------------------------------------------------------------------------------------------
# assemblies
# --------------------------------------------------------------------------------------------------


def _assemblies_from_gemmi(structure: gemmi.Structure) -> dict[str, list[AssemblyPart]]:
    """Assemblies gemmi read from a PDB file's REMARK 350 BIOMT records."""
    out: dict[str, list[AssemblyPart]] = {}
    for assembly in structure.assemblies:
        parts = []
        for gen in assembly.generators:
            ops = np.array(
                [
                    np.hstack([np.array(op.transform.mat.tolist()), np.array(op.transform.vec.tolist())[:, None]])
                    for op in gen.operators
                ],
                dtype=np.float64,
            ).reshape(-1, 3, 4)
            if len(gen.subchains) and not len(gen.chains):
                parts.append(AssemblyPart(tuple(gen.subchains), True, ops))
            else:
                parts.append(AssemblyPart(tuple(gen.chains), False, ops))
        out[assembly.name] = parts
    return out


def _cif_values(block: gemmi.cif.Block, category: str) -> dict[str, list]:
    table = block.get_mmcif_category(category)
    return {k.lower(): v for k, v in table.items()}


def _assemblies_from_block(block: gemmi.cif.Block, path: Path) -> dict[str, list[AssemblyPart]]:
    """Assemblies of an mmCIF block, from pdbx_struct_assembly_gen and pdbx_struct_oper_list."""
    gen = _cif_values(block, "_pdbx_struct_assembly_gen.")
    if not gen or "assembly_id" not in gen:
        return {}
    oper = _cif_values(block, "_pdbx_struct_oper_list.")
    operators: dict[str, np.ndarray] = {}  # operators with a missing or non-numeric entry are left out
    if oper and "id" in oper:
        for i in range(len(oper["id"])):
            m = np.zeros((3, 4))
            try:
                for r in range(3):
                    for c in range(3):
                        m[r, c] = float(oper[f"matrix[{r + 1}][{c + 1}]"][i])
                    m[r, 3] = float(oper[f"vector[{r + 1}]"][i])
            except (KeyError, TypeError, ValueError):
                continue
            operators[str(oper["id"][i])] = m

    names = [str(x) for x in _cif_values(block, "_pdbx_struct_assembly.").get("id", [])]
    out: dict[str, list[AssemblyPart]] = {name: [] for name in names}
    for aid, expr, asyms in zip(gen["assembly_id"], gen["oper_expression"], gen["asym_id_list"], strict=True):
        aid = str(aid)
        try:
            combos = expand_operator_expression(str(expr))
        except ValueError as exc:
            raise InputFileError(f"mmCIF file {path}, assembly {aid!r}: {exc}") from None
        missing = sorted({op for combo in combos for op in combo if op not in operators})
        if missing:
            raise InputFileError(
                f"mmCIF file {path}, assembly {aid!r}: operator(s) {', '.join(missing)} of expression "
                f"{expr!r} are not in _pdbx_struct_oper_list (or have a non-numeric matrix or vector)"
            )
        chains = tuple(s.strip() for s in str(asyms).split(",") if s.strip())
        out.setdefault(aid, []).append(AssemblyPart(chains, True, _compose(combos, operators)))
    return {name: parts for name, parts in out.items() if parts}


def _compose(combos: list[tuple[str, ...]], operators: dict[str, np.ndarray]) -> np.ndarray:
    """(n_combos, 3, 4) operators, each the right-to-left composition of its ids."""
    out = np.empty((len(combos), 3, 4))
    for k, combo in enumerate(combos):
        rot = np.eye(3)
        vec = np.zeros(3)
        for op_id in combo:  # left to right: x -> A(B x) = R_A R_B x + R_A t_B + t_A
            m = operators[op_id]
            vec = rot @ m[:, 3] + vec
            rot = rot @ m[:, :3]
        out[k, :, :3] = rot
        out[k, :, 3] = vec
    return out


def _choose_assembly(assembly: str | int | None, assemblies: dict[str, list[AssemblyPart]], path: Path) -> str | None:
    if assembly is None:
        return None
    if isinstance(assembly, int) and not isinstance(assembly, bool):
        assembly = str(assembly)  # e.g. `assembly: 1` in a YAML manifest
    if not isinstance(assembly, str):
        raise ConfigError(f"assembly must be a name, 'auto' or None, got {assembly!r}")
    if assembly == "auto":
        return "1" if "1" in assemblies else None
    if assembly in assemblies:
        return assembly
    available = ", ".join(repr(a) for a in assemblies) or "none"
    raise ConfigError(
        f"unknown assembly {assembly!r} in {path}: available assemblies are {available} "
        f"(or None for the asymmetric unit)"
    )


def _apply_assembly(raw: _RawAtoms, parts: list[AssemblyPart]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (M, 3) Å, atomic numbers (M,) and occupancies (M,) of the assembled particle."""
    selections = []
    for part in parts:
        codes, table = (raw.subchain_codes, raw.subchain_ids) if part.by_subchain else (raw.chain_codes, raw.chain_ids)
        wanted = [table[c] for c in part.chains if c in table]
        mask = np.isin(codes, np.array(wanted, dtype=np.int32))
        selections.append(np.flatnonzero(mask))
    total = sum(sel.size * part.operators.shape[0] for sel, part in zip(selections, parts, strict=True))
    pos = np.empty((total, 3), dtype=np.float64)
    z = np.empty(total, dtype=np.int16)
    occ = np.empty(total, dtype=np.float64)
    start = 0
    for sel, part in zip(selections, parts, strict=True):
        n_ops, n_sel = part.operators.shape[0], sel.size
        if n_sel == 0:
            continue
        stop = start + n_ops * n_sel
        block = pos[start:stop].reshape(n_ops, n_sel, 3)
        np.matmul(raw.positions[sel], part.operators[:, :, :3].transpose(0, 2, 1), out=block)
        block += part.operators[:, None, :, 3]
        z[start:stop] = np.tile(raw.atomic_numbers[sel], n_ops)
        occ[start:stop] = np.tile(raw.occupancies[sel], n_ops)
        start = stop
    return pos, z, occ
