"""Named detector layouts: each preset is a :class:`~spisim.detector.panels.GeometryFile` (tiles, data shape,
mask, metadata) that :meth:`Detector.preset <spisim.detector.Detector.preset>` builds a detector from.

Presets (``preset_geometry(name, distance_m=None, **kw)``; names and their aliases in :data:`PRESET_ALIASES`):

``pnccd``
    LCLS CAMP/AMO pnCCD: two 512 × 1024 (ss × fs) panels of 75 µm above and below the beam, data shape
    (2, 512, 1024), built with EXtra-geom's ``PNCCDGeometry.from_relative_positions``. Options:
    ``gap_m`` (vertical gap between the panels, default 4 mm as in EXtra-geom). Default distance
    0.130 m, taken for the LCLS AMO PR772 SPI experiments (amo86615 / CXIDB 58, amo06516 used by
    SpeckleNN); check it against the metadata of the run you model and pass ``distance_m``.
``jungfrau4m``
    8 JUNGFRAU modules of 512 × 1024 pixels of 75 µm, data shape (8, 512, 1024), module positions of
    psana's default ``jungfrau4M`` geometry (from the LCLS mechanical drawing LCL5004-007815), 2-pixel
    gaps between the 2 × 4 ASICs of each module. Default distance 0.1 m (as in that file).
``epix10k2m``
    16 ePix10ka modules of 352 × 384 pixels of 100 µm (2 × 2 ASICs, psana ``EPIX10KA:V1`` pixel layout),
    data shape (16, 352, 384), in four quadrants of 2 × 2 modules (module pitch of psana's
    ``epix10kaquad`` default) turned by 0/90/180/270° about the beam around a central hole of about
    3–5 mm. An idealised layout, not metrology. Default distance 0.1 m.
``agipd1m``
    EuXFEL AGIPD-1M, 16 modules of 512 × 128 pixels of 200 µm in four quadrants, data shape
    (16, 512, 128), from EXtra-geom's ``AGIPD_1MGeometry.from_quad_positions`` with its documented
    example quadrant positions (option ``quad_pos``, in pixels). Default distance 0.123 m (the refined
    camera length of the 2024 SPB SPI beamtime xfel7927).
``square``
    ``Detector.square``: options ``n_pixels`` (default 128), ``pixel_size_m`` (default 300 µm),
    ``gap_m`` (default 0); default distance 0.2 m.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .panels import GeometryFile, Panel, data_shape, moved_to_distance
from .psana import psana_geometry_from_text

DEFAULT_DISTANCES_M: dict[str, float] = {
    "pnccd": 0.130,
    "jungfrau4m": 0.100,
    "epix10k2m": 0.100,
    "agipd1m": 0.123,
    "square": 0.200,
}
"""Default sample-to-detector distance (m) of each preset."""

PRESET_NAMES: tuple[str, ...] = tuple(DEFAULT_DISTANCES_M)
"""The presets' canonical names."""

PRESET_ALIASES: dict[str, str] = {
    **{name: name for name in PRESET_NAMES},
    "jf4m": "jungfrau4m",
    "epix10ka2m": "epix10k2m",
    "agipd": "agipd1m",
}
"""Every name a preset is known by (lower case, without ``-`` and ``_``) → its canonical name: the one alias table."""


def _alias_key(name: object) -> str:
    return str(name).strip().lower().replace("-", "").replace("_", "")


def is_preset_name(name: object) -> bool:
    """True when ``name`` names a preset (any case, with or without ``-``/``_``, or an alias)."""
    return _alias_key(name) in PRESET_ALIASES


def canonical_preset(name: object) -> str:
    """The canonical name (one of :data:`PRESET_NAMES`) of preset ``name``; ConfigError if unknown."""
    key = _alias_key(name)
    if key not in PRESET_ALIASES:
        raise ConfigError(f"unknown detector preset {name!r}: choose one of {', '.join(PRESET_NAMES)}")
    return PRESET_ALIASES[key]

# psana default geometry of the 8-module JUNGFRAU 4M (slac-lcls/lcls2, geometry-def-jungfrau4M.data).
_JUNGFRAU4M_PSANA = """
JFCAMERA:V1 0 JUNGFRAU:V2 0 -56807.1  44005.5 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 1 -15557.5  44005.5 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 2  25692.1  33921.7 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 3  66941.7  33921.7 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 4 -66941.7 -33921.7 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 5 -25692.1 -33921.7 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 6  15557.5 -44005.5 0 90 180 0 0 0 0
JFCAMERA:V1 0 JUNGFRAU:V2 7  56807.1 -44005.5 0 90 180 0 0 0 0
IP:V1       0 JFCAMERA:V1 0      0.0      0.0 100000 90 0 0 0 0 0
"""


def _epix10k2m_psana(quad_centre_um: float = 41000.0) -> str:
    """psana-format text of an idealised ePix10ka2M: 4 quads of 2 × 2 modules around the beam."""
    module_centres = ((20200, -20900), (-20200, -20900), (20200, 20900), (-20200, 20900))
    lines = []
    for q in range(4):
        for m, (x, y) in enumerate(module_centres):
            lines.append(f"QUAD:V1 {q} EPIX10KA:V1 {4 * q + m} {x} {y} 0 0 0 0 0 0 0")
    for q in range(4):
        angle = 90.0 * q
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        x, y = quad_centre_um * (c - s), quad_centre_um * (s + c)
        lines.append(f"CAMERA:V1 0 QUAD:V1 {q} {x:.3f} {y:.3f} 0 {angle} 0 0 0 0 0")
    lines.append("IP:V1 0 CAMERA:V1 0 0 0 100000 0 0 0 0 0 0")
    return "\n".join(lines)


