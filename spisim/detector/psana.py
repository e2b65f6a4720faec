"""Read psana (LCLS) geometry ``.data`` files without the psana runtime.

A psana geometry file is a tree of objects, one line each::

    PARENT  PARENT_IND  OBJECT  OBJECT_IND  X0 Y0 Z0 [µm]  ROT_Z ROT_Y ROT_X  TILT_Z TILT_Y TILT_X [deg]

Leaves are sensor segments of a known type (``PNCCD:V1``, ``SENS2X1:V1`` ...). As in psana's
``GeometryObject.transform_geo_coord_arrays``, a child's coordinates go to its parent's frame by
rotating about z, then y, then x by (rotation + tilt) angles and adding (X0, Y0, Z0); an object whose
parent is not itself listed is the top (normally ``IP``), and a positive Z0 under ``IP`` is negated
(psana's frame has z against the beam). psana's frame is turned into the lab frame by
(x, y, z)_lab = (−y, −x, −z)_psana (``GeometryAccess.coords_psana_to_lab_frame``). The data array is
(segments, rows, cols), segments in depth-first file order, as psana stacks them.

Segment pixel layouts (psana ``SegGeometry*`` classes, ``use_wide_pix_center=False``): every segment is
split into ASIC tiles of uniform pitch. Sensors with wider pixels at the ASIC borders (CSPAD 2x1,
ePix100, ePix10ka) keep those pixels at psana's default (non-wide-centre) positions, i.e. on the
uniform grid with the extra width as a gap between tiles, as in psana's CrystFEL conversion; their
larger area is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputFileError
from .panels import GeometryFile, Panel, rotation_x, rotation_y, rotation_z

PSANA_TO_LAB = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
"""(x, y, z)_lab = PSANA_TO_LAB @ (x, y, z)_psana."""


@dataclass(frozen=True)
class SegmentTile:
    """One uniform-pitch tile of a segment, in the segment's frame (µm).

    ``row0, col0``: first row and column in the segment's data; ``centre00``: (x, y) of the centre of
    pixel (row0, col0); ``row_step``/``col_step``: (x, y) step of one row / one column.
    """

    row0: int
    col0: int
    n_rows: int
    n_cols: int
    centre00: tuple[float, float]
    row_step: tuple[float, float]
    col_step: tuple[float, float]


@dataclass(frozen=True)
class SegmentType:
    """A psana sensor type: (rows, cols) of its data and its tiles."""

    rows: int
    cols: int
    tiles: tuple[SegmentTile, ...]


def _matrix_v1(rows: int, cols: int, p_row: float, p_col: float) -> SegmentType:
    # SegGeometryMatrixV1: x = row * p_row, y = col * p_col, origin at the centre of pixel (0, 0).
    return SegmentType(rows, cols, (SegmentTile(0, 0, rows, cols, (0.0, 0.0), (p_row, 0.0), (0.0, p_col)),))


def _matrix_v2(rows: int, cols: int, p_row: float, p_col: float) -> SegmentType:
    # SegGeometryMatrixV2: x = (c - (cols-1)/2) p_col, y = -(r - (rows-1)/2) p_row.
    c00 = (-(cols - 1) / 2 * p_col, (rows - 1) / 2 * p_row)
    return SegmentType(rows, cols, (SegmentTile(0, 0, rows, cols, c00, (0.0, -p_row), (p_col, 0.0)),))


def _cspad_2x1() -> SegmentType:
    # SegGeometryCspad2x1V1: 185 x 388, pixel 109.92 µm, wide (274.8 µm) pixels at the ASIC border.
    p, w = 109.92, 274.80
    first = w - p / 2  # |x| of the innermost column centres (non-wide-centre convention)
    y0 = 92 * p  # y = (92 - row) p
    return SegmentType(
        185,
        388,
        (
            SegmentTile(0, 0, 185, 194, (-(first + 193 * p), y0), (0.0, -p), (p, 0.0)),
            SegmentTile(0, 194, 185, 194, (first, y0), (0.0, -p), (p, 0.0)),
        ),
    )


def _epix_2x2(rows: int, cols: int, p: float, w: float, y_down: bool) -> SegmentType:
    # SegGeometryEpix10kaV1 (y_down=True) and SegGeometryEpix100V1 (y_down=False): 2 x 2 ASICs.
    rh, ch = rows // 2, cols // 2
    first = w - p / 2
    x_left = -(first + (ch - 1) * p)
    tiles = []
    for half in (0, 1):
        if y_down:  # y = first + (rh-1-r) p for the upper half, -(first + (r-rh) p) for the lower half
            y00 = first + (rh - 1) * p if half == 0 else -first
            step = (0.0, -p)
        else:  # y = -(first + (rh-1-r) p) for rows < rh, first + (r-rh) p after
            y00 = -(first + (rh - 1) * p) if half == 0 else first
            step = (0.0, p)
        for right in (0, 1):
            x00 = x_left if right == 0 else first
            tiles.append(SegmentTile(half * rh, right * ch, rh, ch, (x00, y00), step, (p, 0.0)))
    return SegmentType(rows, cols, tuple(tiles))


def _jungfrau(version: int) -> SegmentType:
    # SegGeometryJungfrauV1/V2: 512 x 1024, 2 x 4 ASICs of 256 x 256, 75 µm, 2-pixel gaps between ASICs.
    p = 75.0
    x0 = (-514.5, -256.5, 1.5, 259.5)
    tiles = []
    for half in (0, 1):
        if version == 2:
            y00, step = ((-256.5 if half == 0 else 1.5) * p, (0.0, p))
        else:
            y00, step = ((256.5 if half == 0 else -1.5) * p, (0.0, -p))
        for block in range(4):
            tiles.append(SegmentTile(half * 256, block * 256, 256, 256, (x0[block] * p, y00), step, (p, 0.0)))
    return SegmentType(512, 1024, tuple(tiles))


SEGMENT_TYPES: dict[str, SegmentType] = {
    "PNCCD:V1": _matrix_v1(512, 512, 75.0, 75.0),
    "SENS2X1:V1": _cspad_2x1(),
    "CSPAD2X1:V1": _cspad_2x1(),
    "EPIX10KA:V1": _epix_2x2(352, 384, 100.0, 225.0, y_down=True),
    "EPIX100:V1": _epix_2x2(704, 768, 50.0, 175.0, y_down=False),
    "EPIX100A:V1": _epix_2x2(704, 768, 50.0, 175.0, y_down=False),
    "JUNGFRAU:V1": _jungfrau(1),
    "JUNGFRAU:V2": _jungfrau(2),
}
"""Known psana sensor segments by name (``MTRX:...`` matrix names are parsed on demand)."""


def segment_type(name: str) -> SegmentType | None:
    """The :class:`SegmentType` of psana segment ``name``, or None if ``name`` is not a sensor."""
    if name in SEGMENT_TYPES:
        return SEGMENT_TYPES[name]
    if name.startswith("MTRX:"):
        fields = name.split(":")
        try:
            rows, cols, p_row, p_col = int(fields[-4]), int(fields[-3]), float(fields[-2]), float(fields[-1])
        except (ValueError, IndexError):
            raise ConfigError(
                f"cannot read matrix segment {name!r} (expected MTRX:rows:cols:psize_row:psize_col)"
            ) from None
        return _matrix_v2(rows, cols, p_row, p_col) if fields[1] == "V2" else _matrix_v1(rows, cols, p_row, p_col)
    return None


@dataclass
class _Node:
    pname: str
    pindex: int
    oname: str
    oindex: int
    offset: np.ndarray  # µm
    angles: tuple[float, float, float]  # z, y, x (rotation + tilt), degrees
    children: list[_Node] = field(default_factory=list)

    @property
    def rotation(self) -> np.ndarray:
        az, ay, ax = self.angles
        return rotation_x(ax) @ rotation_y(ay) @ rotation_z(az)


PsanaGeometry = GeometryFile
"""What :func:`read_psana` found: tiles, data shape (segments, rows, cols), mask, metadata."""


def _parse(text: str, path: Path) -> list[_Node]:
    nodes = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 13:
            raise ConfigError(
                f"{path.name}:{lineno}: expected 13 fields (parent, index, object, index, x0 y0 z0, "
                f"3 rotations, 3 tilts), got {len(f)}"
            )
        try:
            pindex, oindex = int(f[1]), int(f[3])
            values = [float(v) for v in f[4:]]
        except ValueError:
            raise ConfigError(f"{path.name}:{lineno}: indices must be integers and positions/angles numbers") from None
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"{path.name}:{lineno}: non-finite position or angle")
        x0, y0, z0, rz, ry, rx, tz, ty, tx = values
        if f[0].startswith("IP") and z0 > 0:  # psana: detector z relative to IP is negative in its frame
            z0 = -z0
        nodes.append(_Node(f[0], pindex, f[2], oindex, np.array([x0, y0, z0]), (rz + tz, ry + ty, rx + tx)))
    if not nodes:
        raise ConfigError(f"{path.name}: no geometry objects (lines of 13 fields) found")
    return nodes


def _build_tree(nodes: list[_Node], path: Path) -> _Node:
    # As psana's GeometryAccess._find_parent: the first object listed with the parent's name and index.
    # Leaves may repeat a (name, index) under different parents (pnCCD: PNCCD:V1 0 in each SEG2Q).
    by_key: dict[tuple[str, int], _Node] = {}
    for n in nodes:
        by_key.setdefault((n.oname, n.oindex), n)
    roots: dict[tuple[str, int], _Node] = {}
    for n in nodes:
        parent = by_key.get((n.pname, n.pindex))
        if parent is n:
            raise ConfigError(f"{path.name}: object {n.oname} {n.oindex} is its own parent")
        if parent is None:
            key = (n.pname, n.pindex)
            if key not in roots:
                roots[key] = _Node("", 0, n.pname, n.pindex, np.zeros(3), (0.0, 0.0, 0.0))
            parent = roots[key]
        parent.children.append(n)
    if len(roots) != 1:
        raise ConfigError(f"{path.name}: the geometry tree has {len(roots)} top objects {sorted(roots)}; expected one")
    root = next(iter(roots.values()))
    reached, stack = 0, list(root.children)
    while stack:
        node = stack.pop()
        reached += 1
        stack.extend(node.children)
    if reached != len(nodes):
        raise ConfigError(f"{path.name}: {len(nodes) - reached} objects form a loop and are not connected to the top")
    return root


def read_psana(path: str | Path) -> PsanaGeometry:
    """Parse a psana geometry file into lab-frame tiles, data shape (segments, rows, cols) and metadata.

    Raises:
        InputFileError: the file is missing or unreadable.
        ConfigError: malformed lines, an unknown sensor segment type, segments of different shapes, a
            broken tree.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        raise InputFileError(f"geometry file not found: {path}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read geometry file {path}: {exc.strerror or exc}") from None
    return psana_geometry_from_text(text, path)


