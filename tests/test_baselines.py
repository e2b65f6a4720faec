"""Baselines: supervised CNNs learn a separable toy problem, classical features match hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinet.baselines import (
    ClassicalClassifier,
    CNNClassifier,
    FrameFeatures,
    ResidualClassifier,
    ShiCNN,
    SupervisedConfig,
    TensorShots,
    radial_edges,
    scattering_angles,
)
from spisim.errors import ConfigError


def _toy_images(n_per_class: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of standardised images: a central blob, a ring, a horizontal stripe pattern; random
    centre offsets, amplitudes and noise."""
    rng = np.random.default_rng(seed)
    ax = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    xs, ys = [], []
    for c in range(3):
        for _ in range(n_per_class):
            dx, dy = rng.uniform(-2, 2, 2)
            r = np.hypot(xx - dx, yy - dy)
            if c == 0:
                img = np.exp(-(r**2) / (2 * rng.uniform(2, 4) ** 2))
            elif c == 1:
                img = np.exp(-((r - rng.uniform(7, 10)) ** 2) / 4.0)
            else:
                img = 0.5 + 0.5 * np.cos(2 * np.pi * (yy - dy) / rng.uniform(5, 7))
            img = img * rng.uniform(0.5, 2.0) + rng.normal(0, 0.3, img.shape)
            img = (img - img.mean()) / img.std()
            xs.append(img.astype(np.float32))
            ys.append(c)
    perm = rng.permutation(len(xs))
    return torch.from_numpy(np.stack(xs)[perm, None]), torch.tensor(ys)[perm]


def test_networks_give_one_logit_per_class():
    x = torch.randn(5, 1, 40, 40)
    cnn = ShiCNN(4, 40, channels=(4, 8, 8), hidden=16)
    res = ResidualClassifier(4, width=4, blocks=(1, 1))
    assert cnn(x).shape == (5, 4)
    assert res(x).shape == (5, 4)
    assert res(torch.randn(2, 1, 64, 64)).shape == (2, 4)  # not tied to the input size
    with pytest.raises(ValueError, match="too small"):
        ShiCNN(2, 8)


def test_supervised_config_validation():
    cfg = SupervisedConfig.from_dict({"epochs": 3, "lr": 0.01, "channels": [4, 8, 8], "batches_per_epoch": None})
    assert (cfg.epochs, cfg.lr, cfg.channels) == (3, 0.01, [4, 8, 8])
    with pytest.raises(ConfigError, match=r"models\[1\].config.epoch: unknown key \(did you mean epochs\?\)"):
        SupervisedConfig.from_dict({"epoch": 3}, "models[1].config")
    with pytest.raises(ConfigError, match="config.epochs: expected a whole number"):
        SupervisedConfig.from_dict({"epochs": 2.5})
    with pytest.raises(ConfigError, match="dropout"):
        SupervisedConfig.from_dict({"dropout": 1.0})
    with pytest.raises(ConfigError, match="channels: expected a list of 3 whole numbers"):
        SupervisedConfig.from_dict({"channels": [4, 8]})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cnn", "resnet"])
def test_cnn_baselines_learn_and_round_trip(kind):
    size = 32
    x_train, y_train = _toy_images(40, size, seed=1)
    x_val, y_val = _toy_images(10, size, seed=2)
    x_test, y_test = _toy_images(30, size, seed=3)
    cfg = SupervisedConfig.from_dict({"epochs": 4, "m_per_class": 8, "batches_per_epoch": 8, "channels": [8, 16, 16],
                                      "hidden": 32, "width": 8, "blocks": [1, 1], "patience": 0})
    clf = CNNClassifier(kind, ["blob", "ring", "stripes"], size, cfg)
    clf.fit(TensorShots(x_train, y_train), y_train.numpy(), seed=0, val=(x_val, y_val))
    assert len(clf.history) == 4
    assert all(np.isfinite(h["train_loss"]) for h in clf.history)
    assert clf.history[-1]["train_loss"] < clf.history[0]["train_loss"]
    proba = clf.predict_proba(x_test)
    assert proba.shape == (90, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    acc = float(np.mean(proba.argmax(axis=1) == y_test.numpy()))
    assert acc > 0.8, f"{kind} reached only {acc:.2f} on a separable toy problem (chance 0.33)"
    # the best validation epoch's weights are kept, and the state round-trips exactly
    best = max(h["val_accuracy"] for h in clf.history)
    val_acc = float(np.mean(clf.predict_proba(x_val).argmax(1) == y_val.numpy()))
    assert val_acc == pytest.approx(best)
    again = CNNClassifier.from_state(clf.state())
    np.testing.assert_array_equal(again.predict_proba(x_test), proba)


def test_training_is_reproducible_with_a_seed():
    x, y = _toy_images(12, 32, seed=4)
    cfg = SupervisedConfig.from_dict({"epochs": 1, "batches_per_epoch": 3, "channels": [4, 4, 4], "hidden": 8})
    a = CNNClassifier("cnn", ["a", "b", "c"], 32, cfg).fit(TensorShots(x, y), y.numpy(), seed=5)
    b = CNNClassifier("cnn", ["a", "b", "c"], 32, cfg).fit(TensorShots(x, y), y.numpy(), seed=5)
    c = CNNClassifier("cnn", ["a", "b", "c"], 32, cfg).fit(TensorShots(x, y), y.numpy(), seed=6)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    assert not np.array_equal(a.predict_proba(x), c.predict_proba(x))


def _small_detector():
    """4×4 flat panel, 1 mm pixels at z = 0.1 m, centred on the beam; one corner pixel masked."""
    c = (np.arange(4) - 1.5) * 1e-3
    yy, xx = np.meshgrid(c, c, indexing="ij")
    pos = np.stack([xx, yy, np.full_like(xx, 0.1)], axis=-1)[None]
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 0, 0] = True
    return pos, mask


