"""The kinds of model a study compares, one class each, found through one registry (:data:`KINDS`).

Each kind knows its configuration (checked when the study is read), how it is trained on a job's shots, how it
predicts the classes of test shots, and how its speed is timed:

- :class:`Siamese`: the few-shot embedding network (:mod:`spinet.train`) read with a rule over k labelled
  supports per class (:mod:`spinet.fewshot`), optionally choosing checkpoint, rule and ratio test with them;
- :class:`Supervised` (``cnn``, ``resnet``): a supervised classifier of the study's classes
  (:class:`spinet.baselines.CNNClassifier`);
- :class:`Classical`: ring features and a classical classifier (:class:`spinet.baselines.ClassicalClassifier`);
- :class:`PhotonCount` (``photons``): a photon-count threshold or band fitted on the supports
  (:class:`spinet.baselines.PhotonCountRule`); nothing is trained.

The runner (:mod:`spinet.study.runner`) gives each method its data registry, device and cache.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from spisim.cxi import NOT_SINGLE
from spisim.errors import ConfigError
from spisim.schema import build, did_you_mean, key

from ..baselines import CLASSICAL_METHODS, PHOTON_RULES
from ..config import AugmentConfig, Config, PreprocessConfig
from ..fewshot import RULES
from ..metrics import is_single_class
from ..records import CLASSICAL, CNN, PHOTONS, RESNET, SIAMESE, Perturbation, Prediction
from .fields import check_keys

if TYPE_CHECKING:
    from .registry import Geometry
    from .runner import StudyRunner, Trained, TrainJob
    from .spec import ModelSpec, TestVariant

SELECT_METHODS = ("loo",)
"""``models[].select``: how a Siamese model chooses its checkpoint (and rule) with the supports."""

Predictor = Callable[[np.ndarray], Any]
"""Raw frames (n, M, SS, FS) -> predicted class ids (n,), what the throughput table times."""


class ModelKind:
    """A kind of model (subclasses below); one instance per kind in :data:`KINDS`.

    Attributes:
        name: the ``kind`` of a study's model.
        fewshot: uses labelled supports of the test (then tests need ``support``).
        trains: trains a model on a training source (False: fitted on each test's supports).
        embeds: an embedding network: the Siamese-only keys (``rule``, ``embedding``, ``select`` ...) apply and its
            embeddings are kept for the plots.
        augments: trained with augmentation (``augment`` applies).
        title: what messages call it.
    """

    name = ""
    title = ""
    fewshot = False
    trains = True
    embeds = False
    augments = True

    def check_config(self, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
        """Check the kind's own ``config`` of ``models[i]`` (``m``, its shared keys already read; ConfigError naming
        ``where``)."""
        raise NotImplementedError

    def train(self, runner: StudyRunner, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list]:
        """Train (or load from ``folder``) a model: (the model, its training log)."""
        raise NotImplementedError

    def predict(self, runner: StudyRunner, trained: Trained, v: TestVariant, k: int | None, cache: dict,
                name: str, pos: np.ndarray, truth: np.ndarray) -> Prediction:
        """Predictions on the labelled shots ``pos`` of dataset ``name`` (class ids of the study)."""
        raise NotImplementedError

    def predictor(self, runner: StudyRunner, trained: Trained, v: TestVariant, geo: Geometry) -> Predictor | None:
        """A function from raw frames to class ids for the throughput table, or None (not timed)."""
        return None


class Siamese(ModelKind):
    """The Siamese few-shot classifier: an embedding network and a rule over k supports per class."""

    name = SIAMESE
    title = "Siamese model"
    fewshot = True
    embeds = True

    def check_config(self, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
        _check_siamese_config(m.config, m, preprocess, where)

    # ---------------------------------------------------------------------------------------- training

    def train(self, runner: StudyRunner, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list]:
        """Train with :func:`spinet.train.train` on label files written into ``folder`` (or load ``best.pt``)."""
        from ..checkpoint import ModelBundle

        best = folder / "best.pt"
        done = folder / "done.json"
        if not runner.fresh and best.is_file() and done.is_file():
            return ModelBundle.load(best, runner.device), json.loads(done.read_text())["history"]
        folder.mkdir(parents=True, exist_ok=True)
        config = Config.from_dict(_training_config(runner, job, train, val, folder))
        from rich.console import Console

        from ..train import train as spinet_train

        quiet = Console(file=open(os.devnull, "w"), stderr=False)  # noqa: SIM115 - closed with the console
        try:
            result = spinet_train(config, console=quiet)
        finally:
            quiet.file.close()
        done.write_text(json.dumps({"history": result.history}, default=float))
        return ModelBundle.load(best, runner.device), result.history

    # ---------------------------------------------------------------------------------------- scoring

    def predict(self, runner: StudyRunner, trained: Trained, v: TestVariant, k: int | None, cache: dict,
                name: str, pos: np.ndarray, truth: np.ndarray) -> Prediction:
        """Few-shot predictions; with ``select`` the checkpoint (and with ``rule: auto`` the rule) chosen by
        leave-one-out over the supports, with ``min_ratio: auto`` the ratio test set from them. The supports'
        leave-one-out accuracy is kept as the record's estimate."""
        from ..fewshot import FewShotClassifier, embed_images, log_distance_ratio
        from ..inference import ratio_groups

        classes = runner.data.classes
        single = np.array([is_single_class(c) for c in classes], dtype=bool)
        _, _, s_cls = runner.support_pick(trained, v, k)
        present = np.unique(s_cls)
        local_cls = np.searchsorted(present, s_cls).astype(np.int64)
        local_names = [classes[c] for c in present]
        ckpt, net, chosen, ratio, estimate = _choose(runner, trained, v, k, cache, local_cls, local_names)
        qkey = ("emb", id(trained), ckpt, v.name)
        if qkey not in cache:
            cache[qkey] = embed_images(net, runner.data.images(name, pos, v.perturb),
                                       batch=runner.study.evaluation.batch_size, device=runner.device)
        q = cache[qkey]
        s_emb = torch.as_tensor(chosen.embeddings)
        clf = FewShotClassifier(s_emb, torch.from_numpy(local_cls), local_names, rule=chosen.rule, min_ratio=ratio,
                                ratio_groups=ratio_groups(local_names, runner.data.label_space(name).binary))
        pred_local, dist = clf.predict(q)
        pl = pred_local.numpy()
        pred = np.where(pl < 0, -1, present[np.maximum(pl, 0)])
        single_local = single[present]
        score = None
        if single_local.any() and (~single_local).any():
            score = log_distance_ratio(dist.numpy(), single_local)
        estimate.update(checkpoint=ckpt, rule=chosen.rule, min_ratio=ratio)
        return Prediction(truth, pred, score, q.numpy(), s_emb.numpy(), s_cls, estimate=estimate)

    def predictor(self, runner: StudyRunner, trained: Trained, v: TestVariant, geo: Geometry) -> Predictor | None:
        """The network and the model's rule over the supports of the plot k (first seed's draw)."""
        from ..fewshot import FewShotClassifier, embed_images
        from ..preprocess import Preprocessor

        pre = Preprocessor.from_geometry(runner.study.preprocess, geo.frame_shape, geo.pixel_position,
                                         geo.mask).to(runner.device)
        model = trained.obj.model
        assert v.spec.support is not None
        spos = runner.data.part(v.spec.support)
        slab = runner.data.labelled(v.spec.support.dataset)
        pick = spos[_pick(slab.classes[spos], min(runner.study.plot_k, runner.pool_min(v.spec.support)), 0)]
        s_emb = embed_images(model, runner.data.images(v.spec.support.dataset, pick), device=runner.device)
        present, s_cls = np.unique(slab.classes[pick], return_inverse=True)
        m = trained.job.model
        clf = FewShotClassifier(s_emb.to(runner.device), torch.from_numpy(s_cls), [str(c) for c in present],
                                rule=m.rule if m.rule in RULES else "nearest",
                                min_ratio=m.min_ratio if isinstance(m.min_ratio, float) else None)
        model.eval()

        @torch.no_grad()
        def predict(b: np.ndarray) -> Any:
            return clf.predict(model(pre(torch.from_numpy(b).to(runner.device))))[0].cpu()

        return predict


