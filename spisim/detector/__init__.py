"""Detector geometry: tiles in the lab frame, per-pixel q, solid angle, polarisation, masks, assembly.

Lab frame: x horizontal, y vertical (up), z along the beam, interaction point at the origin, metres.

* :class:`Panel` — one rectangular tile (EXtra-geom's ``GeometryFragment`` idea).
* :class:`Detector` — tiles plus the data layout ``(modules, ss, fs)``; constructors ``square``,
  ``example``, ``preset``, ``from_crystfel``, ``from_psana``, ``from_extra_geom``, ``load``.
* :class:`AssemblyMap` — reusable nearest-pixel assembly into a 2D image.
"""

from .assemble import AssemblyMap
from .geometry import POLARIZATION_KINDS, Detector, normalise_polarization
from .panels import Panel, rotation_x, rotation_y, rotation_z
from .presets import DEFAULT_DISTANCES_M, PRESET_NAMES

__all__ = [
    "AssemblyMap",
    "DEFAULT_DISTANCES_M",
    "Detector",
    "POLARIZATION_KINDS",
    "PRESET_NAMES",
    "Panel",
    "normalise_polarization",
    "rotation_x",
    "rotation_y",
    "rotation_z",
]
