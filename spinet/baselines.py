"""Baselines the Siamese classifier is measured against, trained from the same data and preprocessing.

* :class:`ShiCNN` — a plain supervised CNN with a softmax output trained with cross-entropy, in the style
  of Shi et al. 2019 (IUCrJ 6:331): three conv–BN–ReLU–maxpool blocks, a dropout fully connected layer,
  one logit per class.
* :class:`ResidualClassifier` — a residual CNN classifier in the style of Ignatenko et al. 2021 (MLST):
  the residual trunk of :class:`spinet.models.ResidualEmbedding` (3×3 basic blocks, global average
  pooling) with a linear softmax head.
* :class:`ClassicalClassifier` — a classical hit finder: per-shot features from the raw frame in photons
  (:class:`FrameFeatures`: photons per valid pixel, lit-pixel fractions at photon-count thresholds, the
  brightest pixel, a radial profile in scattering-angle rings and the speckle contrast of four ring
  groups) into a logistic regression or gradient-boosted trees (scikit-learn).
* :class:`PhotonCountRule` — the simplest single-hit finder: photons per shot (:func:`shot_photons`) and one
  threshold, or a band, fitted on a few labelled shots (a study's supports): what a user does by hand.

The CNNs are trained by :func:`train_supervised` on the class-balanced, augmented batches of
:mod:`spinet.data` (the Siamese training's sampler and transforms), with early stopping on a
validation accuracy; all three give class probabilities (n, C) through ``predict_proba``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from spisim.errors import ConfigError
from spisim.schema import build, key

from .data import ClassBalancedBatchSampler
from .models import ResidualEmbedding

CNN_KINDS = ("cnn", "resnet")
"""Supervised network baselines: ``cnn`` (:class:`ShiCNN`) and ``resnet`` (:class:`ResidualClassifier`)."""

PHOTON_RULES = ("threshold", "band")
"""Rules of :class:`PhotonCountRule`: one threshold on photons per shot, or a band (low ≤ photons ≤ high)."""

CLASSICAL_METHODS = ("logistic", "gbt")
"""Classifiers of :class:`ClassicalClassifier`: logistic regression or histogram gradient-boosted trees."""


# ------------------------------------------------------------------------------------------ networks


class ShiCNN(nn.Module):
    """Supervised CNN classifier: images (B, 1, S, S) → logits (B, C).

    Three blocks conv 3×3 – BatchNorm – ReLU – maxpool 2 with ``channels`` channels, then flatten, FC
    ``hidden`` – ReLU – dropout – FC C.

    Args:
        n_classes: C.
        input_size: S (at least 16).
        channels: channels of the three conv blocks.
        hidden: width of the hidden fully connected layer.
        dropout: dropout probability before the last layer.
    """

    def __init__(self, n_classes: int, input_size: int, channels: Sequence[int] = (16, 32, 64), hidden: int = 128,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if input_size < 16:
            raise ValueError(f"input size {input_size} is too small for the CNN baseline (needs at least 16)")
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) → (B, C) logits."""
        return self.head(self.features(x))