def _pick(classes: np.ndarray, k: int, seed: int) -> np.ndarray:
    from ..data import pick_per_class

    return pick_per_class(classes, k, seed)


STUDY_SET_DATA_KEYS = ("sources", "validation", "classes", "label", "val_fraction", "unlabelled")
"""``config.data`` keys of a Siamese model that the study sets (sources, tests, classes, unlabelled)."""

STUDY_SET_TRAIN_KEYS = ("out", "seed", "device", "init")
"""``config.train`` keys of a Siamese model that the study sets."""


def _check_siamese_config(cfg: dict, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
    """A Siamese model's ``config``: the spinet config sections it may set, validated with the study's
    preprocessing (ConfigError naming ``models[i].config``)."""
    check_keys(cfg, ("model", "loss", "train", "data", "adapt"), f"{where}.config")
    adapt = cfg.get("adapt") or {}
    if any(adapt.get(k) for k in ("consistency", "align")) and m.unlabelled is None:
        raise ConfigError(f"{where}.config.adapt: the adaptation terms need unlabelled: PART (the run's frames)")
    for name in STUDY_SET_DATA_KEYS:
        if name in (cfg.get("data") or {}):
            raise ConfigError(f"{where}.config.data.{name} is set by the study (sources, tests, classes, "
                              "unlabelled)")
    for name in STUDY_SET_TRAIN_KEYS:
        if name in (cfg.get("train") or {}):
            raise ConfigError(f"{where}.config.train.{name} is set by the study")
    try:
        probe = {**cfg, "preprocess": preprocess.__dict__}
        if m.unlabelled is not None:
            probe["data"] = {**(cfg.get("data") or {}), "unlabelled": [{"path": "<unlabelled>"}]}
        Config.from_dict(probe)
    except ConfigError as exc:
        raise ConfigError(f"{where}.config: {exc}") from None


def _label_csv(runner: StudyRunner, path: Path, name: str, positions: np.ndarray) -> Path:
    """A label file (CSV ``index,label``) of the labelled shots ``positions`` of dataset ``name``."""
    lab = runner.data.labelled(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "label"])
        for p in positions:
            w.writerow([int(lab.indices[p]), runner.data.classes[int(lab.classes[p])]])
    return path


