"""``spi import``: a real run's frames into the project's CXI layout (``docs/real-data.md``).

:func:`run_import` streams the selected frames of the source in blocks (bounded memory whatever the
run size) into a temporary file beside the output, which is renamed to the output only once complete:

1. inputs checked (output folder, frames, masks, labels, geometry) before any frame is read;
2. a first pass, only for ``gain="auto"`` or ``centre="auto"``, over at most ``first_pass_frames``
   evenly spaced frames: the pixel histogram for the gain (:mod:`.gain`) and the mean pattern for the
   beam centre (:mod:`.centre`);
3. the main pass: non-finite values set to 0 (their pixels join the mask; a frame without any finite
   good pixel is written as NaN so that later commands refuse to classify it), division by the gain
   (float32 photons), crop and ``bin_sum``, one frame per compressed chunk;
4. the mask (``bin_mask``), geometry, source and provenance (root attribute ``spi_import``) written
   through :func:`spisim.cxi.write_instrument`, the file marked complete and renamed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..cxi import DETECTOR_PATH, LABEL_CLASSES, LABELS_PATH, FrameBlockWriter, create_frames, write_instrument
from ..detector import Detector, Panel
from ..detector.binning import bin_mask, bin_sum
from ..errors import ConfigError, InputFileError, OutputFileError, os_error_message
from .centre import CentreFit, fit_centre_groups
from .gain import GainAccumulator, GainFit
from .options import ImportOptions
from .source import FrameSource, file_facts, load_labels, load_mask, open_source


@dataclass
class ImportResult:
    """What an import wrote.

    Attributes:
        path: the output file.
        n_frames: frames written.
        frame_shape: (M, SS, FS) of the written frames.
        gain: the gain fit (``gain="auto"``), else None.
        centre: the centre fit (``centre="auto"``), else None.
        centre_xy: beam position (X, Y) in unbinned source pixels of a flat panel, else None.
        provenance: the ``spi_import`` JSON document.
        seconds: wall time.
        notes: lines worth showing (cropping, non-finite pixels, NaN frames).
    """

    path: Path
    n_frames: int
    frame_shape: tuple[int, int, int]
    gain: GainFit | None
    centre: CentreFit | None
    centre_xy: tuple[float, float] | None
    provenance: dict
    seconds: float
    notes: list[str] = field(default_factory=list)


def flat_panel(n_ss: int, n_fs: int, pixel_size_m: float, distance_m: float, centre_xy: tuple[float, float],
               *, name: str = "flat panel") -> Detector:
    """A flat detector normal to the beam, data shape (1, SS, FS), beam at pixel (X, Y).

    Pixel (ss, fs) has its centre at x = (fs − X)·p, y = −(ss − Y)·p, z = D: fast scan along +x, row 0
    at the top (as :meth:`Detector.square`).

    Args:
        n_ss, n_fs: pixels along slow and fast scan.
        pixel_size_m: p (m).
        distance_m: D (m).
        centre_xy: (X, Y) px, 0-based pixel centres; may be fractional or off the panel.
    """
    x, y = (float(v) for v in centre_xy)
    p = float(pixel_size_m)
    corner = np.array([-(x + 0.5) * p, (y + 0.5) * p, float(distance_m)])
    panel = Panel(corner, np.array([p, 0.0, 0.0]), np.array([0.0, -p, 0.0]), int(n_fs), int(n_ss), name="panel")
    return Detector([panel], (1, int(n_ss), int(n_fs)), name=name)


def check_import_output(out: str | Path, *, overwrite: bool, source: Path | None = None) -> Path:
    """SpiError unless the import may write ``out``: a file name in a writable folder, not existing unless
    ``overwrite``, not the source itself."""
    from ..generate import check_writable_folder

    given, path = str(out), Path(out)
    if not path.name or path.name in (".", "..") or given.endswith(("/", os.sep)):
        raise OutputFileError(f"output {given!r} is not a file name (e.g. -o run.cxi)")
    if path.is_dir():
        raise OutputFileError(f"output {path} is a folder: give a file name such as {path / 'run.cxi'}")
    check_writable_folder(path.parent if str(path.parent) else Path("."))
    if source is not None and path.exists() and path.resolve() == Path(source).resolve():
        raise OutputFileError(f"output {path} is the source run itself: choose another name")
    if path.exists() and not overwrite:
        raise OutputFileError(f"{path} exists: use --overwrite to replace it")
    return path


CENTRE_GROUPS = 8
"""Frame groups of the first pass whose leave-one-out fits give the centre's jackknife errors."""


