"""Detector and background effects against their definitions (statistics with fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spisim.manifest import BackgroundSpec, NoiseSpec
from spisim.noise import (
    apply_detector,
    background_photons,
    background_profile,
    output_dtype,
    prepare_effects,
    pulse_scale,
)

SHAPE = (3, 40, 50)


def _effects(spec: NoiseSpec, seed: int = 0, shadow=None, detector_mask=None, q_abs=None):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.01, 0.3, SHAPE) if q_abs is None else q_abs
    return prepare_effects(
        spec,
        detector_mask=np.zeros(SHAPE, bool) if detector_mask is None else detector_mask,
        shadow=np.zeros(SHAPE, bool) if shadow is None else shadow,
        q_abs=q, solid_angle=np.full(SHAPE, 1e-7), polarization=np.full(SHAPE, 0.9),
        rng=np.random.default_rng(seed + 1),
    )


OFF = NoiseSpec(poisson=False, background=BackgroundSpec(photons=0.0))


def test_everything_off_returns_the_expected_photons():
    lam = np.random.default_rng(0).uniform(0, 50, SHAPE)
    out = apply_detector(lam, OFF, _effects(OFF), np.random.default_rng(1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, lam.astype(np.float32))
    assert OFF.is_off and output_dtype(OFF) == "float32"


def test_poisson_mean_and_variance():
    spec = NoiseSpec(background=BackgroundSpec(photons=0.0))
    lam = np.full((20, 100, 100), 7.3)
    out = apply_detector(lam, spec, _effects(spec), np.random.default_rng(2))
    n = out.size
    assert np.all(out == np.round(out)) and out.min() >= 0
    assert out.mean() == pytest.approx(7.3, abs=5 * math.sqrt(7.3 / n))
    # variance of a sample variance ≈ (μ4 − σ⁴)/n with μ4 = λ + 3λ² for Poisson
    assert out.var() == pytest.approx(7.3, abs=5 * math.sqrt((7.3 + 2 * 7.3**2) / n))
    small = apply_detector(np.full((200_000,), 0.05)[None, None], spec, _effects_flat(spec, 200_000),
                           np.random.default_rng(3))
    assert (small > 0).mean() == pytest.approx(1 - math.exp(-0.05), abs=5 * math.sqrt(0.05 / 200_000))


def _effects_flat(spec, n):
    shape = (1, 1, n)
    return prepare_effects(spec, detector_mask=np.zeros(shape, bool), shadow=np.zeros(shape, bool),
                           q_abs=np.full(shape, 0.1), solid_angle=np.full(shape, 1e-7),
                           polarization=np.ones(shape), rng=np.random.default_rng(0))


def test_gain_pedestal_readout():
    spec = NoiseSpec(poisson=False, gain=2.5, pedestal=100.0, readout=3.0, background=BackgroundSpec(photons=0.0))
    lam = np.random.default_rng(4).uniform(0, 20, (40, 60, 70))
    eff = prepare_effects(spec, detector_mask=np.zeros(lam.shape, bool), shadow=np.zeros(lam.shape, bool),
                          q_abs=np.full(lam.shape, 0.1), solid_angle=np.full(lam.shape, 1e-7),
                          polarization=np.ones(lam.shape), rng=np.random.default_rng(0))
    out = apply_detector(lam, spec, eff, np.random.default_rng(5), dtype="float32")
    resid = out - (2.5 * lam + 100.0)
    assert abs(resid.mean()) < 5 * 3.0 / math.sqrt(resid.size)
    assert resid.std() == pytest.approx(3.0, rel=0.02)
    ints = apply_detector(lam, spec, eff, np.random.default_rng(5), dtype="int32")
    exact = apply_detector(lam, spec, eff, np.random.default_rng(5), dtype="float64")
    assert ints.dtype == np.int32
    np.testing.assert_array_equal(ints, np.rint(exact).astype(np.int32))  # ADC: nearest integer
    assert np.abs(ints - (2.5 * lam + 100.0)).max() < 3.0 * 6 + 0.5
    assert output_dtype(spec) == "int32"


def test_poisson_then_gain_scales_the_variance():
    spec = NoiseSpec(gain=4.0, background=BackgroundSpec(photons=0.0))
    lam = np.full((30, 100, 100), 3.0)
    out = apply_detector(lam, spec, _effects_like(spec, lam.shape), np.random.default_rng(6))
    assert out.mean() == pytest.approx(12.0, rel=0.01)
    assert out.var() == pytest.approx(16 * 3.0, rel=0.03)
    assert np.all(out % 4 == 0)


def _effects_like(spec, shape, seed=0, detector_mask=None):
    return prepare_effects(spec, detector_mask=np.zeros(shape, bool) if detector_mask is None else detector_mask,
                           shadow=np.zeros(shape, bool), q_abs=np.full(shape, 0.1),
                           solid_angle=np.full(shape, 1e-7), polarization=np.ones(shape),
                           rng=np.random.default_rng(seed))


def test_saturation_clips():
    spec = NoiseSpec(poisson=False, saturation=10.0, background=BackgroundSpec(photons=0.0))
    lam = np.linspace(0, 30, np.prod(SHAPE)).reshape(SHAPE)
    out = apply_detector(lam, spec, _effects(spec), np.random.default_rng(0))
    np.testing.assert_allclose(out, np.minimum(lam, 10.0).astype(np.float32))
    assert (out == 10.0).sum() == (lam >= 10).sum()


@pytest.mark.parametrize("block", [None, (8, 25)])
def test_common_mode_is_constant_per_region_and_subtracts(block):
    spec = NoiseSpec(poisson=False, common_mode=5.0, common_mode_block=block, background=BackgroundSpec(photons=0.0))
    lam = np.random.default_rng(7).uniform(0, 3, SHAPE)
    out = apply_detector(lam, spec, _effects(spec), np.random.default_rng(8)).astype(np.float64)
    offset = out - lam
    bs, bf = block or SHAPE[1:]
    regions = offset.reshape(SHAPE[0], SHAPE[1] // bs, bs, SHAPE[2] // bf, bf)
    spread = regions.max(axis=(2, 4)) - regions.min(axis=(2, 4))
    assert spread.max() < 1e-4, "the offset must be one value per region"
    values = regions[:, :, 0, :, 0].ravel()
    assert np.unique(np.round(values, 5)).size == values.size, "regions draw independent offsets"
    # the usual correction: subtract each region's median of (frame − known signal) recovers the signal
    corrected = (regions - np.median(regions, axis=(2, 4), keepdims=True)).reshape(SHAPE) + lam
    np.testing.assert_allclose(corrected, lam, atol=1e-4)
    if block is None:  # many shots: the offsets have rms common_mode
        draws = [apply_detector(np.zeros(SHAPE), spec, _effects(spec), np.random.default_rng(s))[:, 0, 0]
                 for s in range(300)]
        assert np.std(draws) == pytest.approx(5.0, rel=0.1)


def test_dead_hot_pixels_and_mask():
    spec = NoiseSpec(poisson=False, dead_pixels=0.05, hot_pixels=0.02, hot_level=500.0,
                     background=BackgroundSpec(photons=0.0))
    lam = np.full(SHAPE, 4.0)
    eff = _effects(spec, seed=3)
    out = apply_detector(lam, spec, eff, np.random.default_rng(0))
    n = np.prod(SHAPE)
    assert eff.dead.sum() / n == pytest.approx(0.05, abs=5 * math.sqrt(0.05 / n))
    assert eff.hot.sum() / n == pytest.approx(0.02, abs=5 * math.sqrt(0.02 / n))
    assert not (eff.dead & eff.hot).any()
    assert np.all(out[eff.dead] == 0) and np.all(out[eff.hot] == 504.0)
    assert np.all(out[~eff.dead & ~eff.hot] == 4.0)
    assert np.array_equal(eff.mask, eff.dead | eff.hot)
    kept = NoiseSpec(poisson=False, dead_pixels=0.05, mask_bad_pixels=False, background=BackgroundSpec(photons=0.0))
    assert not _effects(kept, seed=3).mask.any()
    # fixed for the dataset: the same stream gives the same defects
    assert np.array_equal(_effects(spec, seed=3).dead, eff.dead)


def test_hot_level_defaults():
    assert _effects(NoiseSpec(hot_pixels=0.1, saturation=900.0)).hot_level == 900.0
    assert _effects(NoiseSpec(hot_pixels=0.1, gain=3.0)).hot_level == 300.0
    assert _effects(NoiseSpec(hot_pixels=0.1)).hot_level == 100.0


def test_missing_panels_and_beamstop():
    shadow = np.zeros(SHAPE, bool)
    shadow[1, 18:22, 23:27] = True
    spec = NoiseSpec(poisson=True, missing_panels=(2,), background=BackgroundSpec(photons=0.0))
    eff = _effects(spec, shadow=shadow)
    lam = np.full(SHAPE, 50.0)
    out = apply_detector(lam, spec, eff, np.random.default_rng(0))
    assert np.all(out[2] == 0) and np.all(out[shadow] == 0)
    assert out[0].min() > 0
    assert eff.mask[2].all() and eff.mask[shadow].all() and not eff.mask[0].any()
    from spisim.errors import ConfigError

    with pytest.raises(ConfigError, match="panel 5 does not exist"):
        _effects(NoiseSpec(missing_panels=(5,)))


def test_pulse_jitter_distribution():
    rng = np.random.default_rng(9)
    s = np.array([pulse_scale(rng, 0.3) for _ in range(40_000)])
    assert s.min() > 0
    assert s.mean() == pytest.approx(1.0, abs=5 * 0.3 / math.sqrt(s.size))
    assert s.std() == pytest.approx(0.3, rel=0.03)
    assert (s < 1).mean() > 0.5  # log-normal with mean 1: the median is below nominal
    assert (s < 0.7).mean() > 0.1  # pulses well below nominal occur
    sigma = math.sqrt(math.log1p(0.09))
    assert np.log(s).std() == pytest.approx(sigma, rel=0.03)
    assert pulse_scale(rng, 0.0) == 1.0


def test_background_profiles_and_total():
    q = np.linspace(0.0, 3.0, 301)
    gas = background_profile("gas", q, 0.05)
    assert gas[0] == 1.0 and np.all(np.diff(gas) < 0)
    assert background_profile("gas", np.array([0.05]), 0.05)[0] == pytest.approx(0.5)
    water = background_profile("water", q)
    assert q[np.argmax(water)] == pytest.approx(2.0, abs=0.01) and water.min() >= 0.2
    rng = np.random.default_rng(10)
    q_abs = rng.uniform(0, 0.2, SHAPE)
    omega = rng.uniform(0.5e-7, 1.5e-7, SHAPE)
    pol = rng.uniform(0.5, 1.0, SHAPE)
    valid = rng.random(SHAPE) > 0.2
    bg = background_photons(BackgroundSpec(kind="gas", photons=250.0, q0=0.05), q_abs, omega, pol, valid)
    assert bg[valid].sum() == pytest.approx(250.0)
    expected = 1 / (1 + (q_abs / 0.05) ** 2) * omega * pol
    np.testing.assert_allclose(bg / expected, (bg / expected).flat[0], rtol=1e-12)  # proportional everywhere
    flat = background_photons(BackgroundSpec(kind="flat", photons=10.0), q_abs, omega, pol, valid)
    np.testing.assert_allclose(flat, 10.0 * omega * pol / (omega * pol)[valid].sum())
    assert not background_photons(BackgroundSpec(photons=0.0), q_abs, omega, pol, valid).any()


def test_effects_mask_keeps_detector_mask_and_background_counts_valid_pixels():
    det_mask = np.zeros(SHAPE, bool)
    det_mask[0, :5] = True
    spec = NoiseSpec(background=BackgroundSpec(kind="flat", photons=100.0))
    eff = _effects(spec, detector_mask=det_mask)
    assert eff.mask[0, :5].all()
    assert eff.background[~eff.mask].sum() == pytest.approx(100.0)


def test_poisson_of_enormous_expectations_stays_finite_and_unbiased():
    """numpy's Poisson sampler overflows near 1e19: such pixels (a µm particle in the direct beam) take the
    normal limit, and frames without them draw exactly the same stream as before."""
    spec = NoiseSpec(poisson=True)
    eff = _effects(spec)
    lam = np.full(SHAPE, 3.0)
    lam[0, 0, :5] = [1e14, 1e16, 1e18, 1e20, 1e22]
    frame = apply_detector(lam, spec, eff, np.random.default_rng(4), "float32")
    big = frame[0, 0, :5].astype(float)
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, lam[0, 0, :5], rtol=1e-6)
    small = np.full(SHAPE, 3.0)
    ours = apply_detector(small, spec, eff, np.random.default_rng(4), "float32")
    np.testing.assert_array_equal(ours, np.random.default_rng(4).poisson(small).astype(np.float32))
    assert abs(frame[1:].mean() - 3.0) < 0.05  # the ordinary pixels are still Poisson(3)


def test_background_template_is_checked_shaped_and_scaled():
    from spisim.errors import ConfigError
    from spisim.noise import check_background_template

    shape = (1, 4, 5)
    valid = np.ones(shape, bool)
    valid[0, 0, 0] = False
    t = np.arange(20.0).reshape(4, 5)
    t[0, 0] = np.nan  # masked: allowed, read as 0
    out = check_background_template(t, shape, valid)
    assert out.shape == shape and out[0, 0, 0] == 0 and out[0, 3, 4] == 19
    with pytest.raises(ConfigError, match="1 unmasked pixels are not finite"):
        check_background_template(t, shape, np.ones(shape, bool))
    with pytest.raises(ConfigError, match=r"array of shape \(4, 5\) does not fit .*\(2, 4, 5\)"):
        check_background_template(t, (2, 4, 5), np.ones((2, 4, 5), bool))
    spec = BackgroundSpec(kind="template", photons=None)
    q = np.zeros(shape)
    np.testing.assert_array_equal(background_photons(spec, q, q, q, valid, out), out)
    scaled = background_photons(BackgroundSpec(kind="template", photons=57.0), q, q, q, valid, out)
    assert scaled[valid].sum() == pytest.approx(57.0) and scaled[0, 2, 2] / scaled[0, 1, 1] == pytest.approx(12 / 6)
    assert not background_photons(BackgroundSpec(kind="template", photons=0.0), q, q, q, valid, out).any()
    with pytest.raises(ConfigError, match="no photons on the unmasked pixels"):
        background_photons(BackgroundSpec(kind="template", photons=5.0), q, q, q, valid, np.zeros(shape))