def _training_config(runner: StudyRunner, job: TrainJob, train: list, val: list, folder: Path) -> dict:
    """The spinet config (a mapping) that trains a Siamese job: the model's config, the study's preprocessing and
    augmentation, label files of the job's shots in ``folder``."""
    cfg = json.loads(json.dumps(job.model.config))
    sources = [{"path": str(runner.data.file(n)), "weight": w,
                "labels": str(_label_csv(runner, folder / f"train-{i}.csv", n, pos))}
               for i, (n, pos, w) in enumerate(train)]
    validation = [{"path": str(runner.data.file(n)), "labels": str(_label_csv(runner, folder / f"val-{i}.csv", n, pos))}
                  for i, (n, pos) in enumerate(val)]
    data = dict(cfg.get("data") or {})
    data.update(sources=sources, validation=validation, val_fraction=0.0, classes=runner.data.classes,
                label="hit_type")
    data.setdefault("num_workers", runner.study.evaluation.num_workers)
    if "batches_per_epoch" not in data:
        m = int(data.get("m_per_class", 5))
        n_cls = len({int(c) for n, pos, _ in train for c in runner.data.labelled(n).classes[pos]})
        cpb = min(int(data.get("classes_per_batch") or n_cls), n_cls)
        n = sum(len(p) for _, p, _ in train)
        data["batches_per_epoch"] = max(10, math.ceil(n / (m * max(cpb, 1))))
    if job.model.unlabelled is not None:
        u = job.model.unlabelled
        idx_file = folder / "unlabelled.csv"
        idx_file.write_text("index\n" + "".join(
            f"{int(i)}\n" for i in runner.data.labelled(u.dataset).indices[runner.data.part(u)]), encoding="utf-8")
        data["unlabelled"] = [{"path": str(runner.data.file(u.dataset)), "indices": str(idx_file)}]
    tr = dict(cfg.get("train") or {})
    tr.update(out=str(folder), seed=job.seed, device=runner.device, progress=False, tensorboard=False)
    tr.setdefault("rule", job.model.rule if job.model.rule in RULES else "nearest")
    init = runner.init_network(job)
    if init is not None:
        assert init.folder is not None
        tr["init"] = str(init.folder / "best.pt")
    return {**cfg, "preprocess": runner.study.preprocess.__dict__, "augment": runner.augment(job.model).__dict__,
            "data": data, "train": tr}


