"""Preprocessing (assembly, mask, bin, crop, scale, z-score), augmentations and the config tree."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinet.augment import ShotTransform
from spinet.config import AugmentConfig, Config, PreprocessConfig, load_config, save_config
from spinet.preprocess import Preprocessor, geometry_coordinates, stack_coordinates
from spinet.synthetic import toy_geometry
from spisim.errors import ConfigError, InputFileError


def reference_assembly(frame, pos, mask, pixel, size, bin):
    """Plain-Python nearest-pixel binning: mean of the unmasked raw pixels whose centre lies in each
    output pixel (flat detector normal to the beam), NaN where none."""
    sums = [[0.0] * size for _ in range(size)]
    counts = [[0] * size for _ in range(size)]
    m, ss, fs = frame.shape
    for a in range(m):
        for i in range(ss):
            for j in range(fs):
                if mask[a, i, j]:
                    continue
                x, y = pos[a, i, j, 0] / pixel, pos[a, i, j, 1] / pixel
                r = math.floor(-y / bin + size / 2 + 1e-6)
                c = math.floor(x / bin + size / 2 + 1e-6)
                if 0 <= r < size and 0 <= c < size:
                    sums[r][c] += float(frame[a, i, j])
                    counts[r][c] += 1
    return np.array(
        [[s / n if n else np.nan for s, n in zip(sr, nr, strict=True)] for sr, nr in zip(sums, counts, strict=True)]
    )


@pytest.fixture(scope="module")
def geom():
    pos, mask = toy_geometry(ss=12, fs=26, gap=2, beamstop=1.5)
    return pos, mask


@pytest.mark.parametrize("size,bin", [(20, 1), (12, 2), (8, 3)])
def test_assembly_matches_plain_python_binning(geom, size, bin):
    pos, mask = geom
    rng = np.random.default_rng(size)
    frame = rng.gamma(2.0, 3.0, size=mask.shape).astype(np.float32)
    pre = Preprocessor.from_geometry(
        PreprocessConfig(input_size=size, bin=bin, standardize=False, scale="none"), mask.shape, pos, mask
    )
    got = pre.assemble(torch.from_numpy(frame)[None])[0].numpy()
    ref = reference_assembly(frame, pos, mask, 75e-6, size, bin)
    assert np.array_equal(pre.valid.numpy(), ~np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5)
    assert np.all(got[np.isnan(ref)] == 0)
    counts = pre.count.numpy()
    assert ((counts > 0) & (counts < bin * bin)).any() or np.isnan(ref).any()  # gap and beamstop are there
    assert counts.max() == bin * bin


def test_assembly_agrees_with_spisim_detector_assembly(geom):
    """Cross-check with the independent sparse-matrix assembly of spisim.detector (bin 1, one pixel each)."""
    from spisim.detector.assemble import build_assembly_map

    pos, mask = geom
    frame = np.random.default_rng(1).poisson(5.0, size=mask.shape).astype(np.float32)
    amap = build_assembly_map(pos, np.ones(mask.shape, bool), 75e-6)
    img = amap.assemble(np.where(mask, np.nan, frame))
    br, bc = amap.beam_centre
    size = 20
    r0, c0 = int(round(br)) - size // 2, int(round(bc)) - size // 2
    ref = img[r0 : r0 + size, c0 : c0 + size]
    pre = Preprocessor.from_geometry(
        PreprocessConfig(input_size=size, standardize=False, scale="none"), mask.shape, pos, mask
    )
    got = pre.assemble(torch.from_numpy(frame)[None])[0].numpy()
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(pre.valid.numpy(), ok)
    np.testing.assert_allclose(got[ok], ref[ok])


def test_projection_puts_pixels_on_one_ray_together():
    rng = np.random.default_rng(3)
    pos = np.zeros((1, 2, 3, 3))
    pos[..., :2] = rng.uniform(-3e-3, 3e-3, size=(1, 2, 3, 2))
    pos[..., 2] = 0.1 + rng.uniform(-0.01, 0.01, size=(1, 2, 3))  # a bumpy, tilted detector
    coords, pix = geometry_coordinates(pos, pixel_size=1e-4)
    d = pos[..., 2].mean()
    farther = pos * 1.3  # the same rays, farther away
    c2, _ = geometry_coordinates(np.concatenate([pos, farther]), pixel_size=1e-4)
    d2 = np.concatenate([pos, farther])[..., 2].mean()
    np.testing.assert_allclose(c2[0] * d / d2, coords[0])
    np.testing.assert_allclose(c2[0], c2[1])
    np.testing.assert_allclose(
        coords[0, 1, 2], [-pos[0, 1, 2, 1] * d / pos[0, 1, 2, 2] / 1e-4, pos[0, 1, 2, 0] * d / pos[0, 1, 2, 2] / 1e-4]
    )


def test_stack_layout_and_errors():
    c = stack_coordinates((2, 3, 4))
    assert c[0, 0, 0].tolist() == [-2.5, -1.5] and c[1, 2, 3].tolist() == [2.5, 1.5]
    with pytest.raises(InputFileError, match="pixel_position"):
        Preprocessor.from_geometry(PreprocessConfig(assemble="geometry"), (1, 8, 8))
    with pytest.raises(InputFileError, match="no valid detector pixel"):
        Preprocessor.from_geometry(PreprocessConfig(input_size=16, centre=[500.0, 0.0]), (1, 8, 8))


@pytest.mark.parametrize("scale", ["log", "sqrt", "none"])
def test_scaling_and_zscore(geom, scale):
    pos, mask = geom
    frame = np.random.default_rng(2).poisson(3.0, size=(2, *mask.shape)).astype(np.float32)
    frame[0, 0, 0, 0] = -4.0  # negative (ADU noise) clipped at 0
    cfg = PreprocessConfig(input_size=20, scale=scale, photon_scale=2.0)
    pre = Preprocessor.from_geometry(cfg, mask.shape, pos, mask)
    out = pre(torch.from_numpy(frame))
    assert out.shape == (2, 1, 20, 20)
    raw = (
        Preprocessor.from_geometry(
            PreprocessConfig(input_size=20, scale="none", standardize=False), mask.shape, pos, mask
        )
        .assemble(torch.from_numpy(frame) / 2.0)
        .clamp(min=0)
        .numpy()
    )
    f = {"log": np.log1p, "sqrt": np.sqrt, "none": lambda v: v}[scale](raw)
    valid = pre.valid.numpy()
    for b in range(2):
        v = f[b][valid]
        expected = (v - v.mean()) / np.sqrt(v.var() + 1e-8)
        np.testing.assert_allclose(out[b, 0].numpy()[valid], expected, rtol=1e-4, atol=1e-5)
        assert np.all(out[b, 0].numpy()[~valid] == 0)
        assert abs(out[b, 0].numpy()[valid].mean()) < 1e-5


def test_state_round_trip_and_photon_scale(geom):
    pos, mask = geom
    pre = Preprocessor.from_geometry(PreprocessConfig(input_size=12, bin=2, photon_scale=5.0), mask.shape, pos, mask)
    again = Preprocessor.from_state(pre.describe(), pre.state_dict())
    x = torch.from_numpy(np.random.default_rng(0).poisson(2.0, size=(3, *mask.shape)).astype(np.float32))
    assert torch.equal(pre(x * 5.0), again(x * 5.0))
    ones = Preprocessor.from_geometry(PreprocessConfig(input_size=12, bin=2), mask.shape, pos, mask)
    assert torch.allclose(pre(x * 5.0), ones(x), atol=1e-6)
    bad = x.clone()
    bad[0, 0, 3, 3] = float("nan")
    assert torch.isfinite(pre(bad)).all()


# ------------------------------------------------------------------------------------------ augmentation


class _Fixed:
    """A stand-in generator that returns the upper bound of every uniform draw and 'no' to coin flips."""

    def uniform(self, lo, hi, size=None):
        return hi if size is None else np.full(size, hi)

    def random(self):
        return 1.0


def _transform(geom, **aug):
    pos, mask = geom
    return ShotTransform(PreprocessConfig(input_size=16), AugmentConfig(**aug), mask.shape, pos, mask)


def test_identity_and_quarter_turn(geom):
    frame = np.random.default_rng(4).poisson(4.0, size=geom[1].shape).astype(np.float32)
    t = _transform(geom, rotation=1e-9, flip=False, shift=0.0, zoom=0.0)
    plain = t(frame)
    assert torch.allclose(t(frame, np.random.default_rng(0)), plain, atol=1e-4)
    t90 = _transform(geom, rotation=90.0, flip=False, shift=0.0, zoom=0.0)
    turned = t90._augmented(frame.astype(np.float64), _Fixed())
    assert torch.allclose(turned[0], torch.rot90(plain[0], 1), atol=1e-4)


def test_flip_shift_zoom(geom):
    frame = np.random.default_rng(5).poisson(4.0, size=geom[1].shape).astype(np.float32)
    plain = _transform(geom, rotation=0.0, flip=False, shift=0.0, zoom=0.0)(frame)

    class FlipX(_Fixed):
        n = 0

        def random(self):  # first coin (x flip) yes, second (y flip) no
            self.n += 1
            return 0.0 if self.n == 1 else 1.0

    t = _transform(geom, rotation=1e-9, flip=True, shift=0.0, zoom=0.0)
    flipped = t._augmented(frame.astype(np.float64), FlipX())
    assert torch.allclose(flipped[0], torch.flip(plain[0], dims=[1]), atol=1e-4)
    # a shift of 1/16 of the input = one pixel: the image moves by one pixel
    t = _transform(geom, rotation=1e-9, flip=False, shift=1 / 16, zoom=0.0)
    shifted = t._augmented(frame.astype(np.float64), _Fixed())
    # pixels valid in both agree after moving by one row and one column
    a, b = shifted[0, :-1, :-1], plain[0, 1:, 1:]
    both = (a != 0) & (b != 0)
    assert both.sum() > 100
    # values are re-standardised over a different set of pixels: compare up to an affine map
    corr = np.corrcoef(a[both].numpy(), b[both].numpy())[0, 1]
    assert corr > 0.999
    zoomed = _transform(geom, rotation=1e-9, flip=False, shift=0.0, zoom=0.5)._augmented(
        frame.astype(np.float64), _Fixed()
    )
    assert not torch.allclose(zoomed, plain, atol=1e-2)


def test_fluence_scale_resamples_poisson(geom):
    pos, mask = geom
    expected = np.full(mask.shape, 4.0, dtype=np.float32)
    t = ShotTransform(
        PreprocessConfig(input_size=20, scale="none", standardize=False),
        AugmentConfig(rotation=0, flip=False, shift=0, zoom=0, fluence_scale=[0.25, 0.25]),
        mask.shape,
        pos,
        mask,
    )
    rng = np.random.default_rng(0)
    imgs = torch.stack([t(expected, rng) for _ in range(40)])
    valid = t.final.valid
    vals = imgs[:, 0][:, valid]
    assert vals.mean().item() == pytest.approx(1.0, rel=0.05)  # 4 photons × 0.25
    assert vals.var().item() == pytest.approx(1.0, rel=0.15)  # Poisson: variance = mean (one pixel each)


def test_missing_panel_sector_and_patches(geom):
    pos, mask = geom
    frame = np.random.default_rng(6).poisson(4.0, size=mask.shape).astype(np.float32) + 1
    base = dict(rotation=0, flip=False, shift=0, zoom=0)
    plain = ShotTransform(PreprocessConfig(input_size=20), None, mask.shape, pos, mask)(frame)
    n_valid = int((plain != 0).sum())
    t = ShotTransform(PreprocessConfig(input_size=20), AugmentConfig(**base, missing_panels=1.0), mask.shape, pos, mask)
    out = t(frame, np.random.default_rng(1))
    assert 0.3 * n_valid < int((out != 0).sum()) < 0.7 * n_valid  # one of two panels gone
    fractions = set()
    for s in range(30):
        t = ShotTransform(
            PreprocessConfig(input_size=20), AugmentConfig(**base, missing_region=1.0), mask.shape, pos, mask
        )
        out = t(frame, np.random.default_rng(s))
        fractions.add(round(1 - int((out != 0).sum()) / n_valid, 1))
    assert fractions <= {0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8} and len(fractions) >= 3
    t = ShotTransform(
        PreprocessConfig(input_size=20),
        AugmentConfig(**base, occlusion_patches=2, occlusion_size=5),
        mask.shape,
        pos,
        mask,
    )
    out = t(frame, np.random.default_rng(2))
    lost = n_valid - int((out != 0).sum())
    assert 20 <= lost <= 50


def test_augmentation_depends_only_on_seed(geom):
    frame = np.random.default_rng(7).poisson(4.0, size=geom[1].shape).astype(np.float32)
    t = _transform(geom, fluence_scale=[0.5, 2.0], occlusion_patches=1, missing_region=0.5)
    a = t(frame, np.random.default_rng(11))
    b = t(frame, np.random.default_rng(11))
    c = t(frame, np.random.default_rng(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_errors(tmp_path):
    cfg = Config.from_dict({"model": {"arch": "residual"}, "data": {"sources": [{"path": "a.h5", "weight": 2}]}})
    assert cfg.data.sources[0].weight == 2.0 and cfg.model.arch == "residual"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match=r"augment.rotaton: unknown key \(did you mean rotation\?\)"):
        Config.from_dict({"augment": {"rotaton": 3}})
    with pytest.raises(ConfigError, match="train.epochs: expected a plain number"):
        Config.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="loss.miner: 'hardest' is not one of"):
        Config.from_dict({"loss": {"miner": "hardest"}})
    with pytest.raises(ConfigError, match="exactly one of path"):
        Config.from_dict({"data": {"sources": [{"weight": 1}]}})
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg.with_overrides({"train.epoch": 3})
    assert cfg.with_overrides({"augment.rotation": 0}).augment.rotation == 0.0
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def test_every_config_key_is_documented():
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "spinet.md").read_text()
    cfg = Config()
    for section in dataclasses.fields(cfg):
        assert f"### `{section.name}`" in doc
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert f"| `{f.name}` |" in doc, f"{section.name}.{f.name} missing from docs/spinet.md"


def test_non_finite_pixels_are_masked_per_frame(geom):
    """NaN and ±inf pixels count as masked in their own frame (not as 0): the image equals that of a preprocessor
    built with those pixels masked; the other frames of the batch are untouched; a frame without any finite
    pixel has no data."""
    pos, mask = geom
    cfg = PreprocessConfig(input_size=16, bin=2)
    pre = Preprocessor.from_geometry(cfg, mask.shape, pos, mask)
    rng = np.random.default_rng(5)
    frames = rng.gamma(2.0, 3.0, size=(3, *mask.shape)).astype(np.float32)
    bad = rng.random(mask.shape) < 0.3
    frames[0][bad] = np.nan
    frames[0][0, 3, 4] = np.inf
    bad[0, 3, 4] = True
    frames[2] = np.nan
    x = torch.from_numpy(frames)
    out = pre(x)
    masked = Preprocessor.from_geometry(cfg, mask.shape, pos, mask | bad)
    ref = masked(torch.from_numpy(np.where(bad, 123.0, frames[0]).astype(np.float32))[None])
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-6)
    img, valid = pre.assemble_valid(x)
    assert torch.equal(valid[0], masked.valid) and torch.equal(valid[1], pre.valid) and not valid[2].any()
    assert torch.equal(pre(x[1:2])[0], out[1])  # the other frames are as alone
    assert pre.has_data(x).tolist() == [True, True, False] and torch.all(out[2] == 0)
    w = torch.ones_like(x)
    torch.testing.assert_close(pre.assemble_weighted(x, w)[0], img)
    assert torch.equal(pre.assemble_weighted(x, w)[1], valid)


def test_the_config_reference_in_the_docs_is_the_schema():
    """docs/spinet.md's key tables are generated from spinet/config.py's declarations (python -m spinet.config)."""
    from pathlib import Path

    from spinet.config import SECTIONS, reference_markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "spinet.md").read_text(encoding="utf-8")
    for name in SECTIONS:
        section = doc.split(f"### `{name}`\n", 1)[1].split("\n#", 1)[0]  # up to the next heading
        assert reference_markdown(name) in section, \
            f"docs/spinet.md: the {name} table is out of date: paste `python -m spinet.config`"
