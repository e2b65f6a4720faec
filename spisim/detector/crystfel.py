"""Read and write CrystFEL geometry (``.geom``) files, old (≤ 0.9) and ≥ 0.10 syntax.

Reading follows ``crystfel_geometry(5)`` and CrystFEL's ``datatemplate.c``:

* ``key = value`` lines, ``;`` starts a comment; ``panel/key = value`` sets a panel property and
  ``bad.../key = value`` a bad region. A top-level panel property (``res``, ``coffset``, ``dim0``,
  ``mask`` ...) is a default for the panels *first mentioned after it*.
* Values may carry units: ``clen = 95.3 mm`` (m or mm; a bare number is metres), ``photon_energy =
  4570 eV`` (eV or keV), ``wavelength = 1.3 A`` (m or A), ``coffset`` and ``detector_shift_x/y`` in m or
  mm. A value that is a data-file location (``/LCLS/detector_1/EncoderValue``) cannot be known here: a
  ``clen`` read from a file counts as 0 unless ``clen_m`` is given (with a warning), so the panel z is
  its ``coffset`` (psana conversions put the whole distance there).
* ``corner_x/y`` are in pixels of the panel (``res`` pixels per metre, or ``pixel_pitch`` in m), at the
  outer corner of the first pixel; ``fs``/``ss`` are direction vectors in pixels (``+0.0048x +0.99y``),
  used as given; z = clen + coffset (+ the z parts of fs/ss).
* ``dimN`` entries (``%``, ``ss``, ``fs`` or a fixed index) give the data layout: one fixed index before
  ``ss``/``fs`` is the module axis (EXtra-geom/EuXFEL files), none means a 2D slab (module 0).
* Masks: ``no_index``, ``mask_edge_pixels``, ``bad`` regions in ``min/max_fs/ss`` (data coordinates of
  the named panel, inclusive) or ``min/max_x/y`` (lab frame, pixel units, tested at pixel centres), and
  bad-pixel masks in external HDF5 files (``mask_file``/``maskN_file`` with ``maskN_data``,
  ``goodbits``/``badbits``). A referenced mask file that is absent is ignored with a warning; masks read
  from the image data files themselves are per-event data and are not applied.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..constants import HC_EV_ANGSTROM
from ..errors import ConfigError, InputFileError
from ..units import parse_quantity
from .panels import GeometryFile, Panel, Tiled, mean_distance

_DIRECTION_TERM = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)?(?:[eE][-+]?\d+)?)([xyz])")

_TOP_LEVEL_KEYS = {
    "clen",
    "photon_energy",
    "wavelength",
    "electron_voltage",
    "bandwidth",
    "detector_shift_x",
    "detector_shift_y",
    "peak_list",
    "peak_list_type",
    "photon_energy_bandwidth",
    "photon_energy_scale",
    "hdf5_peak_path",
    "peak_info_location",
}
_PANEL_KEYS = {
    "min_fs",
    "max_fs",
    "min_ss",
    "max_ss",
    "corner_x",
    "corner_y",
    "fs",
    "ss",
    "res",
    "pixel_pitch",
    "coffset",
    "clen",
    "no_index",
    "mask_edge_pixels",
    "data",
    "adu_per_eV",
    "adu_per_photon",
    "max_adu",
    "badrow_direction",
    "flag_lessthan",
    "flag_morethan",
    "flag_equal",
    "saturation_map",
    "saturation_map_file",
    "mask",
    "mask_file",
    "mask_good",
    "mask_bad",
    "clen_for_centering",
    "photon_energy",
}
_LEGACY_MASK_KEYS = {
    "mask": "mask0_data",
    "mask_file": "mask0_file",
    "mask_good": "mask0_goodbits",
    "mask_bad": "mask0_badbits",
}
_MASK_KEY = re.compile(r"^mask(\d)_(data|file|goodbits|badbits)$")


CrystfelGeometry = GeometryFile
"""What :func:`read_crystfel` found: tiles, data shape (M, SS, FS), bad-pixel mask and metadata."""


class _Entry:
    """A raw value and the line it came from."""

    __slots__ = ("value", "line")

    def __init__(self, value: str, line: int) -> None:
        self.value = value
        self.line = line


def _is_location(value: str) -> bool:
    return value.split()[0].startswith("/") if value.split() else False


def parse_direction(value: str, *, where: str = "") -> np.ndarray:
    """CrystFEL direction ``"+0.0048x -0.99y +0.001z"`` (also ``"x"``, ``"-y"``, ``"+1.x +0.y"``) -> (3,)."""
    compact = value.replace(" ", "").replace("\t", "")
    terms = _DIRECTION_TERM.findall(compact)
    if not terms or "".join(c + a for c, a in terms) != compact:
        raise ConfigError(f"{where}: cannot read direction {value!r} (expected e.g. '+0.9998x -0.0171y')")
    vec = np.zeros(3)
    for coef, axis in terms:
        if coef in ("", "+"):
            c = 1.0
        elif coef == "-":
            c = -1.0
        else:
            c = float(coef)
        vec["xyz".index(axis)] += c
    return vec


def _parse_int(value: str, *, what: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: {what} = {value!r} is not a number") from None
    if number != int(number):
        raise ConfigError(f"{where}: {what} = {value!r} must be a whole number")
    return int(number)


def _parse_float(value: str, *, what: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{where}: {what} = {value!r} is not a number") from None


def _parse_bits(value: str, *, what: str, where: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            raise ConfigError(f"{where}: {what} = {value!r} is not an integer bit mask") from None


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "y")


def _read_lines(path: Path) -> list[tuple[int, str, str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"geometry file not found: {path}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read geometry file {path}: {exc.strerror or exc}") from None
    if b"\x00" in data[:4096]:
        raise InputFileError(f"geometry file {path} is binary, not a CrystFEL .geom text file")
    text = data.decode("utf-8", errors="replace")
    out = []
    for lineno, raw in enumerate(text.replace("\r", "\n").split("\n"), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ConfigError(f"{path.name}:{lineno}: not a 'key = value' line: {line!r}")
        key, value = line.split("=", 1)
        out.append((lineno, key.strip(), value.strip()))
    return out


def _panel_layout(name: str, d: dict[str, _Entry], where: str) -> tuple[int, bool]:
    """(module index, has-module-axis) from the panel's ``dimN`` entries."""
    dims: dict[int, str] = {0: "ss", 1: "fs"}
    for key, entry in d.items():
        if key.startswith("dim"):
            try:
                dims[int(key[3:])] = entry.value.strip()
            except ValueError:
                raise ConfigError(f"{where}: panel {name!r}: bad dimension key {key!r}") from None
    ordered = [dims[i] for i in sorted(dims)]
    if sorted(dims) != list(range(len(dims))):
        raise ConfigError(f"{where}: panel {name!r}: dimensions {sorted(dims)} are not numbered 0, 1, 2, ...")
    frame = [v for v in ordered if v != "%"]
    if frame[-2:] != ["ss", "fs"] or "ss" in frame[:-2] or "fs" in frame[:-2]:
        raise ConfigError(
            f"{where}: panel {name!r}: data dimensions {ordered} not supported "
            "(expected optional '%' and one fixed index, then ss, then fs)"
        )
    fixed = frame[:-2]
    if len(fixed) > 1:
        raise ConfigError(f"{where}: panel {name!r}: more than one fixed index dimension ({fixed}) is not supported")
    if not fixed:
        return 0, False
    try:
        return int(fixed[0]), True
    except ValueError:
        raise ConfigError(
            f"{where}: panel {name!r}: dimension value {fixed[0]!r} is not %, ss, fs or an index"
        ) from None