def _checkpoints(runner: StudyRunner, trained: Trained) -> list[tuple[str, Any]]:
    """(name, bundle) of the checkpoints a Siamese model may choose from: the best one, and with ``select``
    the kept epochs (``train.keep_every``) in epoch order."""
    out = [("best", trained.obj)]
    if trained.job.model.select is None or trained.folder is None:
        return out
    from ..checkpoint import ModelBundle

    for path in sorted((trained.folder / "epochs").glob("epoch-*.pt")):
        if path not in runner.bundles:
            runner.bundles[path] = ModelBundle.load(path, runner.device)
        out.append((path.stem, runner.bundles[path]))
    return out


def _network(runner: StudyRunner, trained: Trained, ckpt: str, bundle: Any, v: TestVariant,
             cache: dict) -> torch.nn.Module:
    """The network of a checkpoint, its batch-norm statistics re-estimated on the frames of the test's dataset
    (all its shots with data, labels unused) when the model asks for ``adapt_bn``."""
    if not trained.job.model.adapt_bn:
        return bundle.model
    key = ("adabn", id(trained), ckpt, v.spec.data.dataset, v.perturb)
    if key not in cache:
        import copy

        from ..adapt import adapt_batchnorm, image_batches

        name = v.spec.data.dataset
        allpos = runner.data.labelled(name).parts["all"]
        allpos = allpos[runner.data.has_data(name, allpos, v.perturb)]
        net = copy.deepcopy(bundle.model)
        adapt_batchnorm(net, image_batches(runner.data.images(name, allpos, v.perturb),
                                           runner.study.evaluation.batch_size), runner.device)
        cache[key] = net
    return cache[key]


def _choose(runner: StudyRunner, trained: Trained, v: TestVariant, k: int | None, cache: dict,
            local_cls: np.ndarray, local_names: list[str]) -> tuple[str, Any, Any, float | None, dict]:
    """(checkpoint name, network, chosen candidate, ratio test or None, the supports' estimate) of a Siamese
    model on a test's supports: every checkpoint × rule candidate read by leave-one-out over the supports."""
    from ..fewshot import embed_images
    from ..selection import SELECTION_RULES, Candidate, fitted_ratio, nested_estimate, select_candidate

    m = trained.job.model
    sname, pick, _ = runner.support_pick(trained, v, k)
    binary = runner.data.label_space(v.spec.data.dataset).binary
    rules = list(SELECTION_RULES) if m.rule == "auto" else [m.rule]
    s_imgs = runner.data.images(sname, pick, v.perturb)
    cands, nets = [], []
    for ckpt, bundle in _checkpoints(runner, trained):
        net = _network(runner, trained, ckpt, bundle, v, cache)
        s_emb = embed_images(net, s_imgs, device=runner.device)
        for rule in rules:
            cands.append(Candidate(ckpt, s_emb, rule))
            nets.append((ckpt, net))
    fixed_ratio = None if m.min_ratio == "auto" else m.min_ratio
    sel = select_candidate(cands, local_cls, local_names, binary=binary, min_ratio=fixed_ratio)
    chosen = sel.chosen
    ckpt, net = nets[sel.best]
    ratio = fitted_ratio(sel.results[sel.best]) if m.min_ratio == "auto" else fixed_ratio
    estimate = sel.results[sel.best].estimate
    if len(cands) > 1 or m.min_ratio == "auto":  # something was chosen with the supports: the nested estimate
        estimate = nested_estimate(cands, local_cls, local_names, binary=binary, min_ratio=m.min_ratio)
    return ckpt, net, chosen, ratio, estimate.to_dict()


