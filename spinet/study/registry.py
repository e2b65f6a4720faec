"""The data of a study: its datasets' files (simulated on demand), labels, parts, and the images, photon counts
and features computed from their frames (once per dataset, perturbation and shot)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spisim.cxi import NOT_SINGLE, CXIReader
from spisim.errors import InputFileError

from ..data import file_labels, label_names_for, order_classes, stratified_split
from ..labelspace import LabelSpace, is_binary_names
from ..metrics import is_single_class
from ..records import Perturbation
from .perturb import missing_area_weights, resample_fluence
from .spec import DatasetSpec, PartRef, ProgressFn, Study


def stable_hash(obj: Any, n: int = 12) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``obj`` as sorted JSON (stable across runs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_id(path: Path, simulated: Path) -> list:
    """What identifies a data file in a model's cache key.

    A dataset the study simulated lives in the folder ``simulated`` under a name that holds the hash of its
    manifest, so its name and size suffice: a report folder that is moved or copied keeps its trained models.
    Any other file (real data) is identified by its path, size and modification time.
    """
    st = path.stat()
    if path.resolve().is_relative_to(simulated.resolve()):
        return [path.name, st.st_size]
    return [str(path), st.st_size, int(st.st_mtime)]


@dataclass
class Labelled:
    """The labelled shots of a dataset: file indices (n,), class ids (n,) into the study's classes, and
    positions (into these arrays) of each part."""

    indices: np.ndarray
    classes: np.ndarray
    parts: dict[str, np.ndarray]


@dataclass
class Geometry:
    """A file's detector: frame shape (M, SS, FS), pixel positions (M, SS, FS, 3) m or None, mask (bool, True = bad)."""

    frame_shape: tuple[int, int, int]
    pixel_position: np.ndarray | None
    mask: np.ndarray