def _resolve_mask_file(name: str, geom_path: Path) -> Path | None:
    candidate = Path(name)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for base in (geom_path.parent, Path.cwd()):
        if (base / candidate).is_file():
            return base / candidate
    return None


def read_crystfel(path: str | Path, *, clen_m: float | None = None) -> CrystfelGeometry:
    """Parse a CrystFEL geometry file into tiles, data shape, mask and metadata.

    Args:
        path: the ``.geom`` file.
        clen_m: camera length (m) to use where the file reads ``clen`` from a data file.

    Raises:
        InputFileError: the file is missing or unreadable.
        ConfigError: malformed lines, unknown units, missing panel fields, unsupported layouts.
    """
    path = Path(path)
    lines = _read_lines(path)
    top: dict[str, _Entry] = {}
    defaults: dict[str, _Entry] = {}
    panels_raw: dict[str, dict[str, _Entry]] = {}
    bad_raw: dict[str, dict[str, _Entry]] = {}
    unknown: set[str] = set()
    for lineno, key, value in lines:
        entry = _Entry(value, lineno)
        if "/" not in key:
            if key in _TOP_LEVEL_KEYS or key.startswith(("rigid_group", "group_")):
                top[key] = entry
            else:
                defaults[_LEGACY_MASK_KEYS.get(key, key)] = entry
            continue
        name, pkey = key.split("/", 1)
        pkey = _LEGACY_MASK_KEYS.get(pkey, pkey)
        if name.startswith("bad"):
            bad_raw.setdefault(name, {})[pkey] = entry
        else:
            if name not in panels_raw:
                panels_raw[name] = dict(defaults)
            panels_raw[name][pkey] = entry
    if not panels_raw:
        raise ConfigError(f"{path.name}: no panel descriptions (lines like 'p0/min_fs = 0') in the geometry file")

    metadata: dict[str, Any] = {"source": str(path), "format": "crystfel"}
    # ---- camera length and detector shift -----------------------------------------------------------
    clen_default, clen_from = _clen(top.get("clen"), clen_m, path)
    if clen_from:
        metadata["clen_from"] = clen_from
    shift = np.zeros(3)
    for axis, key in ((0, "detector_shift_x"), (1, "detector_shift_y")):
        if key in top:
            entry = top[key]
            if _is_location(entry.value):
                warnings.warn(f"{path.name}: {key} is read from a data file ({entry.value}); using 0", stacklevel=3)
            else:
                shift[axis] = parse_quantity(entry.value, "length", "m", f"{path.name}:{entry.line}", what=key)
    metadata.update(_beam_metadata(top, path))

    # ---- panels -------------------------------------------------------------------------------------
    panels: list[Panel] = []
    resolutions: list[float] = []
    data_locations: set[str] = set()
    has_module_axis: list[bool] = []
    for name, d in panels_raw.items():
        for key in d:
            if key not in _PANEL_KEYS and not key.startswith("dim") and not _MASK_KEY.match(key):
                unknown.add(key)
        panel, res, module_axis = _build_panel(name, d, clen_default, path)
        panels.append(panel.offset(shift) if np.any(shift) else panel)
        resolutions.append(res)
        has_module_axis.append(module_axis)
        data_locations.add(d["data"].value if "data" in d else "/data/data")
    if unknown:
        warnings.warn(f"{path.name}: ignoring unrecognised panel fields {sorted(unknown)}", stacklevel=2)
    _check_camera_length(panels, top.get("clen"), clen_m, path)
    if len(data_locations) > 1:
        raise ConfigError(
            f"{path.name}: panels read from different data locations {sorted(data_locations)}; "
            "only one data array per shot is supported"
        )
    shape = (
        max(p.module for p in panels) + 1,
        max(p.ss_offset + p.n_ss for p in panels),
        max(p.fs_offset + p.n_fs for p in panels),
    )
    metadata["data_location"] = data_locations.pop()
    metadata["panel_names"] = [p.name for p in panels]

    # ---- masks --------------------------------------------------------------------------------------
    mask = np.zeros(shape, dtype=bool)
    for p, d in zip(panels, panels_raw.values(), strict=True):
        if "no_index" in d and _parse_bool(d["no_index"].value):
            mask[p.data_slice] = True
        if "mask_edge_pixels" in d:
            n = _parse_int(
                d["mask_edge_pixels"].value, what="mask_edge_pixels", where=f"{path.name}:{d['mask_edge_pixels'].line}"
            )
            if n > 0:
                region = np.ones((p.n_ss, p.n_fs), dtype=bool)
                region[n:-n, n:-n] = False
                mask[p.data_slice] |= region
    _apply_bad_regions(bad_raw, panels, resolutions, mask, path)
    metadata["ignored_masks"] = _apply_mask_files(panels, list(panels_raw.values()), has_module_axis, mask, path)
    return CrystfelGeometry(panels=panels, shape=shape, mask=mask, metadata=metadata, name=path.name)