# ============================================================================================ baselines


class _Probabilistic(ModelKind):
    """A kind whose model gives class probabilities: the prediction is the most probable class, the single-hit
    score the summed probability of the single classes."""

    def proba(self, runner: StudyRunner, trained: Trained, v: TestVariant, name: str, pos: np.ndarray) -> np.ndarray:
        """(n, C) class probabilities of the labelled shots ``pos`` of dataset ``name``."""
        raise NotImplementedError

    def predict(self, runner: StudyRunner, trained: Trained, v: TestVariant, k: int | None, cache: dict,
                name: str, pos: np.ndarray, truth: np.ndarray) -> Prediction:
        single = np.array([is_single_class(c) for c in runner.data.classes], dtype=bool)
        proba = self.proba(runner, trained, v, name, pos)
        score = proba[:, single].sum(axis=1) if single.any() else None
        return Prediction(truth, proba.argmax(axis=1), score)


class Supervised(_Probabilistic):
    """A supervised CNN (``cnn``: the SpeckleNN-style network; ``resnet``: the residual one) of the study's
    classes, configured by :class:`spinet.baselines.SupervisedConfig`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.title = f"{name} baseline"

    def check_config(self, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
        from ..baselines import SupervisedConfig

        SupervisedConfig.from_dict(m.config, f"{where}.config")

    def train(self, runner: StudyRunner, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list]:
        """Fit on augmented shots read from the files (or load ``model.pt``)."""
        from ..baselines import CNNClassifier, SupervisedConfig

        path = folder / "model.pt"
        if not runner.fresh and path.is_file():
            clf = CNNClassifier.from_state(torch.load(path, map_location="cpu", weights_only=True))
            return clf.to(runner.device), clf.history
        cfg = SupervisedConfig.from_dict(job.model.config, f"models.{job.model.name}.config")
        clf = CNNClassifier(job.model.kind, runner.data.classes, runner.study.preprocess.input_size, cfg)
        ds = _file_shots(runner, train, runner.augment(job.model))
        clf.fit(ds, ds.labels, seed=job.seed, weights=ds.sample_weights(), val=_val_images(runner, val),
                device=runner.device, num_workers=runner.study.evaluation.num_workers)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(clf.state(), path)
        return clf.to(runner.device), clf.history

    def proba(self, runner: StudyRunner, trained: Trained, v: TestVariant, name: str, pos: np.ndarray) -> np.ndarray:
        return trained.obj.predict_proba(runner.data.images(name, pos, v.perturb),
                                         batch=runner.study.evaluation.batch_size)

    def predictor(self, runner: StudyRunner, trained: Trained, v: TestVariant, geo: Geometry) -> Predictor | None:
        from ..preprocess import Preprocessor

        pre = Preprocessor.from_geometry(runner.study.preprocess, geo.frame_shape, geo.pixel_position,
                                         geo.mask).to(runner.device)
        net = trained.obj.net
        net.eval()

        @torch.no_grad()
        def predict(b: np.ndarray) -> Any:
            return net(pre(torch.from_numpy(b).to(runner.device))).argmax(1).cpu()

        return predict


def _file_shots(runner: StudyRunner, train: list, augment: AugmentConfig) -> Any:
    """A :class:`spinet.data.ShotDataset` of a job's training shots, read from their files and augmented."""
    from ..augment import ShotTransform
    from ..data import FileShots, ShotDataset
    from ..preprocess import Preprocessor

    shots = []
    for name, pos, w in train:
        path = runner.data.file(name)
        geo = runner.data.geometry(path)
        lab = runner.data.labelled(name)
        pre = Preprocessor.from_geometry(runner.study.preprocess, geo.frame_shape, geo.pixel_position, geo.mask)
        t = ShotTransform(runner.study.preprocess, augment, geo.frame_shape, geo.pixel_position, geo.mask,
                          preprocessor=pre)
        shots.append(FileShots(path, lab.indices[pos], lab.classes[pos], t, w))
    return ShotDataset(shots)