def test_scattering_angles():
    pos, _ = _small_detector()
    ang = scattering_angles((1, 4, 4), pos)
    expected = np.arctan(np.hypot(pos[..., 0], pos[..., 1]) / 0.1)
    np.testing.assert_allclose(ang, expected, rtol=1e-12)
    flat = scattering_angles((2, 3, 4), None)
    assert flat.shape == (2, 3, 4) and flat.min() > 0  # stacked panels: distance from the middle, no pixel at 0


def test_frame_features_by_hand():
    pos, mask = _small_detector()
    edges = radial_edges(scattering_angles((1, 4, 4), pos), ~mask, 2)
    ext = FrameFeatures((1, 4, 4), pos, mask, edges, thresholds=(0.5, 2.5), photon_scale=2.0)
    rng = np.random.default_rng(3)
    frames = (rng.poisson(3.0, size=(3, 1, 4, 4)) * 2.0).astype(np.float32)  # "ADU", 2 per photon
    weight = np.ones_like(frames)
    weight[1, 0, 3, :] = 0.0  # shot 1 loses its last row
    f = ext(frames, weight)
    assert f.shape == (3, len(ext.names))
    ang = scattering_angles((1, 4, 4), pos)[0]
    for s in range(3):
        photons = frames[s, 0] / 2.0
        good = ~mask[0] & (weight[s, 0] > 0)
        vals = photons[good]
        row = dict(zip(ext.names, f[s], strict=True))
        assert row["log_photons_per_pixel"] == pytest.approx(math.log1p(vals.mean()))
        assert row["lit_fraction_ge_0.5"] == pytest.approx(np.mean(vals >= 0.5))
        assert row["lit_fraction_ge_2.5"] == pytest.approx(np.mean(vals >= 2.5))
        assert row["log_max"] == pytest.approx(math.log1p(vals.max()))
        inner = good & (ang < edges[1])
        outer = good & (ang >= edges[1])
        assert row["ring_0"] == pytest.approx(math.log1p(photons[inner].mean()))
        assert row["ring_1"] == pytest.approx(math.log1p(photons[outer].mean()))
    # without a weight the masked pixel is still left out
    g = ext(frames)
    np.testing.assert_allclose(g[0], f[0])


def test_speckle_contrast_is_near_zero_for_flat_poisson_and_large_for_speckle():
    n = 64
    c = (np.arange(n) - (n - 1) / 2) * 1e-4
    yy, xx = np.meshgrid(c, c, indexing="ij")
    pos = np.stack([xx, yy, np.full_like(xx, 0.1)], -1)[None]
    edges = radial_edges(scattering_angles((1, n, n), pos), np.ones((1, n, n), bool), 8)
    ext = FrameFeatures((1, n, n), pos, None, edges)
    rng = np.random.default_rng(0)
    flat = rng.poisson(5.0, (1, 1, n, n)).astype(np.float32)
    speckle = rng.poisson(rng.exponential(5.0, (1, 1, n, n))).astype(np.float32)  # fully developed speckle: contrast 1
    cf = ext(flat)[0][-4:]
    cs = ext(speckle)[0][-4:]
    assert np.all(np.abs(cf) < 0.05)
    assert np.all(np.abs(cs - 1.0) < 0.25)


def _toy_frames(kind: int, n: int, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    r = np.hypot(xx, yy)
    out = []
    for _ in range(n):
        if kind == 0:
            lam = np.full_like(r, 0.05)
        elif kind == 1:
            lam = 0.05 + rng.uniform(3, 8) * np.exp(-((r - rng.uniform(6, 8)) ** 2) / 3)
        else:
            lam = 0.05 + rng.uniform(20, 40) * np.exp(-(r**2) / (2 * rng.uniform(2, 3) ** 2))
        out.append(rng.poisson(lam)[None].astype(np.float32))
    return np.stack(out)


@pytest.mark.parametrize("method", ["logistic", "gbt"])
def test_classical_classifier(method):
    rng = np.random.default_rng(1)
    shape = (1, 24, 24)
    clf = ClassicalClassifier(method, n_rings=6, seed=0).set_geometry(shape, None, None)
    ext = clf.extractor(shape, None, None)
    xs = [ext(_toy_frames(k, 30, rng)) for k in range(3)]
    ys = [np.full(30, k) for k in range(3)]
    clf.fit(np.concatenate(xs), np.concatenate(ys), n_classes=4)
    test = [ext(_toy_frames(k, 20, rng)) for k in range(3)]
    proba = clf.predict_proba(np.concatenate(test))
    assert proba.shape == (60, 4)
    np.testing.assert_allclose(proba[:, 3], 0.0)  # a class absent from training is never predicted
    acc = np.mean(proba.argmax(1) == np.repeat(np.arange(3), 20))
    assert acc > 0.9
    with pytest.raises(ConfigError, match="logistic or gbt"):
        ClassicalClassifier("svm")
    with pytest.raises(ConfigError, match="at least two classes"):
        ClassicalClassifier(method).set_geometry(shape, None, None).fit(xs[0], ys[0], 3)