def _clen(entry: _Entry | None, clen_m: float | None, path: Path) -> tuple[float, str]:
    """(camera length in m, data location it would be read from or '')."""
    if clen_m is not None:
        if not np.isfinite(clen_m):
            raise ConfigError(f"clen_m must be a finite length in metres, got {clen_m!r}")
        return float(clen_m), ""
    if entry is None:
        return 0.0, ""
    if _is_location(entry.value):
        warnings.warn(
            f"{path.name}: clen is read from a data file ({entry.value}); taking 0 m, so the panel z is its "
            "coffset (set the distance: detector.distance in a manifest, clen_m= in Python)",
            stacklevel=4,
        )
        return 0.0, entry.value.split()[0]
    return parse_quantity(entry.value, "length", "m", f"{path.name}:{entry.line}", what="clen"), ""


def _check_camera_length(panels: list[Panel], entry: _Entry | None, clen_m: float | None, path: Path) -> None:
    """ConfigError naming the missing camera length when panels end up at or behind the sample for want of one."""
    if clen_m is not None or (entry is not None and not _is_location(entry.value)):
        return  # a camera length was given: Detector reports a geometry that is still impossible
    z_min = min(float(p.corners()[:, 2].min()) for p in panels)
    if z_min > 0:
        return
    why = "has no clen line" if entry is None else f"reads clen from a data file ({entry.value.split()[0]})"
    raise ConfigError(
        f"{path.name} {why}, so its panels lie at z = {z_min:.4g} m, not downstream of the sample: add a camera "
        "length such as 'clen = 0.1' (m) to the file, or give the distance (detector.distance in a manifest)"
    )