def _temporary_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.importing")


def _first_pass_indices(selected: range, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced source indices of the selection (first and last included)."""
    n = len(selected)
    if n <= limit:
        return np.asarray(selected, dtype=np.int64)
    pos = np.unique(np.round(np.linspace(0, n - 1, int(limit))).astype(np.int64))
    return np.asarray(selected, dtype=np.int64)[pos]


def _block_frames(frame_shape: tuple[int, ...], block_mb: float) -> int:
    per_frame = 4 * int(np.prod(frame_shape))
    return int(max(1, min(1024, (block_mb * 2**20) // max(per_frame, 1))))


def _blocks(selected: range, size: int):  # noqa: ANN202
    """(output start, source start, source stop, step) of consecutive blocks of the selection."""
    step = selected.step
    for j in range(0, len(selected), size):
        n = min(size, len(selected) - j)
        first = selected[j]
        yield j, first, first + (n - 1) * step + 1, step


def _iter_frames(source: FrameSource, indices: np.ndarray, block: int):  # noqa: ANN202
    """(source index, frame (M, SS, FS) float32) for sorted indices; consecutive runs read in blocks."""
    i = 0
    while i < len(indices):
        j = i + 1
        while j < len(indices) and j - i < block and indices[j] == indices[j - 1] + 1:
            j += 1
        frames = source.read(int(indices[i]), int(indices[j - 1]) + 1)
        for k, frame in enumerate(frames):
            yield int(indices[i + k]), frame
        i = j


def _check_geometry(opts: ImportOptions, frame_shape: tuple[int, int, int]) -> tuple[Detector | None, dict]:
    """The geometry file's detector (binned check done early), or None for a flat panel / no geometry."""
    if opts.geometry is None:
        if opts.pixel_size_m is not None and frame_shape[0] != 1:
            raise ConfigError(f"the frames have {frame_shape[0]} modules {frame_shape}: a flat panel "
                              "(--pixel-size, --distance) needs one; give a --geometry file")
        return None, {}
    det = Detector.load(opts.geometry)
    if det.shape != tuple(frame_shape):
        raise ConfigError(f"geometry {opts.geometry} has data shape {det.shape} (modules, ss, fs); the frames are "
                          f"{frame_shape}")
    facts = {"file": file_facts(Path(opts.geometry)), "distance_from_file_m": det.distance,
             "photon_energy_ev_from_file": det.metadata.get("photon_energy_ev")}
    if opts.distance_m is not None:
        det = det.with_distance(opts.distance_m)
    if opts.bin > 1:
        det.binned(opts.bin)  # raises now, before any work, when the panels do not divide
    return det, facts


def _cropped(shape: tuple[int, int, int], n: int) -> tuple[int, int]:
    return shape[1] - shape[1] % n, shape[2] - shape[2] % n


def _first_pass(src: FrameSource, selected: range, user_mask: np.ndarray, opts: ImportOptions,
                advance: Callable[[int], None], start_phase: Callable[[str, int], None], tell: Callable[[str], None]
                ) -> tuple[GainFit | None, CentreFit | None, dict]:
    """Gain fit and/or centre fit from at most ``opts.first_pass_frames`` evenly spaced frames.

    Frames without any finite good pixel are skipped; a pixel non-finite in some frame is left out of the
    mean pattern (and the gain histogram leaves out non-finite values).
    """
    shape = src.frame_shape
    indices = _first_pass_indices(selected, int(opts.first_pass_frames))
    start_phase("first pass (gain, centre)", len(indices))
    acc = GainAccumulator(user_mask, integer=src.is_integer) if opts.gain == "auto" else None
    want_centre = opts.centre == "auto"
    # module 0's sum and count per frame group (frame k of the pass in group k mod CENTRE_GROUPS)
    sums = np.zeros((CENTRE_GROUPS, *shape[1:]), dtype=np.float64) if want_centre else None
    counts = np.zeros((CENTRE_GROUPS, *shape[1:]), dtype=np.int32) if want_centre else None
    used = 0
    for _, frame in _iter_frames(src, indices, _block_frames(shape, opts.block_mb)):
        finite = np.isfinite(frame)
        if finite[~user_mask].any():
            if acc is not None:
                acc.add(frame)
            if sums is not None and counts is not None:
                g = used % CENTRE_GROUPS
                sums[g] += np.where(finite[0], frame[0], 0.0)
                counts[g] += finite[0]
            used += 1
        advance(1)
    facts = {"frames": int(len(indices)), "frames_used": used,
             "spacing": "all" if len(indices) == len(selected) else "evenly spaced"}
    if used == 0:
        raise InputFileError(f"{src.path}: no frame of the first pass has a finite good pixel")
    gain_fit = centre_fit = None
    if acc is not None:
        gain_fit = acc.fit()
        tell(gain_fit.summary())
    if sums is not None and counts is not None:
        bad = user_mask[0] | (counts.sum(axis=0) < used)  # pixels non-finite in some frame are left out
        centre_fit = fit_centre_groups(sums, counts, bad)
        tell(f"beam centre X = {centre_fit.col:.2f} ± {centre_fit.col_sd:.2f} px (fast scan), "
             f"Y = {centre_fit.row:.2f} ± {centre_fit.row_sd:.2f} px (slow scan), from the mean of {used} frames "
             f"({centre_fit.sd_method})")
    return gain_fit, centre_fit, facts


@dataclass
class FrameStats:
    """What the main pass found: pixels non-finite in some frame (M, SS, FS) bool, how many values, in how
    many frames, and the source indices of frames without any finite good pixel (written as NaN)."""

    nonfinite_pixels: np.ndarray
    nonfinite_values: int = 0
    frames_with_nonfinite: int = 0
    nan_frames: list[int] = field(default_factory=list)


def _write_frames(data: h5py.Dataset, src: FrameSource, selected: range, user_mask: np.ndarray, *,
                  gain: float | None, crop: tuple[int, int], bin_n: int, compression: str | None, block_mb: float,
                  advance: Callable[[int], None]) -> FrameStats:
    """The main pass: read the selection in blocks, clean, convert, crop, bin and write it into ``data``."""
    stats = FrameStats(np.zeros(src.frame_shape, dtype=bool))
    ss_c, fs_c = crop
    with FrameBlockWriter(data, compression) as writer:
        for j, a, b, step in _blocks(selected, _block_frames(src.frame_shape, block_mb)):
            frames = src.read(a, b, step)
            finite = np.isfinite(frames)
            ok = (finite & ~user_mask).reshape(len(frames), -1).any(axis=1)
            stats.nan_frames.extend(int(selected[j + k]) for k in np.nonzero(~ok)[0])
            bad_values = ~finite
            del finite
            bad_values[~ok] = False  # a frame without any finite good pixel is not its pixels' fault
            if bad_values.any():
                stats.nonfinite_values += int(bad_values.sum())
                stats.frames_with_nonfinite += int(bad_values.reshape(len(frames), -1).any(axis=1).sum())
                stats.nonfinite_pixels |= bad_values.any(axis=0)
                frames[bad_values] = 0.0
            del bad_values
            if not ok.all():
                frames[~ok] = np.nan
            if gain is not None:
                np.divide(frames, np.float32(gain), out=frames)
            frames = frames[..., :ss_c, :fs_c]
            writer.write(j, bin_sum(frames, bin_n) if bin_n > 1 else frames)
            advance(len(frames))
    return stats


def run_import(opts: ImportOptions, *, progress: Callable[[int], None] | None = None,
               phase: Callable[[str, int], None] | None = None, say: Callable[[str], None] | None = None
               ) -> ImportResult:
    """Import a run (see the module doc and ``docs/real-data.md``).

    Args:
        opts: what to do.
        progress: called with the number of frames just finished (first pass, then main pass).
        phase: called with (description, total frames) when a pass starts.
        say: receives lines worth showing during the run (gain and centre as soon as known).

    Raises:
        SpiError: any bad input (one line); nothing is written then.
    """
    t0 = time.monotonic()
    advance = progress or (lambda n: None)
    start_phase = phase or (lambda d, n: None)
    tell = say or (lambda s: None)
    out = check_import_output(opts.output, overwrite=opts.overwrite, source=Path(opts.source))
    from ..cxi import compression_options

    compression_options(opts.compression)  # an unknown name fails now
    with open_source(opts.source, opts.data_path) as src:
        selected = range(src.n_frames)[opts.frames]
        if len(selected) == 0:
            given = opts.raw.get("frames") or f"{opts.frames.start}:{opts.frames.stop}"
            raise ConfigError(f"--frames {given} selects no frame of the {src.n_frames} in {src.path}")
        shape = src.frame_shape
        notes: list[str] = []
        prov: dict = {"spi_version": __version__, "time": datetime.now(UTC).isoformat(timespec="seconds"),
                      "source": {**file_facts(src.path), "format": src.kind, "data_path": src.data_path,
                                 "shape": list(src.raw_shape), "dtype": str(src.dtype)},
                      "options": opts.as_dict()}
        user_mask, mask_facts = _static_mask(opts, src)
        codes, label_facts = _labels(opts, src, selected)

        # ---- geometry (checked before any frame is read)
        geo_det, geo_facts = _check_geometry(opts, shape)
        n = int(opts.bin)
        flat = opts.geometry is None and opts.pixel_size_m is not None
        ss_c, fs_c, cropped = _crop_for_bin(shape, n, keep=geo_det is not None, notes=notes)
        energy = _photon_energy(opts, geo_det)

        # ---- first pass: gain and centre statistics
        gain_fit: GainFit | None = None
        centre_fit: CentreFit | None = None
        first_pass: dict = {}
        if opts.gain == "auto" or opts.centre == "auto":
            gain_fit, centre_fit, first_pass = _first_pass(src, selected, user_mask, opts, advance, start_phase, tell)
        gain: float | None = gain_fit.gain if gain_fit is not None else (
            float(opts.gain) if isinstance(opts.gain, float) else None)
        det_out, centre_xy = _output_detector(opts, flat, geo_det, centre_fit, shape, (ss_c, fs_c), n)
        out_shape = (shape[0], ss_c // n, fs_c // n)

        # ---- main pass
        tmp = _temporary_name(out)
        try:
            with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
                data = create_frames(f, len(selected), out_shape, dtype="float32", units="photons",
                                     compression=opts.compression, attrs={"spi_version": __version__})
                if codes is not None:
                    lab = f.require_group(LABELS_PATH)
                    ds = lab.create_dataset("hit_type", data=codes.astype(np.int8))
                    ds.attrs["names"] = json.dumps(list(LABEL_CLASSES))
                start_phase("importing", len(selected))
                stats = _write_frames(data, src, selected, user_mask, gain=gain, crop=(ss_c, fs_c), bin_n=n,
                                      compression=opts.compression, block_mb=opts.block_mb, advance=advance)
                bad = user_mask | stats.nonfinite_pixels
                if geo_det is not None:
                    bad |= geo_det.mask
                out_mask = bin_mask(bad[..., :ss_c, :fs_c], n) if n > 1 else bad.copy()
                if det_out is not None:
                    out_mask |= det_out.mask
                write_instrument(f, mask=out_mask,
                                 pixel_position=None if det_out is None else det_out.pixel_positions,
                                 solid_angle=None if det_out is None else det_out.solid_angles(),
                                 photon_energy_ev=energy, pulse_energy_j=float("nan"))
                _write_gain(f, data, gain, gain_fit)
                notes += _frame_notes(stats, user_mask)
                prov.update({
                    "frames": {"source_indices": [selected.start, selected.stop, selected.step],
                               "n_written": len(selected), "nan_frames": stats.nan_frames},
                    "gain": ({"mode": "auto", **gain_fit.as_dict()} if gain_fit is not None else
                             {"mode": "given", "adu_per_photon": gain} if gain is not None else
                             {"mode": "none (frames taken as photons)"}),
                    "centre": _centre_facts(opts, flat, centre_xy, centre_fit, n),
                    "first_pass": first_pass,
                    "mask": _mask_facts(opts, mask_facts, user_mask, stats, geo_det, out_mask),
                    "geometry": {"kind": "file" if geo_det is not None else "flat panel" if flat else "none",
                                 **geo_facts, "pixel_size_m": opts.pixel_size_m,
                                 "distance_m": det_out.distance if det_out is not None else None,
                                 "photon_energy_ev": energy, "pulse_energy_j": None, "bin": n,
                                 "cropped": cropped, "frame_shape_written": list(out_shape)},
                    "labels": label_facts,
                })
                f.attrs["spi_import"] = json.dumps(prov)
                f.attrs["spi_complete"] = True
            os.replace(tmp, out)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename:
                raise
            raise OutputFileError(f"cannot write {out}: {os_error_message(exc)}") from None
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    return ImportResult(path=out, n_frames=len(selected), frame_shape=out_shape, gain=gain_fit, centre=centre_fit,
                        centre_xy=centre_xy, provenance=prov, seconds=time.monotonic() - t0, notes=notes)


def _static_mask(opts: ImportOptions, src: FrameSource) -> tuple[np.ndarray, list[dict]]:
    """The OR of the ``--mask`` files, (M, SS, FS) bool True = bad, and what each gave."""
    user_mask = np.zeros(src.frame_shape, dtype=bool)
    facts = []
    for spec in opts.masks:
        m, where = load_mask(spec, src, value=opts.mask_value)
        facts.append({"spec": spec, "from": where, "masked_pixels": int(m.sum())})
        user_mask |= m
    return user_mask, facts


def _labels(opts: ImportOptions, src: FrameSource, selected: range) -> tuple[np.ndarray | None, dict]:
    """The class codes of the selected frames (``--labels``), or None, and what they held."""
    if opts.labels is None:
        return None, {}
    all_codes, where = load_labels(opts.labels, src, opts.label_map)
    codes = all_codes[np.asarray(selected, dtype=np.int64)]
    counts = {name: int(np.sum(codes == k)) for k, name in enumerate(LABEL_CLASSES) if np.any(codes == k)}
    return codes, {"from": where, "map": opts.label_map, "counts": counts, "unlabelled": int(np.sum(codes < 0))}


def _crop_for_bin(shape: tuple[int, int, int], n: int, *, keep: bool, notes: list[str]
                  ) -> tuple[int, int, dict[str, int]]:
    """(rows, columns) kept before binning by ``n`` (all with ``keep``: a geometry file's panels must divide by
    it), and what was cropped; a note is added when something was."""
    if keep:
        ss_c, fs_c = shape[1], shape[2]
    else:
        ss_c, fs_c = _cropped(shape, n)
        if ss_c == 0 or fs_c == 0:
            raise ConfigError(f"--bin {n} is larger than the frames ({shape[1]} x {shape[2]} pixels)")
    cropped = {"rows": shape[1] - ss_c, "cols": shape[2] - fs_c}
    if cropped["rows"] or cropped["cols"]:
        notes.append(f"binning {n}x{n}: cropped the last {cropped['rows']} rows and {cropped['cols']} columns "
                     f"({shape[1]} x {shape[2]} -> {ss_c} x {fs_c} pixels before binning)")
    return ss_c, fs_c, cropped


def _photon_energy(opts: ImportOptions, geo_det: Detector | None) -> float | None:
    """eV: ``--energy``, else the geometry file's; None when neither gives a positive finite one."""
    energy = opts.photon_energy_ev
    if energy is None and geo_det is not None:
        energy = geo_det.metadata.get("photon_energy_ev")
    if energy is not None and not (math.isfinite(energy) and energy > 0):
        energy = None
    return energy


def _output_detector(opts: ImportOptions, flat: bool, geo_det: Detector | None, centre_fit: CentreFit | None,
                     shape: tuple[int, int, int], kept: tuple[int, int], n: int
                     ) -> tuple[Detector | None, tuple[float, float] | None]:
    """The detector written (flat panel at the beam centre, or the geometry file's, binned) and the beam centre
    (X, Y) px of a flat panel (fitted, given, or the panel centre)."""
    if flat:
        assert opts.pixel_size_m is not None and opts.distance_m is not None
        if centre_fit is not None:
            centre_xy = (centre_fit.col, centre_fit.row)
        elif isinstance(opts.centre, tuple):
            centre_xy = opts.centre
        else:
            centre_xy = ((shape[2] - 1) / 2.0, (shape[1] - 1) / 2.0)
        return flat_panel(kept[0], kept[1], opts.pixel_size_m, opts.distance_m, centre_xy).binned(n), centre_xy
    if geo_det is not None:
        return geo_det.binned(n), None
    return None, None


def _write_gain(f: h5py.File, data: h5py.Dataset, gain: float | None, gain_fit: GainFit | None) -> None:
    """The gain the frames were divided by (attributes of the data) and the fitted read noise."""
    if gain is not None:
        data.attrs["adu_per_photon"] = float(gain)
        data.attrs["adu_per_photon_sd"] = float(gain_fit.gain_sd) if gain_fit is not None else 0.0
        data.attrs["adu_offset"] = float(gain_fit.offset) if gain_fit is not None else math.nan
        data.attrs["gain_source"] = "auto" if gain_fit is not None else "given"
    if gain_fit is not None:
        rn = f[DETECTOR_PATH].create_dataset("read_noise_photons", data=float(gain_fit.read_noise_photons))
        rn.attrs["units"] = "photons"


def _frame_notes(stats: FrameStats, user_mask: np.ndarray) -> list[str]:
    """Notes on the non-finite pixels masked and the frames kept as NaN."""
    notes = []
    if stats.nonfinite_pixels.any():
        new = int((stats.nonfinite_pixels & ~user_mask).sum())
        notes.append(f"{int(stats.nonfinite_pixels.sum())} pixels non-finite in some frame ({stats.nonfinite_values} "
                     f"values in {stats.frames_with_nonfinite} frames; {new} not already masked): masked, "
                     f"values written as 0")
    if stats.nan_frames:
        nan_frames = stats.nan_frames
        shown = ", ".join(map(str, nan_frames[:10])) + (" ..." if len(nan_frames) > 10 else "")
        notes.append(f"{len(nan_frames)} frames without any finite good pixel kept as NaN (source "
                     f"indices {shown})")
    return notes


def _mask_facts(opts: ImportOptions, mask_facts: list[dict], user_mask: np.ndarray, stats: FrameStats,
                geo_det: Detector | None, out_mask: np.ndarray) -> dict:
    """The provenance of the written mask."""
    nonfinite_px = stats.nonfinite_pixels
    return {"files": mask_facts, "mask_value": opts.mask_value,
            "user_masked_pixels": int(user_mask.sum()),
            "nonfinite_pixels": int(nonfinite_px.sum()),
            "nonfinite_pixels_not_in_user_mask": int((nonfinite_px & ~user_mask).sum()),
            "nonfinite_values": stats.nonfinite_values,
            "frames_with_nonfinite": stats.frames_with_nonfinite,
            "geometry_masked_pixels": int(geo_det.mask.sum()) if geo_det is not None else 0,
            "masked_pixels_written": int(out_mask.sum()),
            "pixels_written": int(out_mask.size)}


def _centre_facts(opts: ImportOptions, flat: bool, centre_xy: tuple[float, float] | None,
                  fit: CentreFit | None, n: int) -> dict:
    if not flat or centre_xy is None:
        return {"mode": "geometry file" if opts.geometry else "none"}
    mode = "auto" if fit is not None else "given" if isinstance(opts.centre, tuple) else "detector centre"
    x, y = centre_xy
    facts = {"mode": mode, "x_px": x, "y_px": y, "binned_x_px": (x + 0.5) / n - 0.5, "binned_y_px": (y + 0.5) / n - 0.5}
    if fit is not None:
        facts.update({"x_sd_px": fit.col_sd, "y_sd_px": fit.row_sd, "sd_method": fit.sd_method, "pairs": fit.n_pairs,
                      "mismatch": fit.mismatch})
    return facts


__all__ = ["ImportResult", "check_import_output", "flat_panel", "run_import"]