def _val_images(runner: StudyRunner, val: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, class ids) of a job's validation shots, or None without any."""
    if not val:
        return None
    xs = [runner.data.images(n, pos) for n, pos in val]
    ys = [torch.from_numpy(runner.data.labelled(n).classes[pos]) for n, pos in val]
    return torch.cat(xs), torch.cat(ys)


@dataclass
class ClassicalConfig:
    """``config`` of a classical model (:class:`spinet.baselines.ClassicalClassifier`)."""

    method: str = key("logistic", kind="choice", choices=CLASSICAL_METHODS,
                      doc="`logistic` (logistic regression) or `gbt` (histogram gradient-boosted trees)")
    n_rings: int = key(16, kind="int", minimum=1, doc="rings of the radial photon profile (features)")
    thresholds: list[float] = key([0.5, 1.5, 4.5], kind="list", item="float", unit="photons",
                                  doc="pixel thresholds of the counted-pixel features")

    def check(self, where: str, raw: Any) -> None:
        if not self.thresholds:
            raise ConfigError(f"{where}.thresholds must be a non-empty list of photon counts")


@dataclass
class PhotonCountConfig:
    """``config`` of a photon-count model (:class:`spinet.baselines.PhotonCountRule`)."""

    rule: str = key("band", kind="choice", choices=PHOTON_RULES,
                    doc="`band` (single when low <= photons <= high) or `threshold` (one cut on photons per shot)")


def classical_kwargs(cfg: dict, where: str) -> dict:
    """Keyword arguments of :class:`spinet.baselines.ClassicalClassifier` from a classical model's config."""
    return dataclasses.asdict(build(ClassicalConfig, cfg, where))