class DataRegistry:
    """Datasets of a study: files (simulated on demand into ``cache``), labels, parts, images and features.

    Images (the network input, from the study's preprocessing) and classical features are computed once
    per (dataset, perturbation) and shot, and kept in memory.
    """

    def __init__(self, study: Study, cache: Path, device: str = "cpu", progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.study = study
        self.cache = cache
        self.folder = cache / "data"
        """Where simulated datasets are written, each named by the hash of what made it."""
        self.device = device
        self.progress = progress or (lambda what, n: None)
        self.say = say or (lambda msg: None)
        self._files: dict[tuple, Path] = {}
        self._labelled: dict[str, Labelled] = {}
        self._raw_labels: dict[str, tuple[np.ndarray, list[str]]] = {}
        self._structures: dict[str, np.ndarray | None] = {}
        self._geometry: dict[Path, Geometry] = {}
        self._images: dict[tuple, tuple[torch.Tensor, np.ndarray]] = {}
        self._has_data: dict[tuple, np.ndarray] = {}
        self._features: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.classes: list[str] = []

    # ------------------------------------------------------------------------------------ files

    def _scaled_overrides(self, spec: DatasetSpec, scale: float) -> dict:
        from spisim.manifest import parse_manifest

        m = parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                           overrides=spec.overrides)
        b = m.spec.beam
        beam: dict[str, Any]
        if b.pulse_energy is not None:
            beam = {"pulse_energy": f"{b.pulse_energy * scale!r} J"}
        elif b.photons_per_pulse is not None:
            beam = {"photons_per_pulse": b.photons_per_pulse * scale}
        else:
            beam = {"fluence": f"{b.fluence * scale!r} photons/m^2"}
        over = json.loads(json.dumps(spec.overrides))
        over["beam"] = {**(over.get("beam") or {}), **beam}
        return over

    def file(self, name: str, fluence_scale: float | None = None) -> Path:
        """The dataset's file; a simulated one is made (or found) in the cache, at ``fluence_scale`` × the
        manifest's pulse when given."""
        key = (name, fluence_scale)
        if key in self._files:
            return self._files[key]
        spec = self.study.datasets[name]
        if not spec.simulated:
            assert spec.path is not None
            self._files[key] = spec.path
            return spec.path
        over = spec.overrides if fluence_scale in (None, 1.0) else self._scaled_overrides(spec, float(fluence_scale))
        tag = stable_hash([spec.manifest, spec.manifest_source, over])
        suffix = "" if fluence_scale in (None, 1.0) else f"-x{fluence_scale:g}"
        # datasets simulated from the same manifest (e.g. one relabelled single / not_single) share one file
        mine = stable_hash([spec.manifest, spec.manifest_source, spec.overrides])
        owner = next((n for n, d in self.study.datasets.items() if d.simulated and
                      stable_hash([d.manifest, d.manifest_source, d.overrides]) == mine), name)
        out = self.folder / f"{owner}{suffix}-{tag}.h5"
        if not out.is_file():
            self._simulate(spec, over, out)
        self._files[key] = out
        return out

    def _simulate(self, spec: DatasetSpec, overrides: dict, out: Path) -> None:
        from spisim.generate import generate, parts_dir
        from spisim.manifest import parse_manifest

        out.parent.mkdir(parents=True, exist_ok=True)
        manifest = parse_manifest(spec.manifest or "", source=spec.manifest_source, base_dir=spec.manifest_dir,
                                  overrides=overrides)
        total = manifest.spec.shots
        self.say(f"simulating {total} shots of dataset {spec.name} into {out}")
        done = [0]

        def shots(n: int) -> None:
            done[0] += n
            self.progress(f"simulating {spec.name}: {done[0]}/{total} shots", 0)

        generate(manifest, out, workers=self.study.evaluation.workers,
                 device="auto" if self.device.startswith("cuda") else "cpu", resume=parts_dir(out).exists(),
                 progress=shots)

    def _chunk(self, path: Path) -> int:
        """Shots read at once: the inference batch, at most ~256 MB of frames."""
        n_pixels = int(np.prod(self.geometry(path).frame_shape))
        return max(1, min(self.study.evaluation.batch_size, (256 << 20) // (4 * n_pixels)))

    def geometry(self, path: Path) -> Geometry:
        if path not in self._geometry:
            with CXIReader(path) as r:
                self._geometry[path] = Geometry(r.frame_shape, r.pixel_position, r.mask)
        return self._geometry[path]

    # ------------------------------------------------------------------------------------ labels

    def raw_labels(self, name: str) -> tuple[np.ndarray, list[str]]:
        """(file indices, class names) of the labelled shots of a dataset, before the class filter."""
        if name not in self._raw_labels:
            spec = self.study.datasets[name]
            allowed = label_names_for(self.study.label, [*(self.study.classes or []), *spec.rename])
            with CXIReader(self.file(name)) as r:
                idx, names = file_labels(r, self.study.label, spec.labels, class_names=allowed)
            if spec.max_shots is not None:
                idx, names = idx[: spec.max_shots], names[: spec.max_shots]
            if spec.rename:
                new = [spec.rename.get(n, n) for n in names]
                keep = np.array([n is not None for n in new], dtype=bool)
                idx, names = idx[keep], [n for n in new if n is not None]
            if spec.binary:
                names = ["single" if is_single_class(n) else NOT_SINGLE for n in names]
            self._raw_labels[name] = (idx, list(names))
        return self._raw_labels[name]

    def structures(self, name: str) -> np.ndarray | None:
        """(n,) the particle of each labelled shot of a simulated dataset (its first particle's name; the
        unintended body's kind for unintended hits; "" for no hit), or None where the file names none."""
        if name not in self._structures:
            out = None
            with CXIReader(self.file(name)) as r:
                names = r.structure_names  # written together with the structure labels
                if names:
                    first = r.labels("structure")[:, 0]
                    table = np.array([*names, ""], dtype=object)  # index -1 → ""
                    idx = self._labelled[name].indices
                    out = table[np.where(first[idx] < 0, len(names), first[idx])]
            self._structures[name] = out
        return self._structures[name]

    def prepare(self) -> list[str]:
        """Make every dataset, fix the class list (the study's, or every class found) and split the parts."""
        found: list[str] = []
        for name in self.study.datasets:
            found += self.raw_labels(name)[1]
        self.classes = list(self.study.classes) if self.study.classes else order_classes(found)
        index = {c: i for i, c in enumerate(self.classes)}
        for name, spec in self.study.datasets.items():
            idx, names = self.raw_labels(name)
            keep = np.array([n in index for n in names], dtype=bool)
            idx = idx[keep]
            cls = np.array([index[n] for n, k in zip(names, keep, strict=True) if k], dtype=np.int64)
            if len(idx) == 0:
                raise InputFileError(f"dataset {name}: no labelled shot of the classes {', '.join(self.classes)}")
            parts = {"all": np.arange(len(idx))}
            if spec.test_fraction > 0:
                tr, te = stratified_split(cls, spec.test_fraction, spec.split_seed)
                parts["train"], parts["test"] = tr, te
            self._labelled[name] = Labelled(idx, cls, parts)
        return self.classes

    def labelled(self, name: str) -> Labelled:
        return self._labelled[name]

    def label_space(self, name: str) -> LabelSpace:
        """The label space a dataset's truth labels are scored in: binary (single / not_single) when its labels
        are only single and not_single (a real run labelled single vs rest), else the study's classes."""
        lab = self._labelled[name]
        present = [self.classes[int(c)] for c in np.unique(lab.classes)]
        if is_binary_names(present):
            return LabelSpace.make_binary()
        return LabelSpace(tuple(self.classes), False)

    def pool_counts(self, ref: PartRef) -> dict[str, int]:
        """Shots per class (classes present only) of a dataset part: what a k-shot draw from it can take."""
        lab = self._labelled[ref.dataset]
        counts = np.bincount(lab.classes[self.part(ref)], minlength=len(self.classes))
        return {self.classes[i]: int(n) for i, n in enumerate(counts) if n}

    def key_indices(self, ref: PartRef) -> set[tuple[str, int]]:
        """(resolved file, shot index) of every shot of a part (to tell the same shot in two datasets)."""
        lab = self._labelled[ref.dataset]
        path = str(self.file(ref.dataset).resolve())
        return {(path, int(i)) for i in lab.indices[self.part(ref)]}

    def part(self, ref: PartRef) -> np.ndarray:
        """Positions (into the dataset's labelled shots) of a part."""
        return self._labelled[ref.dataset].parts[ref.part]

    def summary(self) -> list[dict]:
        """Per dataset and part: shots per class (for the report)."""
        rows = []
        for name, lab in self._labelled.items():
            spec = self.study.datasets[name]
            for part, pos in lab.parts.items():
                counts = np.bincount(lab.classes[pos], minlength=len(self.classes))
                rows.append({"dataset": name, "part": part, "file": str(self.file(name)),
                             "simulated": spec.simulated, "shots": int(len(pos)),
                             **{c: int(n) for c, n in zip(self.classes, counts, strict=True)}})
        return rows

    # ------------------------------------------------------------------------------------ frames

    def frames(self, name: str, positions: np.ndarray, perturb: Perturbation) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw frames (n, M, SS, FS) float32 of labelled shots ``positions``, perturbed, and per-pixel weights
        (n, M, SS, FS) (0 = lost detector area) or None."""
        lab = self._labelled[name]
        scale = perturb.value if perturb.key == "fluence_scale" else None
        simulated = self.study.datasets[name].simulated
        path = self.file(name, scale if simulated else None)
        file_idx = lab.indices[positions]
        with CXIReader(path) as r:
            frames = r.frames(file_idx)
        if scale is not None and not simulated and scale != 1.0:
            frames = resample_fluence(frames, scale, file_idx, self.study.preprocess.photon_scale)
        weight = None
        if perturb.key == "missing_fraction" and perturb.value:
            geo = self.geometry(path)
            weight = missing_area_weights(geo.frame_shape, geo.pixel_position, float(perturb.value), file_idx)
        return frames, weight

    def images(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> torch.Tensor:
        """Network inputs (n, 1, S, S) of labelled shots ``positions`` (computed once, then kept)."""
        from ..preprocess import Preprocessor

        perturb = perturb or Perturbation()
        key = (name, perturb)
        lab = self._labelled[name]
        if key not in self._images:
            s = self.study.preprocess.input_size
            self._images[key] = (torch.zeros(len(lab.indices), 1, s, s), np.zeros(len(lab.indices), bool))
        store, done = self._images[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            pre = Preprocessor.from_geometry(self.study.preprocess, geo.frame_shape, geo.pixel_position, geo.mask)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                with torch.no_grad():
                    x = torch.from_numpy(frames)
                    if weight is None:
                        raw, valid = pre.assemble_valid(x)
                    else:
                        raw, valid = pre.assemble_weighted(x, torch.from_numpy(weight))
                    img = pre.normalise(raw, valid)
                store[torch.from_numpy(chunk)] = img
                self._has_data.setdefault(key, np.ones(len(lab.indices), bool))[chunk] = (
                    valid.flatten(1).any(dim=1).numpy())
                done[chunk] = True
        return store[torch.from_numpy(np.asarray(positions, dtype=np.int64))]

    def has_data(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> np.ndarray:
        """(n,) bool: the shot has a finite unmasked pixel where the network looks (else it is invalid: never
        given a class, never scored). Computed with the images."""
        perturb = perturb or Perturbation()
        self.images(name, positions, perturb)
        return self._has_data[(name, perturb)][np.asarray(positions, dtype=np.int64)]

    def photons(self, name: str, positions: np.ndarray, perturb: Perturbation | None = None) -> np.ndarray:
        """Photons per shot (n,) of labelled shots ``positions`` (:func:`spinet.baselines.shot_photons`: good,
        finite pixels, in photons after ``preprocess.photon_scale``; lost area left out)."""
        from ..baselines import shot_photons

        perturb = perturb or Perturbation()
        key = ("photons", name, perturb)
        lab = self._labelled[name]
        if key not in self._features:
            self._features[key] = (np.full(len(lab.indices), np.nan), np.zeros(len(lab.indices), bool))
        store, done = self._features[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                store[chunk] = shot_photons(frames, geo.mask, self.study.preprocess.photon_scale, weight)
                done[chunk] = True
        return store[np.asarray(positions, dtype=np.int64)]

    def features(self, name: str, positions: np.ndarray, perturb: Perturbation, classifier: Any) -> np.ndarray:
        """Classical features (n, F) of labelled shots ``positions`` with ``classifier``'s ring edges."""
        key = (name, perturb, tuple(np.round(classifier.edges, 12)), classifier.thresholds)
        lab = self._labelled[name]
        if key not in self._features:
            self._features[key] = (np.full((len(lab.indices), 0), np.nan), np.zeros(len(lab.indices), bool))
        store, done = self._features[key]
        todo = np.asarray([p for p in np.unique(positions) if not done[p]], dtype=np.int64)
        if len(todo):
            path = self.file(name, perturb.value if perturb.key == "fluence_scale" else None)
            geo = self.geometry(path)
            ext = classifier.extractor(geo.frame_shape, geo.pixel_position, geo.mask,
                                       self.study.preprocess.photon_scale)
            if store.shape[1] == 0:
                store = np.full((len(lab.indices), len(ext.names)), np.nan)
                self._features[key] = (store, done)
            bs = self._chunk(path)
            for i in range(0, len(todo), bs):
                chunk = todo[i : i + bs]
                frames, weight = self.frames(name, chunk, perturb)
                store[chunk] = ext(frames, weight)
                done[chunk] = True
        return store[np.asarray(positions, dtype=np.int64)]
