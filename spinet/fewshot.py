"""Few-shot classification by distance to a labelled support set (k shots per class).

Distances are squared L2 between embeddings (what the triplet loss was trained on). Rules:

* ``mean`` (the paper's): the class whose supports are nearest on average, argmin_c mean_j d(x, s_cj);
* ``prototype``: the class whose mean support embedding (prototype) is nearest, argmin_c d(x, mean_j s_cj);
* ``nearest``: the class of the nearest support, argmin_c min_j d(x, s_cj);
* ``knn``: the class whose ``neighbours`` (default 3) nearest supports are nearest on average. With
  classes that are mixtures (unintended hits: droplets, salt grains, debris), the mean over all of a class's
  supports penalises a shot that sits right by one of its modes; ``knn`` and ``nearest`` do not.

With ``threshold``, a shot whose smallest class distance exceeds it is answered "unknown" (−1). With
``min_ratio`` (the ratio test), a shot is answered "unknown" unless the second-nearest class is at least
``min_ratio`` times as far (squared distance) as the nearest one: the knob for a pure single-hit set.

The distance *ratio* between classes, not their difference, is what ranks shots by how sure the answer is:
squared distances in the embedding grow with the local spread of the data, so one difference means "sure"
in a tight cluster and "coin toss" in a loose one. :func:`log_distance_ratio` is the single-hit score of
the evaluation harness (its precision–recall curve and the recall at 98 % precision).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spisim.errors import ConfigError

RULES = ("mean", "prototype", "nearest", "knn")
DEFAULT_NEIGHBOURS = 3
"""Supports per class that the ``knn`` rule averages over (fewer where a class has fewer)."""


class FewShotClassifier:
    """Classify embeddings against supports.

    Args:
        support_embeddings: (n, D).
        support_classes: (n,) class ids in [0, C).
        class_names: C names.
        rule: one of :data:`RULES`.
        threshold: squared distance above which the answer is unknown (−1); None: always a class.
        neighbours: supports per class that the ``knn`` rule averages over.
        min_ratio: (≥ 1) the second-nearest class must be at least this many times as far (squared distance)
            as the nearest, else the answer is unknown (−1); None or 1: no ratio test.
        ratio_groups: (C,) group id per class for the ratio test: the runner-up is the nearest class of
            *another group* (default: every class its own group). For answers given single vs rest, the
            groups are single and not single, so that a shot between two non-single classes (multi and
            unintended) is a sure not_single, not an unknown.
    """

    def __init__(
        self,
        support_embeddings: torch.Tensor,
        support_classes: torch.Tensor,
        class_names: Sequence[str],
        rule: str = "mean",
        threshold: float | None = None,
        neighbours: int = DEFAULT_NEIGHBOURS,
        min_ratio: float | None = None,
        ratio_groups: Sequence[int] | None = None,
    ) -> None:
        if rule not in RULES:
            raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        self.embeddings = support_embeddings.detach().to(torch.float32)
        self.classes = torch.as_tensor(support_classes, dtype=torch.int64).to(self.embeddings.device)
        self.class_names = list(class_names)
        c = len(self.class_names)
        counts = torch.bincount(self.classes, minlength=c)
        if len(counts) > c:
            raise ConfigError(f"support class ids go beyond the {c} class names")
        missing = [self.class_names[i] for i in range(c) if counts[i] == 0]
        if missing:
            raise ConfigError(f"no support shots of class{'es' if len(missing) > 1 else ''} {', '.join(missing)}")
        if neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {neighbours}")
        if min_ratio is not None and not min_ratio >= 1.0:
            raise ConfigError(f"min_ratio must be >= 1 (1: no ratio test), got {min_ratio}")
        if min_ratio is not None and c < 2:
            raise ConfigError("min_ratio needs supports of at least two classes")
        self.rule = rule
        self.threshold = threshold
        self.min_ratio = min_ratio
        groups = np.arange(c) if ratio_groups is None else np.asarray(ratio_groups, dtype=np.int64)
        if groups.shape != (c,):
            raise ConfigError(f"ratio_groups needs one group per class ({c}), got {groups.shape}")
        if min_ratio is not None and len(np.unique(groups)) < 2:
            raise ConfigError("min_ratio needs supports of at least two groups of classes")
        self._other_group = torch.from_numpy(groups[:, None] != groups[None, :]).to(self.embeddings.device)
        self.neighbours = int(neighbours)
        onehot = torch.zeros(c, len(self.classes), device=self.embeddings.device)
        onehot[self.classes, torch.arange(len(self.classes))] = 1.0
        self._average = onehot / counts[:, None].to(onehot.dtype)  # (C, n)
        self.prototypes = self._average @ self.embeddings  # (C, D)

    def distances(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) → (B, C) class distances under the rule (squared L2)."""
        e = embeddings.detach().to(torch.float32).to(self.embeddings.device)
        if self.rule == "prototype":
            return torch.cdist(e, self.prototypes).pow(2)
        d = torch.cdist(e, self.embeddings).pow(2)  # (B, n)
        if self.rule == "mean":
            return d @ self._average.T
        m = 1 if self.rule == "nearest" else self.neighbours
        out = torch.empty(len(e), len(self.class_names), device=d.device)
        for c in range(len(self.class_names)):
            dc = d[:, self.classes == c]
            out[:, c] = dc.topk(min(m, dc.shape[1]), dim=1, largest=False).values.mean(dim=1)
        return out

    def predict(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted class ids (B,), −1 for unknown; distances (B, C))."""
        d = self.distances(embeddings)
        best, pred = d.min(dim=1)
        if self.threshold is not None:
            pred = torch.where(best > self.threshold, torch.full_like(pred, -1), pred)
        if self.min_ratio is not None and self.min_ratio > 1.0:
            # the runner-up: the nearest class of another group than the nearest class
            other = self._other_group[d.argmin(dim=1)]
            second = torch.where(other, d, torch.full_like(d, float("inf"))).min(dim=1).values
            pred = torch.where(second < self.min_ratio * best, torch.full_like(pred, -1), pred)
        return pred, d


def log_distance_ratio(distances: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """How surely a shot belongs to the ``positive`` classes: ln(d_other / d_positive).

    Args:
        distances: (n, C) class distances (squared L2, under any rule).
        positive: (C,) bool, the classes that count as positive (e.g. the single-hit classes); at least
            one positive and one negative.

    Returns:
        (n,) ln(min over negative classes / min over positive classes); > 0 where a positive class is
        nearest. Zero distances are floored at 1e-12 so the score stays finite.
    """
    positive = np.asarray(positive, dtype=bool)
    if not positive.any() or positive.all():
        raise ValueError("log_distance_ratio needs at least one positive and one negative class")
    d = np.maximum(np.asarray(distances, dtype=np.float64), 1e-12)
    return np.log(d[:, ~positive].min(axis=1)) - np.log(d[:, positive].min(axis=1))


def accuracy(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of predictions equal to the truth (unknown counts as wrong)."""
    if truth.numel() == 0:
        return float("nan")
    return float((pred.cpu() == truth.cpu()).to(torch.float64).mean())