def square_panels(n_pixels: int, pixel_size_m: float, distance_m: float, gap_m: float = 0.0) -> list[Panel]:
    """Tiles of :meth:`Detector.square` (see there); validates the arguments (ConfigError)."""
    if int(n_pixels) != n_pixels or n_pixels < 1:
        raise ConfigError(f"n_pixels must be a positive integer, got {n_pixels!r}")
    n = int(n_pixels)
    for label, value in (("pixel_size_m", pixel_size_m), ("distance_m", distance_m)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"{label} must be a positive length in metres, got {value!r}")
    if not (np.isfinite(gap_m) and gap_m >= 0):
        raise ConfigError(f"gap_m must be a length >= 0 in metres, got {gap_m!r}")
    p = float(pixel_size_m)
    fs, ss = np.array([p, 0.0, 0.0]), np.array([0.0, -p, 0.0])
    half_width = n * p / 2
    if gap_m == 0:
        return [Panel(np.array([-half_width, half_width, distance_m]), fs, ss, n, n, name="square")]
    if n % 2:
        raise ConfigError(f"a square detector with a gap needs an even number of pixels, got {n}")
    h = n // 2
    top = Panel(np.array([-half_width, gap_m / 2 + h * p, distance_m]), fs, ss, n, h, name="upper")
    bottom = Panel(np.array([-half_width, -gap_m / 2, distance_m]), fs, ss, n, h, ss_offset=h, name="lower")
    return [top, bottom]


def panels_from_extra_geom(geom: Any, distance_m: float) -> tuple[list[Panel], tuple[int, int, int]]:
    """Tiles and data shape (M, SS, FS) of an EXtra-geom geometry object, moved by ``distance_m`` along z.

    Tile offsets in the data come from the geometry's own ``split_tiles`` of an index array, so any
    EXtra-geom detector class is handled.
    """
    if not (np.isfinite(distance_m) and distance_m > 0):
        raise ConfigError(f"distance_m must be a positive length in metres, got {distance_m!r}")
    shape = tuple(int(n) for n in geom.expected_data_shape)
    if len(shape) != 3 or shape[0] != len(geom.modules):
        shape = (len(geom.modules), *shape[-2:])
    module_shape = shape[1:]
    index = np.arange(module_shape[0] * module_shape[1]).reshape(module_shape)
    tile_views = geom.split_tiles(index)
    panels = []
    for m, module in enumerate(geom.modules):
        for t, frag in enumerate(module):
            view = tile_views[t]
            ss0, fs0 = divmod(int(view[0, 0]), module_shape[1])
            if view.shape != (frag.ss_pixels, frag.fs_pixels):
                raise ConfigError(
                    f"EXtra-geom tile {t} of module {m} has shape {view.shape}, expected "
                    f"{(frag.ss_pixels, frag.fs_pixels)}"
                )
            panels.append(
                Panel(
                    corner=np.asarray(frag.corner_pos, dtype=np.float64) + np.array([0.0, 0.0, distance_m]),
                    fs_vec=frag.fs_vec,
                    ss_vec=frag.ss_vec,
                    n_fs=frag.fs_pixels,
                    n_ss=frag.ss_pixels,
                    module=m,
                    ss_offset=ss0,
                    fs_offset=fs0,
                    name=f"p{m}a{t}",
                )
            )
    return panels, shape  # type: ignore[return-value]


def _check_options(name: str, kw: dict[str, Any], allowed: set[str]) -> None:
    extra = set(kw) - allowed
    if extra:
        allowed_txt = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"unknown option(s) {sorted(extra)} for detector preset {name!r} (allowed: {allowed_txt})")


def preset_geometry(name: str, distance_m: float | None = None, **kw: Any) -> GeometryFile:
    """The description of preset ``name`` (see the module docstring) at ``distance_m`` (m, default per preset)."""
    key = canonical_preset(name)
    distance = DEFAULT_DISTANCES_M[key] if distance_m is None else float(distance_m)
    if not (np.isfinite(distance) and distance > 0):
        raise ConfigError(f"detector distance must be a positive length in metres, got {distance_m!r}")
    metadata: dict[str, Any] = {}
    if key == "square":
        _check_options(key, kw, {"n_pixels", "pixel_size_m", "gap_m"})
        panels = square_panels(kw.get("n_pixels", 128), kw.get("pixel_size_m", 300e-6), distance, kw.get("gap_m", 0.0))
        shape = data_shape(panels)
    elif key == "pnccd":
        from extra_geom import PNCCDGeometry

        _check_options(key, kw, {"gap_m"})
        gap = float(kw.get("gap_m", 4e-3))
        if not (np.isfinite(gap) and gap >= 0):
            raise ConfigError(f"gap_m must be a length >= 0 in metres, got {gap!r}")
        panels, shape = panels_from_extra_geom(PNCCDGeometry.from_relative_positions(gap=gap), distance)
        metadata = {"gap_m": gap}
    elif key == "agipd1m":
        from extra_geom import AGIPD_1MGeometry

        _check_options(key, kw, {"quad_pos"})
        quad_pos = kw.get("quad_pos", [(-525, 625), (-550, -10), (520, -160), (542.5, 475)])
        panels, shape = panels_from_extra_geom(AGIPD_1MGeometry.from_quad_positions(quad_pos), distance)
    else:
        _check_options(key, kw, set())
        text = _JUNGFRAU4M_PSANA if key == "jungfrau4m" else _epix10k2m_psana()
        geom = psana_geometry_from_text(text, key)
        panels, shape = moved_to_distance(geom.panels, distance), geom.shape
    return GeometryFile(panels=list(panels), shape=shape, mask=np.zeros(shape, dtype=bool), metadata=metadata,
                        name=key)
