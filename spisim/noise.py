"""Background and detector effects: from expected photons to the frames a detector records.

Each effect is configured by :class:`NoiseParameters` (which a manifest's ``noise`` section builds) and
each can be switched off; with all off, the frame is the expected photon count (float). The order follows the physics:

1. shot-to-shot pulse-energy jitter scales the fluence (:func:`pulse_scale`; applied to sample and
   background alike by the shot loop);
2. background photons (gas, jet or water, or a template measured on a run; :func:`background_photons`),
   times an optional per-shot factor of their own (``noise.background.jitter``), are added to the sample's;
3. no photons reach pixels behind the beamstop;
4. Poisson photon statistics;
5. dead pixels lose their signal;
6. gain (ADU per photon), then pedestal, Gaussian readout noise and a common-mode offset per panel or
   block (all in ADU, or in photons when no gain is set);
7. hot pixels read ``hot_level`` on top;
8. saturation clips, integer output is rounded;
9. missing panels read 0.

Effects fixed for a whole dataset (dead, hot and shadowed pixels, missing panels, the background
pattern) live in :class:`DetectorEffects`, made once by :func:`prepare_effects`. The per-shot part,
:func:`apply_detector`, works on numpy or CuPy arrays alike (it follows its input, with a numpy
``Generator`` or a CuPy ``Generator`` to match).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backend import get_array_module

BACKGROUND_KINDS: tuple[str, ...] = ("gas", "water", "flat", "template")
"""Background patterns :func:`background_photons` makes."""


@dataclass(frozen=True)
class BackgroundParameters:
    """Smooth background scattering (gas, the jet, water around the sample) at the nominal pulse energy.

    Attributes:
        kind: one of :data:`BACKGROUND_KINDS` (see :func:`background_profile`; ``template``: a given pattern).
        photons: expected background photons per shot on the valid pixels (0: off); ``template`` with None:
            the template's own total.
        q0: width of the gas profile, Å⁻¹.
        jitter: relative rms of a per-shot log-normal factor of the background alone (0: none).
    """

    kind: str = "gas"
    photons: float | None = 0.0
    q0: float = 0.05
    jitter: float = 0.0


@dataclass(frozen=True)
class NoiseParameters:
    """Background and detector effects (see the module doc), each off at its default except Poisson statistics.

    Detector values (``pedestal``, ``readout``, ``common_mode``, ``saturation``, ``hot_level``) are in ADU when
    ``gain`` is set, else in photons.

    Attributes:
        background: the background photons.
        jitter: relative rms shot-to-shot pulse-energy jitter (log-normal, mean 1).
        poisson: Poisson photon statistics.
        gain: ADU per photon; None: frames stay in photons.
        pedestal: constant offset of every pixel.
        readout: rms Gaussian readout noise per pixel.
        common_mode: rms of an offset drawn per shot for each panel (or block).
        common_mode_block: (ss, fs) pixels of one common-mode region; None: the whole panel.
        saturation: largest value a pixel can read; None: none.
        dead_pixels: fraction of pixels that read no signal (fixed for a dataset).
        hot_pixels: fraction of pixels that read ``hot_level`` on top of their signal (fixed).
        hot_level: extra reading of a hot pixel; None: ``saturation`` if set, else 100 photons.
        mask_bad_pixels: dead and hot pixels are marked in the dataset's mask.
        missing_panels: panel indices that read 0 in every shot.
        beamstop: radius (m) of a beamstop on the beam axis in the detector plane (0: none).
    """

    background: BackgroundParameters = field(default_factory=BackgroundParameters)
    jitter: float = 0.0
    poisson: bool = True
    gain: float | None = None
    pedestal: float = 0.0
    readout: float = 0.0
    common_mode: float = 0.0
    common_mode_block: tuple[int, int] | None = None
    saturation: float | None = None
    dead_pixels: float = 0.0
    hot_pixels: float = 0.0
    hot_level: float | None = None
    mask_bad_pixels: bool = True
    missing_panels: tuple[int, ...] = ()
    beamstop: float = 0.0


def pulse_scale(rng: np.random.Generator, jitter: float) -> float:
    """Pulse energy of one shot relative to nominal: log-normal with mean 1 and relative rms ``jitter``.

    ln s ~ N(−σ²/2, σ²) with σ² = ln(1 + jitter²), so E[s] = 1 and std(s) = jitter; s > 0 and half
    the pulses or more fall below nominal. ``jitter = 0`` gives exactly 1 (no random draw).
    """
    if jitter <= 0:
        return 1.0
    sigma2 = math.log1p(jitter * jitter)
    return float(rng.lognormal(-0.5 * sigma2, math.sqrt(sigma2)))


def background_profile(kind: str, q_abs: np.ndarray, q0: float = 0.05) -> np.ndarray:
    """Relative background scattering per steradian (max about 1) at |q| (Å⁻¹), any shape.

    ``gas``: 1 / (1 + (q/q0)²), a smooth decay over q0 (Å⁻¹); ``water``: a broad ring at 2.0 Å⁻¹
    (Gaussian, σ 0.4 Å⁻¹) on a floor of 0.2, the shape of liquid-water scattering; ``flat``: 1.
    """
    q = np.asarray(q_abs, dtype=np.float64)
    if kind == "gas":
        return 1.0 / (1.0 + (q / q0) ** 2)
    if kind == "water":
        return 0.2 + 0.8 * np.exp(-0.5 * ((q - 2.0) / 0.4) ** 2)
    if kind == "flat":
        return np.ones_like(q)
    raise ValueError(f"unknown background kind {kind!r}")


def check_background_template(values: np.ndarray, shape: tuple[int, int, int], valid: np.ndarray,
                        where: str = "noise.background.template") -> np.ndarray:
    """A background template checked and shaped: (M, SS, FS) float64 expected photons per pixel.

    Args:
        values: the file's array, the detector's data shape ``shape`` or, for a 1-module detector, 2-D.
        shape: (M, SS, FS) of the detector's data (after ``detector.bin``).
        valid: (M, SS, FS) bool, pixels that count; masked pixels may hold NaN (they are set to 0).
        where: key path for messages.

    Raises:
        ConfigError: another shape, or a negative or non-finite value on a valid pixel.
    """
    from .errors import ConfigError

    t = np.asarray(values)
    if t.ndim == 2 and shape[0] == 1:
        t = t[None]
    if t.shape != tuple(shape):
        raise ConfigError(f"{where}: array of shape {np.shape(values)} does not fit the detector's data shape "
                          f"{tuple(shape)} (after detector.bin)")
    if not (np.issubdtype(t.dtype, np.number) and not np.iscomplexobj(t)):
        raise ConfigError(f"{where}: expected real numbers (photons per pixel), got {t.dtype}")
    t = t.astype(np.float64)
    bad = ~np.isfinite(t) & valid
    if bad.any():
        raise ConfigError(f"{where}: {int(bad.sum())} unmasked pixels are not finite numbers")
    t = np.where(np.isfinite(t), t, 0.0)
    if (t[valid] < 0).any():
        raise ConfigError(f"{where}: {int((t[valid] < 0).sum())} unmasked pixels are negative (expected photons "
                          f"must be >= 0: clip the template)")
    return t


def background_photons(
    spec: BackgroundParameters, q_abs: np.ndarray, solid_angle: np.ndarray, polarization: np.ndarray, valid: np.ndarray,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """Expected background photons per pixel (M, SS, FS) float64 at the nominal pulse energy.

    The pattern is profile(|q|) · P · ΔΩ (kind ``template``: the template itself), scaled so that its
    sum over ``valid`` pixels is ``spec.photons``; pixels outside ``valid`` get their share too (the total
    counts only valid ones). A template with ``photons`` None is taken as it is.

    Args:
        spec: kind, total photons and q0.
        q_abs: |q| per pixel (Å⁻¹), (M, SS, FS).
        solid_angle: ΔΩ per pixel (sr), (M, SS, FS).
        polarization: P per pixel, (M, SS, FS).
        valid: True where a pixel counts towards the total, (M, SS, FS).
        template: kind ``template``: expected photons per pixel (M, SS, FS), see :func:`check_background_template`.
    """
    if spec.kind == "template":
        if template is None:
            raise ValueError("a template background needs the template array")
        if spec.photons is None:
            return np.asarray(template, dtype=np.float64)
        if spec.photons <= 0:
            return np.zeros(np.shape(q_abs))
        pattern = np.asarray(template, dtype=np.float64)
        total = float(pattern[valid].sum())
        if total <= 0:
            from .errors import ConfigError

            raise ConfigError("noise.background.template: no photons on the unmasked pixels, so it cannot be "
                              f"scaled to noise.background.photons = {spec.photons:g}")
        return pattern * (spec.photons / total)
    if not spec.photons or spec.photons <= 0:
        return np.zeros(np.shape(q_abs))
    pattern = background_profile(spec.kind, q_abs, spec.q0) * polarization * solid_angle
    total = float(pattern[valid].sum())
    if total <= 0:
        return np.zeros(np.shape(q_abs))
    return pattern * (spec.photons / total)


@dataclass(frozen=True)
class DetectorEffects:
    """What stays fixed over a dataset. Arrays are (M, SS, FS) unless said otherwise.

    Attributes:
        dead: pixels that record no signal.
        hot: pixels that read ``hot_level`` on top of their signal.
        shadow: pixels behind the beamstop (no photons).
        missing: (M,) panels that read 0.
        background: expected background photons at the nominal pulse energy (float64).
        mask: the dataset's mask (True = bad): the detector's own, the shadow, missing panels, and
            dead and hot pixels when ``mask_bad_pixels``.
        hot_level: extra reading of a hot pixel (output units).
    """

    dead: np.ndarray
    hot: np.ndarray
    shadow: np.ndarray
    missing: np.ndarray
    background: np.ndarray
    mask: np.ndarray
    hot_level: float


def prepare_effects(
    spec: NoiseParameters,
    *,
    detector_mask: np.ndarray,
    shadow: np.ndarray,
    q_abs: np.ndarray,
    solid_angle: np.ndarray,
    polarization: np.ndarray,
    rng: np.random.Generator,
    background_template: np.ndarray | None = None,
) -> DetectorEffects:
    """The fixed effects of a dataset.

    Args:
        spec: the noise settings.
        detector_mask: (M, SS, FS) bool, True = bad, as the detector defines it.
        shadow: (M, SS, FS) bool, pixels behind the beamstop (all False without one).
        q_abs, solid_angle, polarization: per pixel, for the background (Å⁻¹, sr, 1).
        rng: the dataset's fixed-pattern stream (dead and hot pixels).
        background_template: the array of ``noise.background.template`` as read (kind ``template``):
            checked against the detector shape by :func:`check_background_template`.
    """
    from .errors import ConfigError

    shape = np.shape(detector_mask)
    n_panels = shape[0]
    bad = [p for p in spec.missing_panels if p >= n_panels]
    if bad:
        raise ConfigError(f"noise.missing_panels: panel {bad[0]} does not exist (the detector has {n_panels})")
    missing = np.zeros(n_panels, bool)
    missing[list(spec.missing_panels)] = True
    u = rng.random(shape)
    dead = u < spec.dead_pixels
    hot = (u >= spec.dead_pixels) & (u < spec.dead_pixels + spec.hot_pixels)
    shadow = np.asarray(shadow, bool)
    mask = np.asarray(detector_mask, bool) | shadow | missing[:, None, None]
    if spec.mask_bad_pixels:
        mask = mask | dead | hot
    valid = ~mask
    template = None
    if spec.background.kind == "template":
        if background_template is None:
            raise ValueError("noise.background.kind template needs the template array")
        template = check_background_template(background_template, shape, valid)
    background = background_photons(spec.background, q_abs, solid_angle, polarization, valid, template)
    if spec.hot_level is not None:
        hot_level = spec.hot_level
    elif spec.saturation is not None:
        hot_level = spec.saturation
    else:
        hot_level = 100.0 * (spec.gain or 1.0)
    return DetectorEffects(dead=dead, hot=hot, shadow=shadow, missing=missing, background=background, mask=mask,
                           hot_level=float(hot_level))


def output_dtype(spec: NoiseParameters, dtype: str = "auto") -> str:
    """``float32`` or ``int32``: ``auto`` is int32 when a gain is set (ADU), else float32."""
    if dtype != "auto":
        return dtype
    return "int32" if spec.gain is not None else "float32"


def output_units(spec: NoiseParameters) -> str:
    """``adu`` when a gain is set, else ``photons``."""
    return "adu" if spec.gain is not None else "photons"


def _block_offsets(xp: Any, rng: Any, shape: tuple[int, int, int], block: tuple[int, int] | None) -> Any:
    """Standard-normal offsets constant over each panel (block None) or each ss×fs block, (M, SS, FS)."""
    m, ss, fs = shape
    if block is None:
        return rng.standard_normal(m)[:, None, None]
    bs, bf = block
    nb_s, nb_f = -(-ss // bs), -(-fs // bf)
    draws = rng.standard_normal((m, nb_s, nb_f))
    return xp.repeat(xp.repeat(draws, bs, axis=1), bf, axis=2)[:, :ss, :fs]


POISSON_LIMIT = 1e15
"""Expected counts above which Poisson draws are replaced by their normal limit (numpy's sampler overflows
near 1e19; the relative difference of the two laws is ~1e-8 there)."""


def _poisson(xp: Any, rng: Any, lam: Any) -> Any:
    """Poisson draws (float64) of ``lam``; the rare pixels above :data:`POISSON_LIMIT` use N(λ, λ), rounded.

    Without such pixels the draws are exactly ``rng.poisson(lam)`` (the stream is unchanged).
    """
    huge = lam > POISSON_LIMIT
    if not bool(huge.any()):
        return rng.poisson(lam).astype(xp.float64)
    out = rng.poisson(xp.where(huge, 0.0, lam)).astype(xp.float64)
    big = lam[huge]
    out[huge] = xp.rint(big + xp.sqrt(big) * rng.standard_normal(big.shape))
    return out


def apply_detector(photons: Any, spec: NoiseParameters, effects: DetectorEffects, rng: Any,
                   dtype: str = "float32") -> Any:
    """One frame as the detector records it, from expected photons (background included).

    Args:
        photons: (M, SS, FS) expected photons (float64), numpy or CuPy.
        spec: the noise settings.
        effects: the dataset's fixed effects (numpy or CuPy arrays, like ``photons``).
        rng: the shot's noise stream: ``numpy.random.Generator`` (or a CuPy ``Generator`` for CuPy input).
        dtype: ``float32`` or ``int32`` (rounded to the nearest integer).

    Returns:
        (M, SS, FS) frame of ``dtype`` in photons, or ADU when ``spec.gain`` is set.
    """
    xp = get_array_module(photons)
    x = photons
    if effects.shadow.any():
        x = xp.where(effects.shadow, 0.0, x)
    if spec.poisson:
        x = _poisson(xp, rng, xp.maximum(x, 0.0))
    if spec.dead_pixels > 0:
        x = xp.where(effects.dead, 0.0, x)
    if spec.gain is not None:
        x = x * spec.gain
    if spec.pedestal:
        x = x + spec.pedestal
    if spec.readout > 0:
        x = x + spec.readout * rng.standard_normal(x.shape)
    if spec.common_mode > 0:
        x = x + spec.common_mode * _block_offsets(xp, rng, x.shape, spec.common_mode_block)
    if spec.hot_pixels > 0:
        x = xp.where(effects.hot, x + effects.hot_level, x)
    if spec.saturation is not None:
        x = xp.minimum(x, spec.saturation)
    if dtype == "int32":
        info = np.iinfo(np.int32)
        x = xp.clip(xp.rint(x), info.min, info.max)
    out = x.astype(dtype)
    if effects.missing.any():
        out[effects.missing] = 0
    return out