def psana_geometry_from_text(text: str, path: str | Path = "<text>") -> PsanaGeometry:
    """Like :func:`read_psana` for the contents ``text`` of a geometry file (``path`` names it in errors)."""
    path = Path(path)
    root = _build_tree(_parse(text, path), path)
    segments: list[tuple[_Node, SegmentType, np.ndarray, np.ndarray]] = []

    def walk(node: _Node, rot: np.ndarray, off: np.ndarray) -> None:
        # rot/off map this node's frame to the top frame: p_top = rot @ p + off
        for child in node.children:
            c_rot = rot @ child.rotation
            c_off = rot @ child.offset + off
            if child.children:
                walk(child, c_rot, c_off)
                continue
            seg = segment_type(child.oname)
            if seg is None:
                raise ConfigError(
                    f"{path.name}: unknown psana segment type {child.oname!r} "
                    f"(known: {', '.join(sorted(SEGMENT_TYPES))}, MTRX:...)"
                )
            segments.append((child, seg, c_rot, c_off))

    walk(root, np.eye(3), np.zeros(3))
    if not segments:
        raise ConfigError(f"{path.name}: no sensor segments in the geometry tree")
    shapes = {(s.rows, s.cols) for _, s, _, _ in segments}
    if len(shapes) != 1:
        raise ConfigError(f"{path.name}: segments of different shapes {sorted(shapes)} cannot share one data array")
    rows, cols = shapes.pop()
    panels = []
    to_lab = PSANA_TO_LAB * 1e-6  # µm -> m
    for index, (node, seg, rot, off) in enumerate(segments):
        for t, tile in enumerate(seg.tiles):
            col_step = np.array([*tile.col_step, 0.0])
            row_step = np.array([*tile.row_step, 0.0])
            corner_seg = np.array([*tile.centre00, 0.0]) - 0.5 * (col_step + row_step)
            panels.append(
                Panel(
                    corner=to_lab @ (rot @ corner_seg + off),
                    fs_vec=to_lab @ (rot @ col_step),
                    ss_vec=to_lab @ (rot @ row_step),
                    n_fs=tile.n_cols,
                    n_ss=tile.n_rows,
                    module=index,
                    ss_offset=tile.row0,
                    fs_offset=tile.col0,
                    name=f"{node.oname}/{node.oindex}/seg{index}a{t}",
                )
            )
    shape = (len(segments), rows, cols)
    metadata = {
        "source": str(path),
        "format": "psana",
        "segment_type": segments[0][0].oname,
        "top_object": root.oname,
    }
    return PsanaGeometry(panels=panels, shape=shape, mask=np.zeros(shape, dtype=bool), metadata=metadata,
                         name=path.name)
