"""Pictures of a dataset (``spi show``): shots per hit type, radial profiles, photon-count histograms.

The figure has one row of shots per class present, in the assembled detector layout (log colour
scale, masked areas blank), and two plots beside it: the radial profile (mean counts per pixel against
|q|) of each class with its 16–84 % band over shots, and the histogram of the total counts per shot of
each class. It works for any CXI file :class:`spisim.cxi.CXIReader` reads; files without geometry
are shown panel by panel and profiles are drawn against the distance from the panel centre.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cxi import LABELS_PATH, CXIReader
from .errors import InputFileError, OutputFileError, os_error_message

CLASS_COLOURS = {"no_hit": "#7f7f7f", "single": "#1f77b4", "multi": "#d62728", "unintended": "#2ca02c"}


def _pixel_size(pos: np.ndarray, covered: np.ndarray) -> float:
    """Median pixel pitch (m) along fast scan of pixel centres ``pos`` (M, SS, FS, 3)."""
    step = np.linalg.norm(np.diff(pos, axis=2), axis=-1)
    ok = covered[:, :, 1:] & covered[:, :, :-1]
    return float(np.median(step[ok])) if ok.any() else 1.0


def q_magnitude(pixel_position: np.ndarray, photon_energy_ev: float) -> np.ndarray:
    """|q| (Å⁻¹) per pixel, q = k(k̂_out − ẑ), for pixel centres (..., 3) m seen from the origin."""
    from .constants import wavelength_angstrom

    k = 2.0 * math.pi / wavelength_angstrom(photon_energy_ev)
    direction = pixel_position / np.linalg.norm(pixel_position, axis=-1, keepdims=True)
    direction[..., 2] -= 1.0
    return k * np.linalg.norm(direction, axis=-1)


def pick_examples(hit_type: np.ndarray, per_class: int) -> dict[int, np.ndarray]:
    """Indices of up to ``per_class`` shots of each class code, spread evenly over the file."""
    out = {}
    for code in np.unique(hit_type):
        idx = np.flatnonzero(hit_type == code)
        if code < 0 or idx.size == 0:
            continue
        take = np.unique(np.linspace(0, idx.size - 1, min(per_class, idx.size)).round().astype(int))
        out[int(code)] = idx[take]
    return out


def _radial_bins(r: np.ndarray, good: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bin index of each pixel of ``r[good]`` that lies inside ``edges``, which of them do) for :func:`_profile`."""
    which = np.digitize(r[good], edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    return which[inside], inside


def _profile(frame: np.ndarray, good: np.ndarray, bins: tuple[np.ndarray, np.ndarray], n_bins: int) -> np.ndarray:
    """Mean of ``frame`` per radial bin (n_bins,), NaN for empty bins; non-finite pixels are left out."""
    which, inside = bins
    v = frame[good][inside]
    ok = np.isfinite(v)
    s = np.bincount(which[ok], weights=v[ok], minlength=n_bins)
    n = np.bincount(which[ok], minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / n


def _radial(frames: np.ndarray, r: np.ndarray, good: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean value per radial bin for each frame: (n_frames, n_bins), NaN for empty bins.

    Pixels outside ``good`` and non-finite pixels (NaN, inf) of a frame are left out of its bins.
    """
    bins = _radial_bins(r, good, edges)
    return np.array([_profile(f, good, bins, len(edges) - 1) for f in frames]).reshape(len(frames), len(edges) - 1)


def _block_reduce(img: np.ndarray, max_side: int = 520) -> np.ndarray:
    """``img`` (H, W) averaged over f × f blocks (NaN-aware) so that no side exceeds about ``max_side`` pixels."""
    f = max(1, math.ceil(max(img.shape) / max_side))
    if f == 1:
        return img
    h, w = (img.shape[0] + f - 1) // f * f, (img.shape[1] + f - 1) // f * f
    padded = np.full((h, w), np.nan, dtype=img.dtype)
    padded[: img.shape[0], : img.shape[1]] = img
    blocks = padded.reshape(h // f, f, w // f, f)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(blocks, axis=(1, 3))


def _indices_text(idx: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(f"#{i}" for i in idx[:limit])
    return shown + (f" and {idx.size - limit} more" if idx.size > limit else "")


@dataclass
class _Shown:
    """What the figure of :func:`show_dataset` shows, read from the file in one pass (see there)."""

    path: Path
    n: int
    names: list[str]
    hit_type: np.ndarray
    units: str
    shape: tuple[int, int, int]
    energy: float | None
    n_particles: np.ndarray | None
    r: np.ndarray
    r_label: str
    good: np.ndarray
    extent: Any
    examples: dict[int, np.ndarray]
    profile_pick: dict[int, np.ndarray]
    scan: _Scan
    skipped: np.ndarray

    @property
    def codes(self) -> list[int]:
        return sorted(self.examples)

    def name(self, code: int) -> str:
        return self.names[code] if code < len(self.names) else str(code)

    def edges(self) -> np.ndarray:
        return np.linspace(0.0, float(self.r[self.good].max()) if self.good.any() else 1.0, 61)


def show_dataset(path: str | Path, out: str | Path, *, per_class: int = 4, max_profile_shots: int = 200,
                 dpi: int = 110, block_bytes: int = 64 << 20, on_start: Callable[[int], None] | None = None,
                 progress: Callable[[int], None] | None = None, say: Callable[[str], None] | None = None) -> Path:
    """Draw the dataset ``path`` into the picture ``out`` (PNG, PDF or SVG by suffix); returns ``out``.

    The frames are read once, in blocks of at most ``block_bytes`` (memory stays bounded whatever the file
    size): the total counts of every shot, the radial profiles of up to ``max_profile_shots`` shots per class
    and the shown shots are taken as the blocks pass. Non-finite pixels (NaN, inf) outside the mask are
    masked in their shot and counted; a shot without any finite unmasked pixel is left out of the picture.
    Both are reported through ``say``.

    Args:
        per_class: shots shown per hit type.
        max_profile_shots: at most this many shots per class enter the radial profiles.
        dpi: resolution of raster output.
        block_bytes: frames read at a time, in bytes of float32 (at least one frame).
        on_start: called with the number of shots once the file is open and checked.
        progress: called with the number of shots read since the last call.
        say: called with each one-line report (non-finite pixels masked, shots skipped).

    Raises:
        InputFileError: unreadable file, no shots, or no shot with a finite unmasked pixel.
        OutputFileError: the picture cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if per_class < 1:
        from .errors import ConfigError

        raise ConfigError(f"--per-class must be >= 1, got {per_class}")
    picture_format(out)  # a bad output name fails before the data are read
    shown = _read_shown(Path(path), per_class, max_profile_shots, block_bytes, on_start, progress, say)
    fig = plt.figure(figsize=(2.3 * per_class + 6.2, max(2.35 * len(shown.codes) + 1.2, 5.0)), layout="constrained")
    outer = fig.add_gridspec(1, 2, width_ratios=[2.3 * per_class, 6.0])
    right = outer[1].subgridspec(2, 1)
    _draw_montage(fig, outer[0].subgridspec(len(shown.codes), per_class), shown, per_class)
    _draw_profiles(fig.add_subplot(right[0]), shown)
    _draw_totals(fig.add_subplot(right[1]), shown)
    left_out = f" ({shown.skipped.size} without a finite pixel left out)" if shown.skipped.size else ""
    shape, energy = shown.shape, shown.energy
    fig.suptitle(f"{Path(path).name}: {shown.n} shots{left_out}, detector {shape[0]}×{shape[1]}×{shape[2]}"
                 + (f", {energy:.0f} eV" if energy else ""), fontsize=12)
    return _save(fig, Path(out), dpi)


def _read_shown(path: Path, per_class: int, max_profile_shots: int, block_bytes: int,
                on_start: Callable[[int], None] | None, progress: Callable[[int], None] | None,
                say: Callable[[str], None] | None) -> _Shown:
    """Open the file, check it, and read what the figure needs in one pass over the frames (see show_dataset)."""
    from .detector.assemble import build_assembly_map

    with CXIReader(path) as reader:
        n = len(reader)
        if n == 0:
            raise InputFileError(f"{path} holds no shots")
        names = reader.class_names if reader.has_labels else ["shot"]
        hit_type = reader.hit_type if reader.has_labels else np.zeros(n, np.int64)
        if hit_type.shape != (n,):
            raise InputFileError(f"{path}: {hit_type.size} hit_type labels for {n} shots")
        shape, pos, energy = reader.frame_shape, reader.pixel_position, reader.photon_energy_ev
        covered = np.isfinite(pos).all(-1) if pos is not None else np.ones(shape, bool)
        good = covered & ~reader.mask
        image, r, r_label, extent = _layout(pos, covered, good, shape, energy, build_assembly_map)
        edges = np.linspace(0.0, float(r[good].max()) if good.any() else 1.0, 61)
        examples = pick_examples(hit_type, per_class)
        profile_pick = {}
        for c in examples:
            idx = np.flatnonzero(hit_type == c)
            profile_pick[c] = idx[np.unique(np.linspace(0, idx.size - 1, min(max_profile_shots, idx.size)).astype(int))]
        want_image = {int(i) for idx in examples.values() for i in idx}
        want_profile = {int(i) for idx in profile_pick.values() for i in idx}
        scan = _Scan(n, good, image, _radial_bins(r, good, edges), len(edges) - 1, want_image, want_profile)
        if on_start is not None:
            on_start(n)
        step = max(1, int(block_bytes) // max(1, 4 * int(np.prod(shape))))
        for start in range(0, n, step):
            stop = min(start + step, n)
            scan.add(np.asarray(reader.data[start:stop], dtype=np.float32).reshape(stop - start, *shape), start)
            if progress is not None:
                progress(stop - start)
        skipped = _report_bad_shots(path, scan, say)
        if skipped.size:  # show other shots of the class instead of the skipped ones
            hit_type = np.where(scan.usable, hit_type, -1)
            examples = pick_examples(hit_type, per_class)
            missing = sorted({int(i) for idx in examples.values() for i in idx} - set(scan.images))
            if missing:
                for i, frame in zip(missing, reader.frames(missing), strict=True):
                    scan.images[i] = image(np.where(np.isfinite(frame), frame, np.nan))
        units = str(reader.data.attrs.get("units", "counts"))
        n_particles = reader.labels("n_particles") if f"{LABELS_PATH}/n_particles" in reader.file else None
        return _Shown(path=path, n=n, names=names, hit_type=hit_type, units=units, shape=shape, energy=energy,
                      n_particles=n_particles, r=r, r_label=r_label, good=good, extent=extent, examples=examples,
                      profile_pick=profile_pick, scan=scan, skipped=skipped)


def _report_bad_shots(path: Path, scan: _Scan, say: Callable[[str], None] | None) -> np.ndarray:
    """Say how many non-finite pixels were masked and which shots are left out; returns the left-out shots.

    Raises:
        InputFileError: no shot has a finite unmasked pixel.
    """
    n = len(scan.usable)
    skipped = np.flatnonzero(~scan.usable)
    masked_shots = np.flatnonzero(scan.usable & (scan.n_bad > 0))
    if say is not None and masked_shots.size:
        say(f"{int(scan.n_bad[masked_shots].sum()):,} non-finite pixels (NaN or inf) in {masked_shots.size} shot"
            f"{'s' if masked_shots.size != 1 else ''} of {path} were masked ({_indices_text(masked_shots)})")
    if skipped.size == n:
        raise InputFileError(f"{path}: no shot has a finite unmasked pixel (all {n} are NaN or inf): "
                             f"nothing to draw")
    if say is not None and skipped.size:
        say(f"{skipped.size} shot{'s' if skipped.size != 1 else ''} of {path} with no finite unmasked pixel "
            f"left out of the picture ({_indices_text(skipped)})")
    return skipped


def _draw_montage(fig: Any, grid: Any, shown: _Shown, cols: int) -> None:
    """The shots of each class, one row per class, on one log colour scale, with a colour bar below."""
    import matplotlib
    from matplotlib.colors import LogNorm

    codes = shown.codes
    images = {c: [shown.scan.images[int(i)] for i in shown.examples[c]] for c in codes}
    values = np.concatenate([np.ravel(i)[np.isfinite(np.ravel(i))] for c in codes for i in images[c]])
    positive = values[values > 0]
    vmax = float(np.percentile(positive, 99.9)) if positive.size else 1.0
    low = float(np.percentile(positive, 5)) if positive.size else 0.1
    vmin = min(max(low, 0.5 if shown.units == "photons" else 1e-3), vmax / 10)
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#d9d9d9", under="black")
    last = None
    montage = []
    for r_i, c in enumerate(codes):
        idx = shown.examples[c]
        for k in range(cols):
            ax = fig.add_subplot(grid[r_i, k])
            montage.append(ax)
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(idx):
                ax.axis("off")
                continue
            img = np.clip(images[c][k], vmin * 0.999, None)
            last = ax.imshow(img, norm=norm, cmap=cmap, extent=shown.extent, origin="upper", interpolation="nearest")
            label = f"#{idx[k]}"
            if shown.n_particles is not None:
                label += f"  n={int(shown.n_particles[idx[k]])}"
            label += f"  {shown.scan.totals[idx[k]]:.3g}"
            ax.set_title(label, fontsize=8)
            if k == 0:
                name = shown.name(c)
                ax.set_ylabel(name, fontsize=11, color=CLASS_COLOURS.get(name if c < len(shown.names) else "",
                                                                         "black"))
    if last is not None:
        from matplotlib.ticker import NullFormatter

        bar = fig.colorbar(last, ax=montage, location="bottom", shrink=0.5, aspect=35, pad=0.01)
        bar.ax.xaxis.set_minor_formatter(NullFormatter())
        bar.set_label(f"{shown.units} per image pixel (log scale; grey: masked or no pixel)", fontsize=9)


def _draw_profiles(ax_p: Any, shown: _Shown) -> None:
    """Radial profiles: the mean of each class with its 16–84 % band over shots."""
    edges = shown.edges()
    centres = 0.5 * (edges[1:] + edges[:-1])
    scan = shown.scan
    for c in shown.codes:
        prof = np.array([scan.profiles[int(i)] for i in shown.profile_pick.get(c, []) if scan.usable[i]]).reshape(
            -1, len(edges) - 1)
        if not len(prof):
            continue
        name = shown.name(c)
        colour = CLASS_COLOURS.get(name, None)
        with np.errstate(invalid="ignore"), _quiet():
            mean = np.nanmean(prof, axis=0)
            lo, hi = np.nanpercentile(prof, [16, 84], axis=0)
        ax_p.plot(centres, mean, color=colour, label=f"{name} ({int((shown.hit_type == c).sum())})")
        ax_p.fill_between(centres, lo, hi, color=colour, alpha=0.2, linewidth=0)
    if any(ln.get_ydata().size and np.nanmax(np.asarray(ln.get_ydata(), float), initial=0.0) > 0
           for ln in ax_p.get_lines()):
        ax_p.set_yscale("log")  # else (all frames zero or negative) a log axis has nothing to show
    ax_p.set_xlabel(shown.r_label)
    ax_p.set_ylabel(f"mean {shown.units} per pixel")
    ax_p.set_title("radial profiles (mean, 16–84 % of shots)", fontsize=10)
    ax_p.legend(fontsize=8)
    ax_p.grid(alpha=0.3)


def _draw_totals(ax_h: Any, shown: _Shown) -> None:
    """Histograms of the total counts per shot of each class (log axis)."""
    totals = shown.scan.totals
    kept = totals[shown.scan.usable]
    pos_totals = kept[kept > 0]
    lo_t = max(float(pos_totals.min()) if pos_totals.size else 1.0, 1e-3)
    hi_t = float(pos_totals.max()) if pos_totals.size else 10.0
    bins = np.logspace(math.log10(lo_t / 1.3), math.log10(max(hi_t * 1.3, lo_t * 3)), 40)
    for c in shown.codes:
        name = shown.name(c)
        ax_h.hist(np.clip(totals[shown.hit_type == c], bins[0], None), bins=bins, histtype="step", linewidth=1.6,
                  color=CLASS_COLOURS.get(name, None), label=name)
    ax_h.set_xscale("log")
    edge = "; shots with ≤ 0 at the left edge" if (kept <= 0).any() else ""
    ax_h.set_xlabel(f"total {shown.units} per shot (unmasked pixels{edge})")
    ax_h.set_ylabel("shots")
    ax_h.set_title("counts per shot", fontsize=10)
    ax_h.legend(fontsize=8)
    ax_h.grid(alpha=0.3)


def _save(fig: Any, out: Path, dpi: int) -> Path:
    """Write the figure to ``out`` through a temporary name (never a half-written picture), and close it."""
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=dpi, format=picture_format(out))
        os.replace(tmp, out)  # never a half-written picture under the final name
    except OSError as exc:
        raise OutputFileError(f"cannot write {out}: {os_error_message(exc)}") from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def _layout(pos: np.ndarray | None, covered: np.ndarray, good: np.ndarray, shape: tuple[int, int, int],
            energy: float | None, build_assembly_map: Callable) -> tuple[Callable, np.ndarray, str, Any]:
    """How shots are drawn: (frame -> image function, radius per pixel (M, SS, FS), its axis label, image extent).

    With pixel positions, frames are assembled in the detector layout (about 260 image pixels a side) and the
    radius is |q| (Å⁻¹; the distance from the beam in m without a photon energy); without, panels are stacked
    and the radius is the distance from the panel centre in pixels. Images are float64 with NaN where a pixel is
    masked, not covered or not finite.
    """
    if pos is not None:
        native = _pixel_size(pos, covered)
        xy = pos[covered][:, :2]
        span = float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1])))
        amap = build_assembly_map(np.nan_to_num(pos), covered, max(native, span / 260.0))
        extent = np.array(amap.extent) * 1e3

        def image(frame: np.ndarray) -> np.ndarray:
            ok = good & np.isfinite(frame)
            img = amap.assemble(np.where(ok, frame, 0.0).astype(np.float64))
            img[amap.assemble_mask(~ok)] = np.nan
            return img

        r = q_magnitude(np.nan_to_num(pos), energy) if energy else np.hypot(pos[..., 0], pos[..., 1])
        r_label = "|q| (1/Å)" if energy else "distance from the beam (m)"
        return image, r, r_label, extent

    def stacked(frame: np.ndarray) -> np.ndarray:
        return _block_reduce(np.where(good, frame, np.nan).astype(np.float64).reshape(-1, shape[2]))

    ss, fs = np.meshgrid(np.arange(shape[1]) - shape[1] / 2, np.arange(shape[2]) - shape[2] / 2, indexing="ij")
    r = np.broadcast_to(np.hypot(ss, fs), shape)
    return stacked, r, "distance from the panel centre (pixels)", None


