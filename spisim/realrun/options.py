"""What an import is asked to do (:class:`ImportOptions`), and the parsers of its command-line strings.

Every parser raises :class:`spisim.errors.ConfigError` with one line naming the option, what came and
what was expected, so that ``spi import`` and Python callers report bad input alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..manifest import MAX_PHOTON_ENERGY, MIN_PHOTON_ENERGY
from ..units import parse_quantity

DEFAULT_FIRST_PASS = 2000
"""Most frames (evenly spaced) read by the first pass that feeds ``--gain auto`` and ``--centre auto``."""


def parse_frames(text: str | None) -> slice:
    """``START:STOP`` (or ``START:STOP:STEP``), Python slice semantics, either end optional → slice."""
    if text is None or str(text).strip() in ("", ":"):
        return slice(None)
    parts = str(text).split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--frames {text!r}: expected START:STOP (either may be left out, e.g. 100: or :500)")
    values: list[int | None] = []
    for p in parts:
        p = p.strip()
        if not p:
            values.append(None)
            continue
        try:
            values.append(int(p))
        except ValueError:
            raise ConfigError(f"--frames {text!r}: {p!r} is not a whole number (expected START:STOP)") from None
    if len(values) == 3 and values[2] is not None and values[2] <= 0:
        raise ConfigError(f"--frames {text!r}: the step must be a whole number >= 1")
    return slice(*values)


def parse_centre(text: str | None) -> tuple[float, float] | str | None:
    """``auto`` or ``X,Y`` (pixels: X along fast scan, Y along slow scan, 0-based pixel centres) → (X, Y)."""
    if text is None:
        return None
    t = str(text).strip()
    if t.lower() == "auto":
        return "auto"
    parts = t.split(",")
    if len(parts) != 2:
        raise ConfigError(f"--centre {text!r}: expected X,Y in pixels (e.g. 128.5,130) or auto")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--centre {text!r}: expected two numbers X,Y in pixels (e.g. 128.5,130) or auto") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ConfigError(f"--centre {text!r}: X and Y must be finite numbers of pixels")
    return (x, y)


def parse_gain(text: str | float | None) -> float | str | None:
    """``auto`` or a number of ADU per photon (> 0)."""
    if text is None:
        return None
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        g = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"--gain {text!r}: expected ADU per photon (a number > 0) or auto") from None
    if not (math.isfinite(g) and g > 0):
        raise ConfigError(f"--gain {text!r}: ADU per photon must be a finite number > 0")
    return g


def parse_positive(text: str | float | None, dim: str, default_unit: str, option: str) -> float | None:
    """A length or photon energy with an optional unit (``'75 um'``, ``'0.58 m'``, ``'1.6 keV'``), > 0, in
    m or eV; None passes through."""
    if text is None:
        return None
    value = parse_quantity(text, dim, default_unit, option)
    if not value > 0:
        raise ConfigError(f"{option} {text!r}: must be > 0")
    if dim == "photon_energy" and not MIN_PHOTON_ENERGY <= value <= MAX_PHOTON_ENERGY:
        raise ConfigError(f"{option} {text!r} is {value:.4g} eV: a photon energy lies between {MIN_PHOTON_ENERGY:g} "
                          f"eV and {MAX_PHOTON_ENERGY / 1e3:g} keV (a bare number is eV; a length is a wavelength)")
    return value


@dataclass(frozen=True)
class ImportOptions:
    """One import (see ``docs/real-data.md``). Lengths in m, energies in eV, pixel coordinates in px.

    Attributes:
        source: the run (HDF5 or .npy).
        output: the CXI file to write.
        data_path: frame dataset in an HDF5 source (None: found).
        frames: source frames to import (slice over source indices).
        masks: mask specs, OR-ed (a dataset of the source, an .npy file, FILE.h5:/path or FILE.h5).
        mask_value: ``bad`` (non-zero = bad) or ``good`` (non-zero = good).
        gain: ADU per photon, ``"auto"``, or None (frames already in photons).
        geometry: a geometry file read by :meth:`spisim.detector.Detector.load`, or None.
        pixel_size_m, distance_m: a flat panel (both), or the distance of a geometry file (distance only).
        photon_energy_ev: eV, or None (from the geometry file, if it has one).
        centre: (X, Y) px, ``"auto"`` or None (the detector centre); flat panel only.
        bin: n: n × n pixels joined on import.
        labels: a label dataset of the source or a label file; ``label_map`` raw value → class name.
        compression: of the frames (see :func:`spisim.cxi.compression_options`).
        overwrite: replace an existing output.
        first_pass_frames: most frames read for ``gain``/``centre`` ``auto``.
        block_mb: most MB of float32 frames read and written at a time.
        raw: the options as the user gave them (strings), for provenance.
    """

    source: str
    output: str
    data_path: str | None = None
    frames: slice = field(default_factory=lambda: slice(None))
    masks: tuple[str, ...] = ()
    mask_value: str = "bad"
    gain: float | str | None = None
    geometry: str | None = None
    pixel_size_m: float | None = None
    distance_m: float | None = None
    photon_energy_ev: float | None = None
    centre: tuple[float, float] | str | None = None
    bin: int = 1
    labels: str | None = None
    label_map: dict[str, str] | None = None
    compression: str | None = "gzip"
    overwrite: bool = False
    first_pass_frames: int = DEFAULT_FIRST_PASS
    block_mb: float = 64.0
    raw: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask_value not in ("bad", "good"):
            raise ConfigError(f"--mask-value must be bad or good, got {self.mask_value!r}")
        if int(self.bin) != self.bin or self.bin < 1:
            raise ConfigError(f"--bin must be a whole number >= 1, got {self.bin!r}")
        if self.geometry is not None:
            if self.pixel_size_m is not None:
                raise ConfigError("--pixel-size describes a flat panel; a --geometry file gives the pixels itself")
            if self.centre is not None:
                raise ConfigError("--centre places the beam on a flat panel; a --geometry file places it itself")
        elif (self.pixel_size_m is None) != (self.distance_m is None):
            missing = "--distance" if self.distance_m is None else "--pixel-size"
            raise ConfigError(f"a flat-panel geometry needs both --pixel-size and --distance: add {missing}")
        elif self.centre is not None and self.pixel_size_m is None:
            raise ConfigError("--centre needs a flat-panel geometry: add --pixel-size and --distance")
        if self.label_map is not None and self.labels is None:
            raise ConfigError("--label-map needs --labels")
        if int(self.first_pass_frames) < 1:
            raise ConfigError(f"first pass needs at least 1 frame, got {self.first_pass_frames}")

    @classmethod
    def from_strings(cls, source: str, output: str, *, data: str | None = None, frames: str | None = None,
                     mask: tuple[str, ...] = (), mask_value: str = "bad", gain: str | None = None,
                     geometry: str | None = None, pixel_size: str | None = None, distance: str | None = None,
                     energy: str | None = None, centre: str | None = None, bin: int = 1,
                     labels: str | None = None, label_map: str | None = None, compression: str | None = "gzip",
                     overwrite: bool = False, first_pass_frames: int = DEFAULT_FIRST_PASS) -> ImportOptions:
        """Options from command-line strings (bare numbers: µm for the pixel size, m, eV)."""
        from .source import parse_label_map

        raw = {"data": data, "frames": frames, "mask": list(mask), "mask_value": mask_value, "gain": gain,
               "geometry": geometry, "pixel_size": pixel_size, "distance": distance, "energy": energy,
               "centre": centre, "bin": bin, "labels": labels, "label_map": label_map, "compression": compression,
               "overwrite": overwrite, "first_pass_frames": first_pass_frames}
        return cls(source=str(source), output=str(output), data_path=data, frames=parse_frames(frames),
                   masks=tuple(str(m) for m in mask), mask_value=mask_value, gain=parse_gain(gain),
                   geometry=geometry, pixel_size_m=parse_positive(pixel_size, "length", "um", "--pixel-size"),
                   distance_m=parse_positive(distance, "length", "m", "--distance"),
                   photon_energy_ev=parse_positive(energy, "photon_energy", "eV", "--energy"),
                   centre=parse_centre(centre), bin=bin, labels=labels, label_map=parse_label_map(label_map),
                   compression=compression, overwrite=overwrite, first_pass_frames=first_pass_frames, raw=raw)

    def as_dict(self) -> dict:
        """Every option, JSON-ready (the frame slice as [start, stop, step])."""
        d = asdict(self)
        d["frames"] = [self.frames.start, self.frames.stop, self.frames.step]
        d["masks"] = list(self.masks)
        d["centre"] = list(self.centre) if isinstance(self.centre, tuple) else self.centre
        return d
