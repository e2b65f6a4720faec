"""Running a study: the plan of trainings and evaluations, the k each really takes, training through the model
kinds, scoring on every test variant, and the records (:class:`spinet.records.StudyResults`).

Seeds vary model initialisation, batches, augmentation and the choice of the k shots; dataset splits and
simulated datasets are the same for every seed, so the spread measures the training and support choice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spisim.backend import resolve_device
from spisim.errors import ConfigError

from ..config import AugmentConfig
from ..data import pick_per_class, stratified_split
from ..labelspace import class_counts_text
from ..metrics import ClassificationMetrics, classification_metrics, confusion_by_group
from ..records import SUPPORT_SOURCE, Perturbation, Prediction, RunRecord, StudyResults, ThroughputRecord
from .fields import augment_config
from .human import human_records
from .kinds import model_kind, trains_own, uses_supports
from .registry import DataRegistry, file_id, stable_hash
from .spec import ModelSpec, PartRef, ProgressFn, SourceSpec, Study, TestVariant


@dataclass
class TrainJob:
    """One model trained on one source for one seed (and one k when the source takes k shots per class)."""

    model: ModelSpec
    source: SourceSpec
    seed: int
    k: int | None

    @property
    def label(self) -> str:
        kk = f", k={self.k}" if self.k is not None else ""
        return f"{self.model.name} on {self.source.name} (seed {self.seed}{kk})"


@dataclass
class Trained:
    """A trained model ready to score shots."""

    job: TrainJob
    kind: str
    obj: Any
    n_train: int
    seconds: float
    log: list[dict]
    folder: Path | None = None
    """Where the model is cached (a Siamese model's best.pt and kept epochs/ live there)."""


class StudyRunner:
    """Run a study into ``out`` (cache under ``out/cache``); :meth:`run` returns :class:`StudyResults`.

    Args:
        study: a validated study.
        out: the report folder.
        device: overrides ``evaluation.device``.
        progress: called with (what, steps done) — :meth:`n_steps` steps in all.
        say: called with one-line messages.
        fresh: retrain models even when the cache holds them.
    """

    def __init__(self, study: Study, out: str | Path, *, device: str | None = None, progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None, fresh: bool = False) -> None:
        self.study = study
        self.out = Path(out)
        self.cache = self.out / "cache"
        self.device = resolve_device(device or study.evaluation.device, library="torch")
        self.progress = progress or (lambda what, n: None)
        self.say = say or (lambda msg: None)
        self.fresh = fresh
        self.data = DataRegistry(study, self.cache, self.device, self.progress, self.say)
        self.invalid: dict[str, int] = {}
        self.untrainable: dict[str, int] = {}  # training part -> shots left out: no finite pixel where models look
        """Test variant → shots left out of its scores because their frame has no finite pixel."""
        self._networks: dict[tuple, Trained] = {}
        """(model, source, seed, k) → trained networks that other models score (embedding) or start from (init)."""
        self.bundles: dict[Path, Any] = {}
        """Kept checkpoints loaded for selection."""

    # -------------------------------------------------------------------------------- the plan

    def jobs(self) -> list[TrainJob]:
        """Every training run, in order (seed, model, source, k)."""
        s = self.study
        out = []
        for seed in s.seeds:
            for m in s.models:
                if not model_kind(m.kind).trains:  # fitted on each test's supports: no training source
                    out.append(TrainJob(m, SourceSpec(SUPPORT_SOURCE, []), seed, None))
                    continue
                for src in s.sources.values():
                    if m.sources is not None and src.name not in m.sources:
                        continue
                    for k in (s.k_shots if src.k_dependent else [None]):
                        out.append(TrainJob(m, src, seed, k))
        return out

    def evaluations(self, job: TrainJob) -> list[tuple[TestVariant, int | None]]:
        """(test variant, k) scored for a training run."""
        ks: list[int | None]
        if job.k is not None:
            ks = [job.k]
        elif uses_supports(job.model):
            ks = list(self.study.k_shots)
        else:
            ks = [None]
        return [(v, k) for v in self.study.variants() for k in ks]

    def n_steps(self) -> int:
        """Progress steps of :meth:`run`: simulated datasets, trainings and evaluations."""
        sims = sum(1 for d in self.study.datasets.values() if d.simulated)
        sims += sum(len(t.sweep_values) for t in self.study.tests.values()
                    if t.sweep_key == "fluence_scale" and self.study.datasets[t.data.dataset].simulated)
        jobs = self.jobs()
        return sims + len(jobs) + sum(len(self.evaluations(j)) for j in jobs)

    def describe(self) -> list[str]:
        """The plan in words (``spi evaluate --dry-run``)."""
        s = self.study
        lines = [f"study {s.name}: {len(s.models)} models × {len(s.sources)} training sources × {len(s.seeds)} seeds; "
                 f"k = {', '.join(map(str, s.k_shots))}"]
        for d in s.datasets.values():
            if d.simulated:
                over = ", ".join(f"{k}={v}" if not isinstance(v, dict | list) else k for k, v in d.overrides.items())
                what = f"simulated from {d.manifest_source}" + (f" (set: {over})" if over else "")
            else:
                what = f"{d.path}" + (f" with labels {d.labels}" if d.labels else "")
            split = f", split {1 - d.test_fraction:g}/{d.test_fraction:g} train/test" if d.test_fraction else ""
            lines.append(f"dataset {d.name}: {what}{split}")
        for src in s.sources.values():
            comps = ", ".join(f"{c.part}" + (f" ({c.per_class} per class)" if c.per_class else "")
                              + (f" ×{c.weight:g}" if c.weight != 1 else "") for c in src.components)
            lines.append(f"source {src.name}: {comps}")
        for v in s.variants():
            support = f", supports from {v.spec.support}" if v.spec.support else ""
            lines.append(f"test {v.name}: {v.spec.data}{support}")
        for m in s.models:
            if m.embedding is not None:
                lines.append(f"model {m.name}: the networks of {m.embedding}, rule {m.rule}")
        jobs = self.jobs()
        n_train = sum(1 for j in jobs if trains_own(j.model))
        lines.append(f"{n_train} trainings, {sum(len(self.evaluations(j)) for j in jobs)} evaluations")
        return lines

    # -------------------------------------------------------------------------------- k and its pools

    def pool_min(self, ref: PartRef) -> int:
        """The fewest shots any class present in a part holds (the largest k a balanced draw can take)."""
        return min(self.data.pool_counts(ref).values())

    def job_k(self, job: TrainJob) -> int | None:
        """Shots per class a ``per_class: k`` source really takes: the asked k, at most what the smallest class
        of each such part holds (every part takes the same k, so that k stays one number)."""
        if job.k is None:
            return None
        caps = [self.pool_min(c.part) for c in job.source.components if c.per_class == "k"]
        return min([job.k, *caps])

    def support_k(self, job: TrainJob, v: TestVariant, k: int | None) -> int | None:
        """Supports per class drawn for a Siamese evaluation at the study's ``k`` (None for other models): k
        (or the job's real k), at most what the smallest class of the test's support part holds."""
        if not uses_supports(job.model) or k is None:
            return None
        kk = self.job_k(job) if job.k is not None else k
        assert v.spec.support is not None and kk is not None
        return min(kk, self.pool_min(v.spec.support))

    def record_k(self, job: TrainJob, v: TestVariant, k: int | None) -> int | None:
        """The k a record states: the real training k of a ``per_class: k`` source, else the real support k."""
        if job.k is not None:
            return self.job_k(job)
        return self.support_k(job, v, k)

    def k_notes(self) -> list[str]:
        """One line per pool that holds fewer shots of a class than a k of the study asks."""
        s = self.study
        notes = []
        seen: set[str] = set()
        for src in s.sources.values():
            for c in src.components:
                if c.per_class != "k" or str(c.part) in seen:
                    continue
                seen.add(str(c.part))
                counts = self.data.pool_counts(c.part)
                cap = min(counts.values())
                over = [k for k in s.k_shots if k > cap]
                if over:
                    notes.append(f"{c.part} holds {class_counts_text(counts)}: k = {', '.join(map(str, over))} of the "
                                 f"training sources that take k shots per class is k = {cap} (every class the same)")
        if any(uses_supports(m) for m in s.models):
            for t in s.tests.values():
                if t.support is None:
                    continue
                counts = self.data.pool_counts(t.support)
                cap = min(counts.values())
                over = [k for k in s.k_shots if k > cap]
                if over:
                    notes.append(f"test {t.name}: its support part {t.support} holds {class_counts_text(counts)}: "
                                 f"k = {', '.join(map(str, over))} supports per class asked, {cap} drawn and shown "
                                 f"as k = {cap}")
        return notes

    # -------------------------------------------------------------------------------- training data

    def _training_parts(self, job: TrainJob) -> tuple[list[tuple[str, np.ndarray, float]],
                                                      list[tuple[str, np.ndarray]]]:
        """(training [(dataset, positions, weight)], validation [(dataset, positions)]) of a job."""
        train, val = [], []
        vf = self.study.evaluation.val_fraction
        for i, c in enumerate(job.source.components):
            pos = self.data.part(c.part)
            ok = self.data.has_data(c.part.dataset, pos)
            if not ok.all():  # a frame the detector lost is never a training shot (spinet.data refuses it)
                self.untrainable[str(c.part)] = int((~ok).sum())
                pos = pos[ok]
            lab = self.data.labelled(c.part.dataset)
            per = self.job_k(job) if c.per_class == "k" else c.per_class
            if per is not None:
                pick = pick_per_class(lab.classes[pos], int(per), _seed(job.seed, "kshot", str(c.part)))
                train.append((c.part.dataset, pos[pick], c.weight))
                continue
            if vf > 0:
                tr, va = stratified_split(lab.classes[pos], vf, _seed(job.seed, "val", i))
                train.append((c.part.dataset, pos[tr], c.weight))
                if len(va):
                    val.append((c.part.dataset, pos[va]))
            else:
                train.append((c.part.dataset, pos, c.weight))
        return train, val

    def _cache_key(self, job: TrainJob, train: list, val: list) -> str:
        s = self.study
        parts = []
        for name, pos, w in train:
            lab = self.data.labelled(name)
            parts.append([file_id(self.data.file(name), self.data.folder), stable_hash(lab.indices[pos].tolist()),
                          stable_hash(lab.classes[pos].tolist()), w])
        vparts = [[name, stable_hash(self.data.labelled(name).indices[pos].tolist())] for name, pos in val]
        # min_ratio, adapt_bn and select only change how predictions are read, never training: left out, as unset
        # keys are, so that models trained before these keys existed keep their cache entries
        model = {k: v for k, v in job.model.__dict__.items()
                 if not (k in ("embedding", "unlabelled", "init") and v is None)
                 and k not in ("min_ratio", "adapt_bn", "select")}
        if job.model.unlabelled is not None:
            u = job.model.unlabelled
            model["unlabelled"] = [file_id(self.data.file(u.dataset), self.data.folder),
                                   stable_hash(self.data.labelled(u.dataset).indices[self.data.part(u)].tolist())]
        init = self.init_network(job)
        if init is not None:
            assert init.folder is not None
            model["init"] = init.folder.name
        return stable_hash({"model": model, "seed": job.seed, "k": job.k, "train": parts, "val": vparts,
                      "classes": self.data.classes, "preprocess": s.preprocess.__dict__, "augment": s.augment.__dict__,
                      "version": _version()}, 16)

    def _init_source(self, name: str) -> str:
        """The training source whose network a model ``init: name`` starts from: that model's first source."""
        ref = next(m for m in self.study.models if m.name == name)
        return (ref.sources or list(self.study.sources))[0]

    def init_network(self, job: TrainJob) -> Trained | None:
        """The trained network a job starts from (``init``), or None."""
        if job.model.init is None:
            return None
        key = (job.model.init, self._init_source(job.model.init), job.seed, None)
        if key not in self._networks:
            raise ConfigError(f"models.{job.model.name}.init: {job.model.init} has no network trained on "
                              f"{key[1]} for seed {job.seed} (its first source must take whole parts, not k shots)")
        return self._networks[key]

    def augment(self, model: ModelSpec) -> AugmentConfig:
        """The study's augmentation with a model's ``augment`` set on top."""
        return augment_config(self.study.augment.__dict__, model.augment, f"models.{model.name}.augment")

    # -------------------------------------------------------------------------------- training

    def train(self, job: TrainJob) -> Trained:
        """Train (or load from the cache) one model."""
        train, val = self._training_parts(job)
        n_train = int(sum(len(p) for _, p, _ in train))
        key = self._cache_key(job, train, val)
        folder = self.cache / "models" / f"{job.model.name}-{job.source.name}-s{job.seed}" \
            f"{'' if job.k is None else f'-k{job.k}'}-{key}"
        t0 = time.perf_counter()
        obj, log = model_kind(job.model.kind).train(self, job, train, val, folder)
        return Trained(job, job.model.kind, obj, n_train, time.perf_counter() - t0, log, folder)

    # -------------------------------------------------------------------------------- scoring

    def _test_positions(self, v: TestVariant) -> np.ndarray:
        """Positions of the scored shots: the test part without any shot that is also in its support part (the
        same file and index, e.g. two datasets on one file), at most ``max_test_shots`` of them."""
        pos = self.data.part(v.spec.data)
        if v.spec.support is not None and v.spec.support.dataset != v.spec.data.dataset:
            supports = self.data.key_indices(v.spec.support)
            lab = self.data.labelled(v.spec.data.dataset)
            path = str(self.data.file(v.spec.data.dataset).resolve())
            pos = pos[np.array([(path, int(i)) not in supports for i in lab.indices[pos]], dtype=bool)]
        cap = self.study.evaluation.max_test_shots
        if cap is not None and len(pos) > cap:
            rng = np.random.default_rng([0x7E57, len(pos)])
            pos = np.sort(rng.choice(pos, cap, replace=False))
        return pos

    def score(self, trained: Trained, v: TestVariant, k: int | None,
              cache: dict) -> tuple[ClassificationMetrics, Prediction]:
        """Score a trained model on a test variant with k supports per class (Siamese; k at most what the
        smallest class of the support part holds, see :meth:`support_k`) and keep its predictions. The metrics
        are in the label space of the test labels (:meth:`DataRegistry.label_space`): for a test labelled
        single / not_single every other answer counts as not_single."""
        name = v.spec.data.dataset
        pos = self._test_positions(v)
        ok = self.data.has_data(name, pos, v.perturb)
        if not ok.all():
            self.invalid[v.name] = int((~ok).sum())
            pos = pos[ok]
        truth = self.data.labelled(name).classes[pos]
        classes = self.data.classes
        prediction = model_kind(trained.kind).predict(self, trained, v, k, cache, name, pos, truth)
        structures = self.data.structures(name)
        if structures is not None:
            prediction.structure = structures[pos]
        space = self.data.label_space(name)
        if space.binary:
            prediction.truth = space.map_ids(prediction.truth, classes)
            prediction.pred = space.map_ids(prediction.pred, classes)
            if prediction.support_classes is not None:
                prediction.support_classes = space.map_ids(prediction.support_classes, classes)
            prediction.class_names = list(space.classes)
            return classification_metrics(prediction.truth, prediction.pred, list(space.classes)), prediction
        return classification_metrics(prediction.truth, prediction.pred, classes), prediction

    def support_pick(self, trained: Trained, v: TestVariant, k: int | None) -> tuple[str, np.ndarray, np.ndarray]:
        """(support dataset, positions, class ids) of the k supports per class of a test (the same shots for every
        model of a seed)."""
        assert v.spec.support is not None
        spos = self.data.part(v.spec.support)
        slab = self.data.labelled(v.spec.support.dataset)
        seed = _seed(trained.job.seed, "kshot", str(v.spec.support))
        pick = spos[pick_per_class(slab.classes[spos], int(self.support_k(trained.job, v, k) or 1), seed)]
        return v.spec.support.dataset, pick, slab.classes[pick]

    def throughput(self, trained: Trained, v: TestVariant) -> ThroughputRecord | None:
        """Time predictions from raw frames (preprocessing or features included) on the first test shots."""
        from ..metrics import measure_throughput

        n = self.study.evaluation.throughput_shots
        if n == 0:
            return None
        name = v.spec.data.dataset
        predict = model_kind(trained.kind).predictor(self, trained, v, self.data.geometry(self.data.file(name)))
        if predict is None:
            return None
        pos = self._test_positions(v)[:n]
        frames, _ = self.data.frames(name, pos, Perturbation())
        bs = self.study.evaluation.batch_size
        batches = [frames[i : i + bs] for i in range(0, len(frames), bs)]
        t = measure_throughput(predict, batches, min_seconds=0.2)
        return ThroughputRecord(trained.job.model.name, trained.kind, trained.job.source.name, self.device,
                                torch.get_num_threads(), t.shots_per_s, t.seconds_per_batch, t.batch_size, t.n_shots)

    # -------------------------------------------------------------------------------- the whole study

    def simulate(self) -> None:
        """Make every simulated dataset (and the fluence points of a fluence sweep) in the cache."""
        s = self.study
        for name, spec in s.datasets.items():
            if spec.simulated:
                self.progress(f"simulating {name}", 0)
                self.data.file(name)
                self.progress(f"simulated {name}", 1)
        for t in s.tests.values():
            if t.sweep_key == "fluence_scale" and s.datasets[t.data.dataset].simulated:
                for value in t.sweep_values:
                    self.progress(f"simulating {t.data.dataset} at fluence ×{value:g}", 0)
                    self.data.file(t.data.dataset, value)
                    if t.support is not None and s.datasets[t.support.dataset].simulated:
                        self.data.file(t.support.dataset, value)
                    self.progress("simulated", 1)

    def run(self) -> StudyResults:
        """Simulate, train, score; returns the results (the report is written by :mod:`spinet.report`)."""
        from datetime import UTC, datetime

        t0 = time.perf_counter()
        self.cache.mkdir(parents=True, exist_ok=True)
        self.simulate()
        classes = self.data.prepare()
        self.say(f"classes: {', '.join(classes)}")
        human = human_records(self.study, classes)  # checked before training: a class unknown to the study stops here
        notes = self.k_notes()
        for line in notes:
            self.say(f"warning: {line}")
        acc = _Accumulated()
        for job in self.jobs():
            evals = self.evaluations(job)
            todo = self._todo(job, evals, acc)
            if not todo:  # every k of this job draws what an earlier job drew: nothing new to train
                self.progress(f"skipped {job.label}: the same shots as a smaller k", 1 + len(evals))
                continue
            self.progress(f"training {job.label}", 0)
            trained = self._trained(job)
            acc.logs[job.label] = trained.log
            self.progress(f"trained {job.label}", 1 + len(evals) - len(todo))
            self._score_job(trained, todo, acc)
            self._time_job(trained, acc)
        for part, n_bad in self.untrainable.items():
            notes.append(f"{part}: {n_bad} shots have no finite pixel where the models look: never trained on")
        for test, n_bad in self.invalid.items():
            notes.append(f"test {test}: {n_bad} shots have no finite pixel where the models look: never scored")
        records = self._ordered(acc) + human
        return StudyResults(self.study, classes, records, acc.predictions, acc.throughput, self.data.summary(),
                            acc.logs, time.perf_counter() - t0, self.device,
                            datetime.now(UTC).isoformat(timespec="seconds"), notes)

    def _todo(self, job: TrainJob, evals: list[tuple[TestVariant, int | None]],
              acc: _Accumulated) -> list[tuple[TestVariant, int | None, int | None, tuple]]:
        """(test variant, study k, record k, record key) a job still has to score: an evaluation whose record k
        an earlier one of the same model, source, test and seed already drew only adds its k to that record."""
        todo = []
        for v, k in evals:
            rk = self.record_k(job, v, k)
            key = (job.model.name, job.source.name, v.name, rk, job.seed)
            if key in acc.asked:  # the same shots as an earlier k: that record answers this k too
                if k is not None:
                    acc.asked[key].append(int(k))
                continue
            acc.asked[key] = [] if k is None else [int(k)]
            todo.append((v, k, rk, key))
        return todo

    def _trained(self, job: TrainJob) -> Trained:
        """The job's model: the networks of the model it takes its embedding from, nothing for a kind fitted on the
        supports, else trained (or loaded) and kept when a later model uses its networks."""
        s = self.study
        net_key = (job.source.name, job.seed, self.job_k(job))
        if job.model.embedding is not None:
            ref = self._networks[(job.model.embedding, *net_key)]
            return Trained(job, ref.kind, ref.obj, ref.n_train, ref.seconds, ref.log, ref.folder)
        if not model_kind(job.model.kind).trains:
            return Trained(job, job.model.kind, None, 0, 0.0, [])
        trained = self.train(job)
        shared = {m.embedding for m in s.models if m.embedding is not None} | {
            m.init for m in s.models if m.init is not None}
        if job.model.name in shared:
            self._networks[(job.model.name, *net_key)] = trained
        return trained

    def _score_job(self, trained: Trained, todo: list, acc: _Accumulated) -> None:
        """Score a trained model on its evaluations; keep the first seed's predictions at the plot k."""
        job = trained.job
        cache: dict = {}
        for v, k, rk, key in todo:
            self.progress(f"scoring {job.model.name}/{job.source.name} on {v.name}" + (f", k={rk}" if rk else ""), 0)
            metrics, pred = self.score(trained, v, k, cache)
            names = pred.class_names or self.data.classes
            rec = RunRecord(job.model.name, job.model.kind, job.source.name, v.name, v.spec.name,
                            v.perturb.key, v.perturb.value, rk, job.seed, metrics, trained.n_train,
                            trained.seconds, by_structure=None if pred.structure is None else
                            confusion_by_group(pred.structure, pred.truth, pred.pred, len(names)),
                            single_recall_at_98=_recall_at_98(pred, names), estimate=pred.estimate)
            acc.records.append(rec)
            acc.done[key] = rec
            if job.seed == self.study.seeds[0] and (rk is None or rk == self._plot_record_k(job, v)):
                if not model_kind(trained.kind).embeds:
                    pred.embeddings = None
                pred.k = rk
                acc.predictions[(job.model.name, job.source.name, v.name, rk)] = pred
            self.progress("scored", 1)

    def _time_job(self, trained: Trained, acc: _Accumulated) -> None:
        """The throughput of a model (first seed, the plot k, its first unperturbed test), once per source."""
        s, job = self.study, trained.job
        variants = s.variants()
        plot_job = job.k is None or self.job_k(job) == self.job_k(replace(job, k=s.plot_k))
        if job.seed == s.seeds[0] and plot_job and variants:
            plain = s.plain_variants() or variants
            rec = self.throughput(trained, plain[0])
            if rec is not None and not any(r.model == rec.model and r.source == rec.source for r in acc.throughput):
                acc.throughput.append(rec)

    def _ordered(self, acc: _Accumulated) -> list[RunRecord]:
        """The records with the study's k values each answers, in the order model, source, test, k, seed."""
        s = self.study
        for key, rec in acc.done.items():
            ks = acc.asked[key]
            rec.k_asked = ks if ks != ([] if rec.k is None else [rec.k]) else []
        m_order = {m.name: i for i, m in enumerate(s.models)}
        s_order = {n: i for i, n in enumerate([*s.sources, SUPPORT_SOURCE])}
        v_order = {v.name: i for i, v in enumerate(s.variants())}
        return sorted(acc.records, key=lambda r: (m_order[r.model], s_order[r.source], v_order[r.test], r.k or 0,
                                                  r.seed))

    def _plot_record_k(self, job: TrainJob, v: TestVariant) -> int | None:
        """The record k that stands for the study's plot k in a job's evaluations of ``v``."""
        if job.k is not None:
            return self.job_k(replace(job, k=self.study.plot_k))
        return self.support_k(job, v, self.study.plot_k)


def _seed(seed: int, *tags: Any) -> int:
    """A seed derived from the study seed and tags (stable across runs and Python versions)."""
    h = hashlib.sha256(json.dumps([seed, *tags]).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _recall_at_98(pred: Prediction, classes: Sequence[str]) -> float:
    """Single-hit recall at 98 % precision from a prediction's single-hit score (NaN without a score)."""
    from ..metrics import recall_at_precision, single_hit_pr_curve

    if pred.single_score is None:
        return float("nan")
    return recall_at_precision(single_hit_pr_curve(pred.truth, pred.single_score, classes))


def _version() -> str:
    from spisim import __version__

    return __version__


@dataclass
class _Accumulated:
    """What :meth:`StudyRunner.run` collects."""

    records: list[RunRecord] = field(default_factory=list)
    predictions: dict[tuple, Prediction] = field(default_factory=dict)
    throughput: list[ThroughputRecord] = field(default_factory=list)
    logs: dict[str, list[dict]] = field(default_factory=dict)
    done: dict[tuple, RunRecord] = field(default_factory=dict)
    asked: dict[tuple, list[int]] = field(default_factory=dict)
