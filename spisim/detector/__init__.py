"""Detector geometry: tiles in the lab frame, per-pixel q, solid angle, polarisation, masks, assembly.

Lab frame: x horizontal, y vertical (up), z along the beam, interaction point at the origin, metres.

* :class:`Panel` — one rectangular tile (EXtra-geom's ``GeometryFragment`` idea).
* :class:`GeometryFile` — a description (tiles, data shape, mask, metadata) as the readers (CrystFEL, psana,
  CXI pixel grids: :func:`read_geometry`) and the presets give it; they never build a :class:`Detector`.
* :class:`Detector` — tiles plus the data layout ``(modules, ss, fs)``, checked, with per-pixel q, solid angle and
  polarisation; constructors ``from_geometry``, ``square``, ``example``, ``preset``, ``from_crystfel``,
  ``from_psana``, ``from_cxi``, ``from_extra_geom``, ``load``, ``from_spec`` call the readers.
* :class:`AssemblyMap` — reusable nearest-pixel assembly into a 2D image.
"""

from .assemble import AssemblyMap
from .geometry import POLARIZATION_KINDS, Detector, normalise_polarization
from .panels import GeometryFile, Panel, rotation_x, rotation_y, rotation_z
from .presets import DEFAULT_DISTANCES_M, PRESET_ALIASES, PRESET_NAMES
from .readers import read_geometry

__all__ = [
    "AssemblyMap",
    "DEFAULT_DISTANCES_M",
    "Detector",
    "GeometryFile",
    "POLARIZATION_KINDS",
    "PRESET_ALIASES",
    "PRESET_NAMES",
    "Panel",
    "normalise_polarization",
    "read_geometry",
    "rotation_x",
    "rotation_y",
    "rotation_z",
]