def _beam_metadata(top: dict[str, _Entry], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "photon_energy" in top:
        entry = top["photon_energy"]
        if _is_location(entry.value):
            out["photon_energy_from"] = entry.value.split()[0]
        else:
            ev = parse_quantity(entry.value, "photon_energy", "eV", f"{path.name}:{entry.line}", what="photon_energy")
            out["photon_energy_ev"] = ev
    elif "wavelength" in top:
        entry = top["wavelength"]
        if _is_location(entry.value):
            out["wavelength_from"] = entry.value.split()[0]
        else:
            if len(entry.value.split()) < 2 and not re.search(r"[A-Za-z]$", entry.value):
                raise ConfigError(f"{path.name}:{entry.line}: wavelength needs a unit (m or A), got {entry.value!r}")
            lam = parse_quantity(entry.value, "length", "A", f"{path.name}:{entry.line}", what="wavelength",
                                 to_unit="A")
            out["photon_energy_ev"] = HC_EV_ANGSTROM / lam
    return out


def _build_panel(name: str, d: dict[str, _Entry], clen_default: float, path: Path) -> tuple[Panel, float, bool]:
    def need(key: str) -> _Entry:
        if key not in d:
            raise ConfigError(f"{path.name}: panel {name!r} has no {key}")
        return d[key]

    def where(key: str) -> str:
        return f"{path.name}:{d[key].line}"

    ranges = {
        k: _parse_int(need(k).value, what=f"{name}/{k}", where=where(k))
        for k in ("min_fs", "max_fs", "min_ss", "max_ss")
    }
    n_fs = ranges["max_fs"] - ranges["min_fs"] + 1
    n_ss = ranges["max_ss"] - ranges["min_ss"] + 1
    if n_fs < 1 or n_ss < 1 or ranges["min_fs"] < 0 or ranges["min_ss"] < 0:
        raise ConfigError(f"{path.name}: panel {name!r} has an empty or negative pixel range {ranges}")
    if "res" in d:
        res = _parse_float(d["res"].value, what=f"{name}/res", where=where("res"))
    elif "pixel_pitch" in d:
        pitch = parse_quantity(d["pixel_pitch"].value, "length", "m", where("pixel_pitch"), what=f"{name}/pixel_pitch")
        res = 1.0 / pitch if pitch > 0 else 0.0
    else:
        raise ConfigError(f"{path.name}: panel {name!r} has no pixel size (res or pixel_pitch)")
    if not (np.isfinite(res) and res > 0):
        raise ConfigError(f"{path.name}: panel {name!r} has an impossible pixel size (res = {res} pixels per metre)")
    cx = _parse_float(need("corner_x").value, what=f"{name}/corner_x", where=where("corner_x"))
    cy = _parse_float(need("corner_y").value, what=f"{name}/corner_y", where=where("corner_y"))
    fs = parse_direction(need("fs").value, where=where("fs"))
    ss = parse_direction(need("ss").value, where=where("ss"))
    coffset = 0.0
    if "coffset" in d:
        coffset = parse_quantity(d["coffset"].value, "length", "m", where("coffset"), what=f"{name}/coffset")
    clen = clen_default
    if "clen" in d:  # old syntax: per-panel camera length
        entry = d["clen"]
        if not _is_location(entry.value):
            clen = parse_quantity(entry.value, "length", "m", where("clen"), what=f"{name}/clen")
    module, module_axis = _panel_layout(name, d, path.name)
    try:
        panel = Panel(
            corner=np.array([cx / res, cy / res, clen + coffset]),
            fs_vec=fs / res,
            ss_vec=ss / res,
            n_fs=n_fs,
            n_ss=n_ss,
            module=module,
            ss_offset=ranges["min_ss"],
            fs_offset=ranges["min_fs"],
            name=name,
        )
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from None
    return panel, res, module_axis


def _apply_bad_regions(
    bad_raw: dict[str, dict[str, _Entry]], panels: list[Panel], resolutions: list[float], mask: np.ndarray, path: Path
) -> None:
    by_name = {p.name: (p, res) for p, res in zip(panels, resolutions, strict=True)}
    for bname, b in bad_raw.items():
        keys = set(b) - {"panel"}
        xy_keys = {"min_x", "max_x", "min_y", "max_y"}
        fsss_keys = {"min_fs", "max_fs", "min_ss", "max_ss"}
        unknown = keys - xy_keys - fsss_keys
        if unknown:
            warnings.warn(f"{path.name}: bad region {bname!r}: ignoring fields {sorted(unknown)}", stacklevel=3)
        if keys & xy_keys and keys & fsss_keys:
            raise ConfigError(f"{path.name}: bad region {bname!r} mixes x/y and fs/ss coordinates")
        panel_name = b["panel"].value if "panel" in b else None
        if panel_name is not None and panel_name not in by_name:
            warnings.warn(
                f"{path.name}: bad region {bname!r} names unknown panel {panel_name!r}; ignored", stacklevel=3
            )
            continue
        if keys & fsss_keys:
            if panel_name is None:
                if len(panels) != 1:
                    warnings.warn(f"{path.name}: fs/ss bad region {bname!r} names no panel; ignored", stacklevel=3)
                    continue
                panel_name = panels[0].name
            p = by_name[panel_name][0]
            lims = {}
            for k in fsss_keys:
                if k not in b:
                    raise ConfigError(f"{path.name}: bad region {bname!r} has no {k}")
                lims[k] = _parse_int(b[k].value, what=f"{bname}/{k}", where=f"{path.name}:{b[k].line}")
            ss0, ss1 = max(lims["min_ss"], p.ss_offset), min(lims["max_ss"], p.ss_offset + p.n_ss - 1)
            fs0, fs1 = max(lims["min_fs"], p.fs_offset), min(lims["max_fs"], p.fs_offset + p.n_fs - 1)
            if (ss0, ss1, fs0, fs1) != (lims["min_ss"], lims["max_ss"], lims["min_fs"], lims["max_fs"]):
                warnings.warn(
                    f"{path.name}: bad region {bname!r} extends beyond panel {panel_name!r}; clipped", stacklevel=3
                )
            if ss1 >= ss0 and fs1 >= fs0:
                mask[p.module, ss0 : ss1 + 1, fs0 : fs1 + 1] = True
        elif keys & xy_keys:
            lim = {
                k: (
                    _parse_float(b[k].value, what=f"{bname}/{k}", where=f"{path.name}:{b[k].line}")
                    if k in b
                    else (-np.inf if k.startswith("min") else np.inf)
                )
                for k in xy_keys
            }
            targets = [by_name[panel_name]] if panel_name else list(by_name.values())
            for p, res in targets:
                centres = p.pixel_centres() * res  # pixel units of this panel
                inside = (
                    (centres[..., 0] >= lim["min_x"])
                    & (centres[..., 0] <= lim["max_x"])
                    & (centres[..., 1] >= lim["min_y"])
                    & (centres[..., 1] <= lim["max_y"])
                )
                mask[p.data_slice] |= inside
        else:
            raise ConfigError(f"{path.name}: bad region {bname!r} has no coordinate range")


def _apply_mask_files(
    panels: list[Panel], raws: list[dict[str, _Entry]], has_module_axis: list[bool], mask: np.ndarray, path: Path
) -> list[str]:
    """Apply bad-pixel masks from external HDF5 files; returns descriptions of masks not applied."""
    ignored: list[str] = []
    warned: set[str] = set()
    cache: dict[tuple[Path, str], np.ndarray | None] = {}
    for p, d, module_axis in zip(panels, raws, has_module_axis, strict=True):
        slots: dict[int, dict[str, _Entry]] = {}
        for key, entry in d.items():
            m = _MASK_KEY.match(key)
            if m:
                slots.setdefault(int(m.group(1)), {})[m.group(2)] = entry
        for n, slot in sorted(slots.items()):
            if "data" not in slot:
                continue
            location = slot["data"].value.split()[0]
            if "file" not in slot:
                desc = f"mask{n}: {location} in the image data files (per-event, not applied)"
                if desc not in ignored:
                    ignored.append(desc)
                continue
            fname = slot["file"].value.split()[0]
            resolved = _resolve_mask_file(fname, path)
            if resolved is None:
                if fname not in warned:
                    warnings.warn(
                        f"{path.name}: mask file {fname!r} not found; its bad pixels are not applied", stacklevel=3
                    )
                    warned.add(fname)
                    ignored.append(f"mask{n}: {fname}:{location} (file not found)")
                continue
            key = (resolved, location)
            if key not in cache:
                cache[key] = _load_mask_array(resolved, location, path)
            arr = cache[key]
            if arr is None:
                continue
            good = (
                _parse_bits(slot["goodbits"].value, what=f"mask{n}_goodbits", where=path.name)
                if "goodbits" in slot
                else 0
            )
            bad = (
                _parse_bits(slot["badbits"].value, what=f"mask{n}_badbits", where=path.name) if "badbits" in slot else 0
            )
            sl_ss, sl_fs = p.data_slice[1], p.data_slice[2]
            try:
                if module_axis:
                    values = arr[p.module, sl_ss, sl_fs] if arr.ndim == 3 else None
                else:
                    values = arr[sl_ss, sl_fs] if arr.ndim == 2 else None
            except IndexError:
                values = None
            if values is None or values.shape != (p.n_ss, p.n_fs):
                warnings.warn(
                    f"{path.name}: mask {resolved.name}:{location} of shape {arr.shape} does not fit "
                    f"panel {p.name!r}; not applied",
                    stacklevel=3,
                )
                continue
            values = values.astype(np.int64)
            mask[p.data_slice] |= ((values & good) != good) | ((values & bad) != 0)
    return ignored


def _load_mask_array(resolved: Path, location: str, path: Path) -> np.ndarray | None:
    import h5py

    if "%" in location:
        warnings.warn(f"{path.name}: mask location {location!r} has an event placeholder; not applied", stacklevel=4)
        return None
    try:
        with h5py.File(resolved, "r") as f:
            arr = np.asarray(f[location])
    except (OSError, KeyError) as exc:
        warnings.warn(f"{path.name}: cannot read mask {resolved}:{location} ({exc}); not applied", stacklevel=4)
        return None
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def write_crystfel(
    detector: Tiled, path: str | Path, *, photon_energy_ev: float | None = None, mask_file: str | Path | None = None
) -> None:
    """Write ``detector`` as a CrystFEL geometry file (readable by CrystFEL ≥ 0.9, EXtra-geom, cfel_fmt).

    Each tile becomes a panel ``p{i}``; ``res`` is 1/|fs step| so fs has unit length in pixels, ``clen``
    is the detector distance and ``coffset`` each panel's z offset from it. With ``mask_file`` the mask
    (1 = bad) is written to that HDF5 file (dataset ``/mask``, shape of the data array, or (SS, FS) for a
    single module) and referenced as ``mask0``.

    Args:
        detector: the geometry (a :class:`~spisim.detector.Detector` or a :class:`GeometryFile`).
        path: output ``.geom`` file.
        photon_energy_ev: written as ``photon_energy`` (eV) when given.
        mask_file: optional HDF5 file for the mask.
    """
    path = Path(path)
    modules = detector.shape[0]
    clen = mean_distance(detector.panels)
    out = [
        "; CrystFEL geometry written by spisim",
        "; lab frame: x horizontal, y up, z along the beam; lengths in metres",
        "",
        f"clen = {clen!r}",
        "adu_per_photon = 1",
        "data = /entry_1/data_1/data",
        "dim0 = %",
    ]
    if photon_energy_ev is not None:
        out.append(f"photon_energy = {float(photon_energy_ev)!r} eV")
    if mask_file is not None:
        import h5py

        mask_file = Path(mask_file)
        data = detector.mask.astype(np.uint8)
        with h5py.File(mask_file, "w") as f:
            f.create_dataset("mask", data=data if modules > 1 else data[0])
        out += [f"mask0_file = {mask_file.resolve()}", "mask0_data = /mask", "mask0_goodbits = 0", "mask0_badbits = 1"]
    out.append("")
    for i, p in enumerate(detector.panels):
        res = 1.0 / float(np.linalg.norm(p.fs_vec))
        fs = p.fs_vec * res
        ss = p.ss_vec * res
        name = f"p{i}"
        if modules > 1:
            out += [f"{name}/dim1 = {p.module}", f"{name}/dim2 = ss", f"{name}/dim3 = fs"]
        else:
            out += [f"{name}/dim1 = ss", f"{name}/dim2 = fs"]
        out += [
            f"{name}/min_fs = {p.fs_offset}",
            f"{name}/max_fs = {p.fs_offset + p.n_fs - 1}",
            f"{name}/min_ss = {p.ss_offset}",
            f"{name}/max_ss = {p.ss_offset + p.n_ss - 1}",
            f"{name}/fs = {fs[0]:+.12f}x {fs[1]:+.12f}y {fs[2]:+.12f}z",
            f"{name}/ss = {ss[0]:+.12f}x {ss[1]:+.12f}y {ss[2]:+.12f}z",
            f"{name}/res = {res!r}",
            f"{name}/corner_x = {p.corner[0] * res:.12f}",
            f"{name}/corner_y = {p.corner[1] * res:.12f}",
            f"{name}/coffset = {p.corner[2] - clen:.15f}",
            "",
        ]
    write_text_atomic(path, "\n".join(out))