@torch.no_grad()
def embed_images(
    model: torch.nn.Module, images: torch.Tensor, batch: int = 256, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Embeddings (n, D) on CPU of preprocessed images (n, 1, S, S), in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(images[i : i + batch].to(device)).cpu() for i in range(0, len(images), batch)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def fewshot_accuracy(
    model: torch.nn.Module,
    support: tuple[torch.Tensor, torch.Tensor],
    query: tuple[torch.Tensor, torch.Tensor],
    class_names: Sequence[str],
    rule: str = "mean",
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy on ``query`` (images, class ids) with ``support`` (images, class ids).

    Only the classes among the supports can be answered (a class of ``class_names`` without supports, e.g.
    ``not_single`` in a run trained on simulated 4-class data, is left out); a query of such a class counts
    as wrong."""
    s_cls = torch.as_tensor(support[1], dtype=torch.int64)
    present = torch.unique(s_cls)
    remap = torch.full((len(class_names),), -1, dtype=torch.int64)
    remap[present] = torch.arange(len(present))
    clf = FewShotClassifier(embed_images(model, support[0], device=device), remap[s_cls],
                            [class_names[int(i)] for i in present], rule)
    local, _ = clf.predict(embed_images(model, query[0], device=device))
    pred = torch.where(local < 0, local, present[local.clamp(min=0)])
    return accuracy(pred, query[1])
