"""Geometry files in: the reader chosen by the file's suffix, each returning a :class:`GeometryFile`.

* ``.geom`` — CrystFEL (:func:`spisim.detector.crystfel.read_crystfel`);
* ``.data`` — psana (:func:`spisim.detector.psana.read_psana`);
* ``.cxi``, ``.h5``, ``.hdf5``, ``.hdf``, ``.nxs`` — the pixel positions and mask of a CXI/HDF5 file
  (:func:`spisim.detector.pixelgrid.read_cxi_geometry`), e.g. one written by ``spi simulate`` or ``spi import``.

Readers describe; :class:`~spisim.detector.Detector` checks and computes (``Detector.load`` calls
:func:`read_geometry`).
"""

from __future__ import annotations

from pathlib import Path

from ..cxi import HDF5_SUFFIXES
from ..errors import ConfigError, InputFileError
from .crystfel import read_crystfel
from .panels import GeometryFile
from .pixelgrid import read_cxi_geometry
from .psana import read_psana

CXI_SUFFIXES: tuple[str, ...] = HDF5_SUFFIXES
"""File suffixes read as CXI/HDF5 files by :func:`read_geometry` (:data:`spisim.cxi.HDF5_SUFFIXES`)."""


def read_geometry(path: str | Path, *, clen_m: float | None = None) -> GeometryFile:
    """Read a geometry file, choosing the reader by suffix (see the module doc).

    Args:
        path: the file.
        clen_m: camera length (m) for CrystFEL files whose ``clen`` is a data-file location (see
            :func:`~spisim.detector.crystfel.read_crystfel`); refused for the other formats.

    Raises:
        InputFileError: the file does not exist or cannot be read.
        ConfigError: unknown suffix, or a file the reader refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"geometry file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".geom":
        return read_crystfel(path, clen_m=clen_m)
    if suffix == ".data":
        if clen_m is not None:
            raise ConfigError("clen_m applies to CrystFEL .geom files; psana files give the distance themselves")
        return read_psana(path)
    if suffix in CXI_SUFFIXES:
        if clen_m is not None:
            raise ConfigError("clen_m applies to CrystFEL .geom files; a CXI file gives the pixel positions")
        return read_cxi_geometry(path)
    raise ConfigError(
        f"unknown geometry file type {path.suffix!r} for {path}: expected .geom (CrystFEL), .data (psana) "
        "or a CXI/HDF5 file (.cxi, .h5)"
    )