class ResidualClassifier(nn.Module):
    """Residual CNN classifier: the trunk of :class:`spinet.models.ResidualEmbedding` (stem conv 5×5 stride 2,
    stages of 3×3 basic blocks, global average pooling) and a linear layer to C logits.

    Args:
        n_classes: C.
        width: channels of the first stage (doubled at each later stage).
        blocks: basic blocks per stage.
    """

    def __init__(self, n_classes: int, width: int = 16, blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        trunk = ResidualEmbedding(embedding_dim=1, width=width, blocks=tuple(blocks))
        self.features = trunk.features
        self.head = nn.Linear(trunk.head.in_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) → (B, C) logits."""
        return self.head(self.features(x).mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------ training


@dataclass
class SupervisedConfig:
    """Training settings of a supervised CNN baseline (keys of a study's ``models[].config``), declared and
    validated with :mod:`spisim.schema`."""

    epochs: int = key(20, kind="int", minimum=1, doc="maximum epochs")
    lr: float = key(1e-3, kind="float", minimum=0.0, exclusive=True, doc="Adam learning rate")
    weight_decay: float = key(1e-4, kind="float", minimum=0.0, doc="Adam weight decay")
    m_per_class: int = key(8, kind="int", minimum=1, doc="shots of each class per batch (class-balanced batches)")
    batches_per_epoch: int | None = key(None, kind="int", nullable=True, minimum=1,
                                        doc="null: one pass over the training shots' worth, at least `min_batches`")
    min_batches: int = key(10, kind="int", minimum=1, doc="fewest batches per epoch (few-shot training sets are tiny)")
    patience: int = key(5, kind="int", minimum=0,
                        doc="stop after this many epochs without a better validation accuracy; 0: never")
    label_smoothing: float = key(0.0, kind="float", minimum=0.0, doc="cross-entropy label smoothing (< 1)")
    channels: list[int] = key([16, 32, 64], kind="list", item="int", length=3, minimum=1,
                              doc="`cnn`: channels of the three conv blocks")
    hidden: int = key(128, kind="int", minimum=1, doc="`cnn`: width of the hidden fully connected layer")
    dropout: float = key(0.3, kind="float", minimum=0.0, doc="`cnn`: dropout before the last layer (< 1)")
    width: int = key(16, kind="int", minimum=1, doc="`resnet`: channels of the first stage")
    blocks: list[int] = key([1, 1, 1], kind="list", item="int", minimum=1, doc="`resnet`: basic blocks per stage")

    def check(self, where: str, raw: Any) -> None:
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{where}.dropout and {where}.label_smoothing must lie in [0, 1)")
        if not self.blocks:
            raise ConfigError(f"{where}.blocks must be positive integers, got {self.blocks}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "config") -> SupervisedConfig:
        """Build from a mapping; unknown keys and impossible values raise ConfigError naming ``where.key``."""
        return build(cls, d or {}, where)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_network(kind: str, n_classes: int, input_size: int, config: SupervisedConfig) -> nn.Module:
    """The network of a supervised baseline: ``cnn`` → :class:`ShiCNN`, ``resnet`` → :class:`ResidualClassifier`."""
    if kind == "cnn":
        return ShiCNN(n_classes, input_size, config.channels, config.hidden, config.dropout)
    if kind == "resnet":
        return ResidualClassifier(n_classes, config.width, config.blocks)
    raise ConfigError(f"unknown supervised baseline {kind!r}: use {' or '.join(CNN_KINDS)}")


class TensorShots(Dataset):
    """In-memory images as a dataset with the keys of :class:`spinet.data.ShotDataset` (a position, or
    ``(position, seed)``; the seed is ignored: no augmentation).

    Args:
        images: (n, 1, S, S).
        classes: (n,) class ids.
    """

    def __init__(self, images: torch.Tensor, classes: torch.Tensor) -> None:
        self.images = images
        self.labels = np.asarray(torch.as_tensor(classes).cpu().numpy(), dtype=np.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        position = int(key[0]) if isinstance(key, tuple | list) else int(key)
        return self.images[position], int(self.labels[position])


@torch.no_grad()
def predict_logits(net: nn.Module, images: torch.Tensor, batch: int = 256,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Logits (n, C) on CPU of images (n, 1, S, S), in eval mode."""
    was = net.training
    net.eval()
    out = [net(images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    net.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


def train_supervised(
    net: nn.Module,
    dataset: Dataset,
    labels: np.ndarray,
    config: SupervisedConfig,
    *,
    seed: int = 0,
    weights: np.ndarray | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    num_workers: int = 0,
) -> list[dict]:
    """Train ``net`` with cross-entropy on class-balanced batches; keeps the weights of the best epoch.

    Args:
        net: a classifier network, images → logits (C).
        dataset: map-style, key ``(position, seed)`` → (image (1, S, S), class id); e.g. a
            :class:`spinet.data.ShotDataset` with augmenting transforms, or :class:`TensorShots`.
        labels: (N,) class id of each position.
        config: training settings.
        seed: seeds initialisation-independent randomness: batches, augmentation, dropout.
        weights: (N,) per-shot sampling weights (sources of different weight); None: uniform.
        val: validation (images (n, 1, S, S), class ids (n,)) for early stopping; None: all epochs, last kept.
        device: where to train.
        on_epoch: called with each epoch's log row.
        num_workers: DataLoader worker processes (each reopens the files of a :class:`~spinet.data.FileShots`).

    Returns:
        One row per epoch: epoch, train_loss, train_accuracy, val_accuracy, seconds.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_classes_present = len(np.unique(labels))
    if n_classes_present < 2:
        raise ConfigError("a supervised baseline needs training shots of at least two classes, "
                          f"found {n_classes_present}")
    n_batches = config.batches_per_epoch
    if n_batches is None:
        n_batches = max(config.min_batches, math.ceil(len(labels) / (config.m_per_class * n_classes_present)))
    sampler = ClassBalancedBatchSampler(labels, config.m_per_class, n_batches, weights=weights, seed=seed)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history: list[dict] = []
    best_acc, best_state, bad = -math.inf, None, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            net.train()
            losses, correct, seen = [], 0, 0
            for x, y in DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers):
                x, y = x.to(device), y.to(device)
                logits = net(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
            acc = float("nan")
            if val is not None and len(val[0]):
                pred = predict_logits(net, val[0], device=device).argmax(1)
                acc = float((pred == val[1].cpu()).double().mean())
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "train_accuracy": correct / max(seen, 1),
                   "val_accuracy": acc, "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if val is None or math.isnan(acc):
                continue
            if acc > best_acc:
                best_acc, best_state, bad = acc, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if config.patience and bad >= config.patience:
                    break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history


class CNNClassifier:
    """A trained supervised network with its class list: images → class probabilities.

    Args:
        kind: ``cnn`` or ``resnet``.
        class_names: C names.
        input_size: S.
        config: training settings (also the architecture's).
    """

    def __init__(self, kind: str, class_names: Sequence[str], input_size: int, config: SupervisedConfig) -> None:
        self.kind = kind
        self.class_names = list(class_names)
        self.input_size = int(input_size)
        self.config = config
        self.net = build_network(kind, len(self.class_names), self.input_size, config)
        self.history: list[dict] = []

    def fit(self, dataset: Dataset, labels: np.ndarray, *, seed: int = 0, weights: np.ndarray | None = None,
            val: tuple[torch.Tensor, torch.Tensor] | None = None, device: str | torch.device = "cpu",
            on_epoch: Callable[[dict], None] | None = None, num_workers: int = 0) -> CNNClassifier:
        """Initialise from ``seed`` and train (see :func:`train_supervised`); returns self."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_network(self.kind, len(self.class_names), self.input_size, self.config)
        self.history = train_supervised(self.net, dataset, labels, self.config, seed=seed, weights=weights, val=val,
                                        device=device, on_epoch=on_epoch, num_workers=num_workers)
        self.net.cpu().eval()
        return self

    def predict_proba(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Softmax probabilities (n, C) of images (n, 1, S, S)."""
        device = next(self.net.parameters()).device
        return F.softmax(predict_logits(self.net, images, batch, device), dim=1).numpy().astype(np.float64)

    def to(self, device: str | torch.device) -> CNNClassifier:
        self.net.to(device)
        return self

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs (plain containers and tensors)."""
        return {"kind": self.kind, "class_names": self.class_names, "input_size": self.input_size,
                "config": self.config.to_dict(), "history": self.history,
                "net": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CNNClassifier:
        obj = cls(state["kind"], state["class_names"], state["input_size"], SupervisedConfig.from_dict(state["config"]))
        obj.net.load_state_dict(state["net"])
        obj.net.eval()
        obj.history = list(state.get("history", []))
        return obj


# ------------------------------------------------------------------------------------------ classical


def scattering_angles(frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None) -> np.ndarray:
    """Scattering angle 2θ (rad) of each pixel, (M, SS, FS); without geometry, the distance in pixels from the
    centre of the stacked panels (a stand-in with the same ordering for a flat detector centred on the beam).

    Args:
        frame_shape: (M, SS, FS).
        pixel_position: (M, SS, FS, 3) m or None.
    """
    if pixel_position is not None:
        p = np.asarray(pixel_position, dtype=np.float64).reshape(*frame_shape, 3)
        return np.arctan2(np.hypot(p[..., 0], p[..., 1]), p[..., 2])
    from .preprocess import stack_coordinates

    c = stack_coordinates(frame_shape)
    return np.hypot(c[..., 0], c[..., 1])


def radial_edges(angles: np.ndarray, valid: np.ndarray, n_rings: int) -> np.ndarray:
    """``n_rings + 1`` ring edges evenly spaced from 0 to the largest angle of a valid pixel.

    Args:
        angles: (M, SS, FS) from :func:`scattering_angles`.
        valid: (M, SS, FS) bool, True = good pixel.
        n_rings: number of rings.
    """
    a = np.asarray(angles)[np.asarray(valid, bool)]
    if a.size == 0:
        raise ConfigError("the detector has no valid pixel: cannot build radial features")
    return np.linspace(0.0, float(a.max()) * (1 + 1e-9), n_rings + 1)


class FrameFeatures:
    """Per-shot features of raw frames from one detector, in photons.

    Features (in this order): log(1 + photons per valid pixel); the fraction of valid pixels with at
    least each threshold's photons (lit pixels); log(1 + brightest valid pixel); for each ring,
    log(1 + mean photons of its valid pixels) (NaN where a ring has no valid pixel); for four groups of
    consecutive rings, the speckle contrast (variance − mean) / mean² of the valid pixels (0 without
    photons).

    Args:
        frame_shape: (M, SS, FS).
        pixel_position: (M, SS, FS, 3) m or None.
        mask: (M, SS, FS) bool, True = bad, or None.
        edges: ring edges (R + 1,) in the units of :func:`scattering_angles`.
        thresholds: lit-pixel thresholds, photons.
        photon_scale: frame values per photon (ADU per photon; 1 for photon data).
    """

    N_GROUPS = 4

    def __init__(self, frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None, mask: np.ndarray | None,
                 edges: np.ndarray, thresholds: Sequence[float] = (0.5, 1.5, 4.5), photon_scale: float = 1.0) -> None:
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.n_raw = int(np.prod(self.frame_shape))
        self.good = ~np.asarray(mask, bool).reshape(-1) if mask is not None else np.ones(self.n_raw, bool)
        self.edges = np.asarray(edges, dtype=np.float64)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.photon_scale = float(photon_scale)
        ang = scattering_angles(self.frame_shape, pixel_position).reshape(-1)
        n_rings = len(self.edges) - 1
        ring = np.digitize(ang, self.edges) - 1
        ring = np.where((ring >= 0) & (ring < n_rings), ring, -1)
        self.ring = ring
        onehot = np.zeros((self.n_raw, n_rings), dtype=np.float32)
        ok = ring >= 0
        onehot[np.nonzero(ok)[0], ring[ok]] = 1.0
        self.onehot = onehot
        group = np.where(ok, ring * self.N_GROUPS // max(n_rings, 1), -1)
        gh = np.zeros((self.n_raw, self.N_GROUPS), dtype=np.float32)
        gh[np.nonzero(ok)[0], group[ok]] = 1.0
        self.group_onehot = gh

    @property
    def names(self) -> list[str]:
        """Feature names, in column order."""
        n_rings = len(self.edges) - 1
        return (["log_photons_per_pixel"] + [f"lit_fraction_ge_{t:g}" for t in self.thresholds] + ["log_max"]
                + [f"ring_{i}" for i in range(n_rings)] + [f"contrast_{g}" for g in range(self.N_GROUPS)])

    def __call__(self, frames: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        """Features (B, F) float64 of frames (B, M, SS, FS); ``weight`` (B, M, SS, FS) > 0 marks pixels kept
        (e.g. 0 over a missing detector area)."""
        x = np.asarray(frames, dtype=np.float32).reshape(-1, self.n_raw) / self.photon_scale
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        v = np.broadcast_to(self.good, x.shape).copy()
        if weight is not None:
            v &= np.asarray(weight).reshape(-1, self.n_raw) > 0
        vf = v.astype(np.float32)
        xv = np.where(v, x, 0.0).astype(np.float32)
        n_valid = np.maximum(vf.sum(axis=1), 1.0).astype(np.float64)
        total = xv.sum(axis=1, dtype=np.float64)
        feats = [np.log1p(np.clip(total / n_valid, 0, None))[:, None]]
        for t in self.thresholds:
            feats.append(((xv >= t) & v).sum(axis=1)[:, None] / n_valid[:, None])
        feats.append(np.log1p(np.clip(np.where(v, x, -np.inf).max(axis=1, initial=0.0), 0, None))[:, None])
        ring_sum = (xv @ self.onehot).astype(np.float64)
        ring_n = (vf @ self.onehot).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ring_mean = np.where(ring_n > 0, ring_sum / ring_n, np.nan)
        feats.append(np.log1p(np.clip(ring_mean, 0, None)))
        g_sum = (xv @ self.group_onehot).astype(np.float64)
        g_sq = ((xv * xv) @ self.group_onehot).astype(np.float64)
        g_n = (vf @ self.group_onehot).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = g_sum / g_n
            var = g_sq / g_n - mean**2
            contrast = np.where((g_n > 1) & (mean > 0), (var - mean) / mean**2, 0.0)
        feats.append(np.nan_to_num(contrast, nan=0.0))
        return np.concatenate(feats, axis=1)


class ClassicalClassifier:
    """Lit-pixel, photon-count and radial-profile features (:class:`FrameFeatures`) into a scikit-learn classifier.

    Args:
        method: ``logistic`` (standardised features, NaN imputed with the training mean, multinomial logistic
            regression) or ``gbt`` (histogram gradient-boosted trees, NaN handled natively).
        n_rings: rings of the radial profile.
        thresholds: lit-pixel thresholds, photons.
        seed: seeds the trees.
    """

    def __init__(self, method: str = "logistic", n_rings: int = 16, thresholds: Sequence[float] = (0.5, 1.5, 4.5),
                 seed: int = 0) -> None:
        if method not in CLASSICAL_METHODS:
            raise ConfigError(f"classical method must be {' or '.join(CLASSICAL_METHODS)}, got {method!r}")
        if n_rings < 1:
            raise ConfigError(f"n_rings must be >= 1, got {n_rings}")
        self.method = method
        self.n_rings = int(n_rings)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.seed = int(seed)
        self.edges: np.ndarray | None = None
        self.model: Any = None
        self.classes_: np.ndarray | None = None
        self.n_classes = 0

    def set_geometry(self, frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None,
                     mask: np.ndarray | None) -> ClassicalClassifier:
        """Fix the ring edges from the training detector (0 to its largest scattering angle)."""
        valid = np.ones(frame_shape, bool) if mask is None else ~np.asarray(mask, bool).reshape(frame_shape)
        self.edges = radial_edges(scattering_angles(frame_shape, pixel_position), valid, self.n_rings)
        return self

    def extractor(self, frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None, mask: np.ndarray | None,
                  photon_scale: float = 1.0) -> FrameFeatures:
        """Features for a detector with this classifier's ring edges (call :meth:`set_geometry` first)."""
        if self.edges is None:
            raise RuntimeError("set_geometry() must be called before extractor()")
        return FrameFeatures(frame_shape, pixel_position, mask, self.edges, self.thresholds, photon_scale)

    def fit(self, features: np.ndarray, classes: np.ndarray, n_classes: int) -> ClassicalClassifier:
        """Fit on features (n, F) and class ids (n,) in [0, n_classes)."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(classes, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise ConfigError("the classical baseline needs training shots of at least two classes")
        if self.method == "logistic":
            self.model = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), StandardScaler(),
                                       LogisticRegression(max_iter=2000, C=1.0, class_weight="balanced"))
        else:
            self.model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, class_weight="balanced",
                                                        random_state=self.seed)
        self.model.fit(np.asarray(features, dtype=np.float64), y)
        self.classes_ = np.asarray(self.model.classes_, dtype=np.int64)
        self.n_classes = int(n_classes)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities (n, C) over all ``n_classes`` (0 for classes absent from training)."""
        if self.model is None or self.classes_ is None:
            raise RuntimeError("fit() first")
        p = self.model.predict_proba(np.asarray(features, dtype=np.float64))
        out = np.zeros((p.shape[0], self.n_classes), dtype=np.float64)
        out[:, self.classes_] = p
        return out


# ------------------------------------------------------------------------------------------ photon count


def shot_photons(frames: np.ndarray, mask: np.ndarray | None = None, photon_scale: float = 1.0,
                 weight: np.ndarray | None = None) -> np.ndarray:
    """Photons per shot: the sum over good, finite pixels of frames (B, M, SS, FS) / ``photon_scale``.

    Values are not clipped (read noise around zero averages out over a frame). ``mask`` (M, SS, FS) is True
    where bad; ``weight`` (B, M, SS, FS) > 0 marks the pixels kept (e.g. 0 over a lost detector area).

    Returns:
        (B,) float64 photons.
    """
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1) / float(photon_scale)
    keep = np.isfinite(x)
    if mask is not None:
        keep &= ~np.asarray(mask, bool).reshape(1, -1)
    if weight is not None:
        keep &= np.asarray(weight).reshape(len(frames), -1) > 0
    return np.where(keep, x, 0.0).sum(axis=1)


class PhotonCountRule:
    """A single-hit rule on photons per shot fitted on labelled shots: ``threshold`` (single when photons ≥ t, or
    ≤ t, whichever direction fits) or ``band`` (single when low ≤ photons ≤ high).

    The fit tries every cut halfway (in log photons) between neighbouring training values, and the open ends,
    and keeps the rule with the most training shots right; ties go to the rule whose cuts lie farthest from the
    nearest training shot (the widest margin), then to the first found. Photons below 1 count as 1 on the log
    scale.

    Args:
        rule: one of :data:`PHOTON_RULES`.
    """

    def __init__(self, rule: str = "band") -> None:
        if rule not in PHOTON_RULES:
            raise ConfigError(f"photon-count rule must be {' or '.join(PHOTON_RULES)}, got {rule!r}")
        self.rule = rule
        self.low = -math.inf
        """log photons: single when low <= log photons (threshold rule, direction up; band)."""
        self.high = math.inf
        """log photons: single when log photons <= high (threshold rule, direction down; band)."""
        self.train_accuracy = float("nan")
        self.fitted = False

    @staticmethod
    def _log(photons: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(np.asarray(photons, dtype=np.float64), 1.0))

    def fit(self, photons: np.ndarray, is_single: np.ndarray) -> PhotonCountRule:
        """Fit on (n,) photons per shot and (n,) bool single-hit truth (both classes present)."""
        x = self._log(photons)
        y = np.asarray(is_single, bool)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError("photons and is_single must be non-empty and of the same length")
        if y.all() or not y.any():
            raise ConfigError("the photon-count baseline needs labelled shots of single hits and of other shots")
        u = np.unique(x)
        cuts = np.concatenate([[-math.inf], (u[:-1] + u[1:]) / 2, [math.inf]])

        def margin(*cs: float) -> float:
            finite = [c for c in cs if math.isfinite(c)]
            return min((float(np.min(np.abs(x - c))) for c in finite), default=math.inf)

        best = (-1, -math.inf, -math.inf, math.inf)  # (right, margin, low, high)
        pairs = ([(c, math.inf) for c in cuts] + [(-math.inf, c) for c in cuts] if self.rule == "threshold"
                 else [(lo, hi) for i, lo in enumerate(cuts) for hi in cuts[i:]])
        for lo, hi in pairs:
            right = int(np.sum(((x >= lo) & (x <= hi)) == y))
            if right < best[0]:
                continue
            m = margin(lo, hi)
            if right > best[0] or m > best[1]:
                best = (right, m, lo, hi)
        self.low, self.high = float(best[2]), float(best[3])
        self.train_accuracy = best[0] / len(y)
        self.fitted = True
        return self

    def predict(self, photons: np.ndarray) -> np.ndarray:
        """(n,) bool: predicted single hits."""
        x = self._log(photons)
        return (x >= self.low) & (x <= self.high)

    def score(self, photons: np.ndarray) -> np.ndarray:
        """(n,) single-hit score: the log-photon distance inside the rule's single range (> 0 inside, < 0 outside)."""
        x = self._log(photons)
        return np.minimum(x - self.low, self.high - x)

    def describe(self) -> str:
        """E.g. ``single if 1.2e+04 <= photons <= 9.8e+04``."""
        lo = f"{math.exp(self.low):.3g} <= " if math.isfinite(self.low) else ""
        hi = f" <= {math.exp(self.high):.3g}" if math.isfinite(self.high) else ""
        return f"single if {lo}photons{hi}" if (lo or hi) else "single always"