class Classical(_Probabilistic):
    """Ring features (photons per ring, thresholds) and a classical classifier; trained without augmentation."""

    name = CLASSICAL
    title = "classical baseline"
    augments = False

    def check_config(self, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
        classical_kwargs(m.config, f"{where}.config")

    def train(self, runner: StudyRunner, job: TrainJob, train: list, val: list, folder: Path) -> tuple[Any, list]:
        """Fit on the features of the training shots (or load ``model.pkl``)."""
        from ..baselines import ClassicalClassifier

        path = folder / "model.pkl"
        if not runner.fresh and path.is_file():
            with open(path, "rb") as f:
                return pickle.load(f), []
        clf = ClassicalClassifier(**classical_kwargs(job.model.config, f"models.{job.model.name}.config"),
                                  seed=job.seed)
        first = runner.data.file(train[0][0])
        geo = runner.data.geometry(first)
        clf.set_geometry(geo.frame_shape, geo.pixel_position, geo.mask)
        xs, ys = [], []
        for name, pos, _ in train:
            xs.append(runner.data.features(name, pos, Perturbation(), clf))
            ys.append(runner.data.labelled(name).classes[pos])
        clf.fit(np.concatenate(xs), np.concatenate(ys), len(runner.data.classes))
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(clf, f)
        return clf, []

    def proba(self, runner: StudyRunner, trained: Trained, v: TestVariant, name: str, pos: np.ndarray) -> np.ndarray:
        return trained.obj.predict_proba(runner.data.features(name, pos, v.perturb, trained.obj))

    def predictor(self, runner: StudyRunner, trained: Trained, v: TestVariant, geo: Geometry) -> Predictor | None:
        ext = trained.obj.extractor(geo.frame_shape, geo.pixel_position, geo.mask, runner.study.preprocess.photon_scale)

        def predict(b: np.ndarray) -> Any:
            return trained.obj.predict_proba(ext(b)).argmax(axis=1)

        return predict


class PhotonCount(ModelKind):
    """A photon-count threshold or band fitted on each test's supports (single hits against the rest)."""

    name = PHOTONS
    title = "photon-count baseline"
    fewshot = True
    trains = False
    augments = False

    def check_config(self, m: ModelSpec, preprocess: PreprocessConfig, where: str) -> None:
        build(PhotonCountConfig, m.config, f"{where}.config")

    def predict(self, runner: StudyRunner, trained: Trained, v: TestVariant, k: int | None, cache: dict,
                name: str, pos: np.ndarray, truth: np.ndarray) -> Prediction:
        """The rule fitted on the supports; its leave-one-out accuracy on the supports (refitted without each) is
        the record's estimate."""
        from ..baselines import PhotonCountRule
        from ..selection import Estimate

        classes = runner.data.classes
        sname, pick, s_cls = runner.support_pick(trained, v, k)
        s_single = np.array([is_single_class(classes[c]) for c in s_cls], dtype=bool)
        if s_single.all() or not s_single.any():
            raise ConfigError(f"models.{trained.job.model.name}: the supports of test {v.spec.name} need single "
                              "hits and other shots for the photon-count baseline")
        rule_name = build(PhotonCountConfig, trained.job.model.config, "config").rule
        s_ph = runner.data.photons(sname, pick, v.perturb)
        rule = PhotonCountRule(rule_name).fit(s_ph, s_single)
        ph = runner.data.photons(name, pos, v.perturb)
        is_single = rule.predict(ph)
        single_id = int(np.bincount(s_cls[s_single]).argmax())
        other_id = (classes.index(NOT_SINGLE) if NOT_SINGLE in classes and runner.data.label_space(name).binary
                    else int(np.bincount(s_cls[~s_single]).argmax()))
        pred = np.where(is_single, single_id, other_id)
        right = scored = 0
        for i in range(len(pick)):  # leave-one-out on the supports, as spinet.selection.leave_one_out skips:
            rest = np.arange(len(pick)) != i  # a support whose class has no other support is not scored (at k = 1
            if not np.any(s_cls[rest] == s_cls[i]) or s_single[rest].all() or not s_single[rest].any():
                continue  # the estimate would rest on the easy non-single classes alone)
            scored += 1
            right += int(PhotonCountRule(rule_name).fit(s_ph[rest], s_single[rest]).predict(s_ph[i : i + 1])[0]
                         == s_single[i])
        est = Estimate(right, scored, f"leave-one-out over {scored} supports").to_dict()
        est.update(rule=rule_name, rule_text=rule.describe())
        return Prediction(truth, pred, rule.score(ph), estimate=est)


KINDS: dict[str, ModelKind] = {k.name: k for k in (Siamese(), Supervised(CNN), Supervised(RESNET), Classical(),
                                                    PhotonCount())}
"""Every model kind of a study, by its ``kind`` name."""

MODEL_KINDS = tuple(KINDS)
"""Model kinds of a study: the Siamese few-shot classifier and the baselines (``photons``: a photon-count
threshold or band fitted on the supports, :class:`spinet.baselines.PhotonCountRule`)."""


def uses_supports(m: ModelSpec) -> bool:
    """True for the models that use supports (Siamese, and the photon-count baseline fitted on them)."""
    return model_kind(m.kind).fewshot


def trains_own(m: ModelSpec) -> bool:
    """True when the model trains networks of its own (not ``embedding``, not the photon baseline)."""
    return m.embedding is None and model_kind(m.kind).trains


def model_kind(name: str, where: str = "kind") -> ModelKind:
    """The kind called ``name`` (ConfigError naming ``where`` for an unknown one)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"{where} must be one of {', '.join(MODEL_KINDS)}, got {name!r}"
                          f"{did_you_mean(name, MODEL_KINDS)}") from None