class _Scan:
    """What the picture needs from every shot, taken block by block as the frames pass (frames are read once).

    Attributes:
        totals: (N,) sum of the finite unmasked pixels of each shot.
        n_bad: (N,) number of non-finite (NaN, inf) unmasked pixels of each shot.
        usable: (N,) the shot has at least one finite unmasked pixel.
        images: shot index -> image (see :func:`_layout`), for the shots in ``want_image``.
        profiles: shot index -> radial profile (n_bins,), for the shots in ``want_profile``.
    """

    def __init__(self, n: int, good: np.ndarray, image: Callable, bins: tuple[np.ndarray, np.ndarray], n_bins: int,
                 want_image: set[int], want_profile: set[int]) -> None:
        self.good, self.image, self.bins, self.n_bins = good, image, bins, n_bins
        self.want_image, self.want_profile = want_image, want_profile
        self.totals = np.full(n, np.nan)
        self.n_bad = np.zeros(n, np.int64)
        self.usable = np.ones(n, bool)
        self.images: dict[int, np.ndarray] = {}
        self.profiles: dict[int, np.ndarray] = {}

    def add(self, block: np.ndarray, start: int) -> None:
        """Frames ``start`` .. ``start + len(block) - 1``, ``block`` (B, M, SS, FS)."""
        stop = start + len(block)
        finite = np.isfinite(block)
        valid = finite & self.good[None]
        self.totals[start:stop] = np.where(valid, block, 0.0).sum(axis=(1, 2, 3), dtype=np.float64)
        self.n_bad[start:stop] = (self.good[None] & ~finite).sum(axis=(1, 2, 3))
        self.usable[start:stop] = valid.any(axis=(1, 2, 3))
        for i in range(start, stop):
            if not self.usable[i]:
                continue
            frame = block[i - start]
            if i in self.want_image:
                self.images[i] = self.image(np.where(finite[i - start], frame, np.nan))
            if i in self.want_profile:
                self.profiles[i] = _profile(frame, self.good, self.bins, self.n_bins)


def picture_format(out: str | Path) -> str:
    """The picture format named by the suffix of ``out`` (``png``, ``pdf``, ``svg`` ...).

    Raises:
        OutputFileError: no or an unknown suffix, a folder, or a folder that does not exist or cannot be
            written.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from .generate import check_writable_folder

    out = Path(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.is_dir():
        raise OutputFileError(f"output {out} is a folder: give a picture file such as {out / 'dataset.png'}")
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        what = f"suffix '.{suffix}'" if suffix else "no suffix"
        raise OutputFileError(f"picture {out} has {what}: use .png, .pdf or .svg (or one of "
                              f"{', '.join(sorted(formats))})")
    check_writable_folder(out.parent)
    return suffix


class _quiet:
    """Silence numpy's 'all-NaN slice' warnings of empty radial bins."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
