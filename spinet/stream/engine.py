"""The classifier of a stream: raw frames in (any integer or float dtype), classes, distances and scores out.

:class:`FrameClassifier` runs the model's preprocessing for the stream's detector and the embedding network
on a whole batch, on the CPU or a GPU (``torch``) or in ONNX Runtime on the CPU (``onnx``), then the
few-shot rule against the support set (:class:`spinet.fewshot.FewShotClassifier`, ratio test included).

Frames are handed over in the dtype they arrived in (uint16/int32 ADU, float16 or float32). Only the pixels
the preprocessing reads are taken from each frame (:func:`pixel_subset`), still in that dtype, and they are
converted to float32 where the preprocessing runs: on the GPU for ``--device cuda`` (less to copy), in the
preprocessing graph on the CPU otherwise (ONNX Runtime: converted on the host, which is its device).

The score of a shot is the single-hit score of the evaluation harness, ln(d_other / d_single)
(:func:`spinet.fewshot.log_distance_ratio`; > 0 where a single-hit class is nearest) when the support has a
single-hit class (``single`` or ``<structure>/single``); otherwise ln(d_second / d_nearest), how surely the
nearest class wins (≥ 0).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, InputFileError

from ..checkpoint import ModelBundle
from ..data import UNKNOWN
from ..export import InferenceModule, export_onnx, inference_module
from ..fewshot import FewShotClassifier, log_distance_ratio
from ..inference import SupportSet
from ..preprocess import Preprocessor

RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class Geometry:
    """A detector: frame shape (M, SS, FS), pixel positions (M, SS, FS, 3) m or None, mask (M, SS, FS) bool."""

    frame_shape: tuple[int, int, int]
    pixel_position: np.ndarray | None
    mask: np.ndarray | None
    source: str

    @classmethod
    def from_file(cls, path: str | Path) -> Geometry:
        """The detector of a CXI/HDF5 file (``spi simulate`` output, a converted run, a support file)."""
        with CXIReader(path) as r:
            return cls(tuple(int(v) for v in r.frame_shape), r.pixel_position, r.mask, str(path))


class SubsetPreprocessor(Preprocessor):
    """The preprocessing of :class:`spinet.preprocess.Preprocessor` for frames cut down to the P raw pixels it
    reads (frames (B, 1, 1, P)), with the assembly done as one pass over those pixels: each raw pixel goes to
    exactly one output pixel (nearest-pixel binning), so the gather-and-sum of the K-wide table is an
    ``index_add`` of the pixels into their output pixels (a non-finite value is left out of its pixel, as
    there). The images equal the full preprocessing's to float rounding (the sums run in the same order).

    Args:
        base: the full preprocessing.
        used: (P,) sorted flat indices of the raw pixels it reads.
    """

    def __init__(self, base: Preprocessor, used: np.ndarray) -> None:
        k = base.k
        index = base.index.detach().cpu().numpy().reshape(-1, k)
        real = base.entry_weight.detach().cpu().numpy() > 0
        remapped = np.where(real, np.searchsorted(used, index), 0)
        super().__init__(torch.from_numpy(remapped), base.count.detach().cpu(), (1, 1, len(used)), base.size,
                         scale=base.scale, photon_scale=base.photon_scale, standardize=base.standardize)
        target = np.zeros(len(used), dtype=np.int64)
        rows = np.broadcast_to(np.arange(len(index))[:, None], index.shape)
        target[remapped[real]] = rows[real]
        self.register_buffer("target", torch.from_numpy(target))

    def _gather(self, flat: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) → (sums (B, S*S), weights (B, S*S)), as :meth:`Preprocessor._gather`: a non-finite value is
        left out like a masked pixel (weight 0); ``weight`` (B, P) in [0, 1] weights each pixel."""
        finite = torch.nan_to_num((flat - flat) + 1.0, nan=0.0, posinf=0.0, neginf=0.0)
        w = finite if weight is None else finite * weight
        values = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0) * w
        num = flat.new_zeros(flat.shape[0], self.size * self.size).index_add_(1, self.target, values)
        den = flat.new_zeros(flat.shape[0], self.size * self.size).index_add_(1, self.target, w)
        return num, den


def pixel_subset(pre: Preprocessor) -> tuple[np.ndarray, SubsetPreprocessor]:
    """The raw pixels a preprocessing reads, and the same preprocessing for frames cut down to them.

    A crop reads a fraction of a large detector (a 384 × 384 crop of a 1 Mpixel pnCCD: 14 %); picking those
    pixels first, in the frames' own dtype, saves copying and converting the rest (and, on a GPU, moving it).

    Returns:
        (flat indices (P,) int64 into a frame (M, SS, FS), sorted; a :class:`SubsetPreprocessor`).
    """
    index = pre.index.detach().cpu().numpy().reshape(-1, pre.k)
    real = pre.entry_weight.detach().cpu().numpy() > 0
    used = np.unique(index[real]).astype(np.int64)
    return used, SubsetPreprocessor(pre, used)


def single_classes(class_names: list[str]) -> np.ndarray:
    """(C,) bool: the single-hit classes (``single`` or ``<structure>/single``)."""
    return np.array([n == "single" or n.endswith("/single") for n in class_names], dtype=bool)


@dataclass
class BatchResult:
    """Results of a batch of B shots.

    Attributes:
        pred: (B,) class ids, −1 = unknown.
        labels: B class names (``unknown`` for −1).
        distances: (B, C) squared embedding distances under the rule.
        scores: (B,) single-hit score (module doc).
    """

    pred: np.ndarray
    labels: list[str]
    distances: np.ndarray
    scores: np.ndarray


class FrameClassifier:
    """Frames (B, M, SS, FS) → :class:`BatchResult`.

    Args:
        bundle: the trained model (on ``device`` for the torch runtime).
        support: the embedded support set (defines the classes).
        geometry: the stream's detector (the preprocessing is rebuilt for it where it is not the training one).
        rule, threshold, min_ratio: the few-shot rule, unknown threshold and ratio test
            (:class:`spinet.fewshot.FewShotClassifier`).
        runtime: ``torch`` or ``onnx`` (ONNX Runtime, CPU execution provider; the model with its
            preprocessing is exported to a temporary ONNX file).
        threads: CPU threads of ONNX Runtime (None: its default); torch uses ``torch.get_num_threads()``.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        support: SupportSet,
        geometry: Geometry,
        *,
        rule: str = "mean",
        threshold: float | None = None,
        min_ratio: float | None = None,
        runtime: str = "torch",
        threads: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = runtime
        self.device = bundle.device
        if runtime == "onnx" and self.device.type != "cpu":
            raise ConfigError("--runtime onnx runs on the CPU: use --device cpu (or --runtime torch on the GPU)")
        self.frame_shape = geometry.frame_shape
        pre: Preprocessor = bundle.preprocessor_for(geometry.frame_shape, geometry.pixel_position, geometry.mask)
        self.used, reduced = pixel_subset(pre)
        self.preprocessor = reduced.to(self.device)
        self.module = inference_module(bundle, self.preprocessor).eval()
        if runtime == "torch" and self.device.type == "cpu":
            # channels-last convolutions: 1.3–1.7× faster on this project's CPUs (bench/bench_stream.py); a copy,
            # so the bundle's own network is left as it was
            embedder = copy.deepcopy(bundle.model).to(memory_format=torch.channels_last)
            self.module = InferenceModule(self.preprocessor, embedder).eval()
        self.class_names = list(support.class_names)
        self.fewshot = FewShotClassifier(support.embeddings.to(self.device), support.classes, self.class_names, rule,
                                         threshold, min_ratio=min_ratio)
        self.answers_unknown = threshold is not None or (min_ratio is not None and min_ratio > 1)
        single = single_classes(self.class_names)
        self._single = single if single.any() and not single.all() else None
        self._session = None
        if runtime == "onnx":
            self._session = self._onnx_session(bundle, threads)

    def _onnx_session(self, bundle: ModelBundle, threads: int | None):  # noqa: ANN202
        import onnxruntime as ort

        cpu_bundle = dataclasses.replace(bundle, preprocessor=self.preprocessor.cpu())
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(cpu_bundle, Path(tmp) / "stream.onnx")
            return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    @property
    def output_names(self) -> list[str]:
        """Class names a shot can get (``unknown`` last where the rule can answer it)."""
        return self.class_names + ([UNKNOWN] if self.answers_unknown else [])

    def gather(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """The pixels the preprocessing reads, (B, 1, 1, P) in the frames' own dtype (native byte order), from
        B frames (M, SS, FS) (a list, or an array (B, M, SS, FS))."""
        out = []
        for f in frames:
            f = np.asarray(f)
            if f.shape != tuple(self.frame_shape):
                raise InputFileError(f"a frame of shape {f.shape} given to a classifier of {self.frame_shape}")
            out.append(f.reshape(-1)[self.used])
        x = np.stack(out) if out else np.zeros((0, len(self.used)), dtype=np.float32)
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        return x.reshape(len(x), 1, 1, -1)

    def embed(self, frames: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Frames (B × (M, SS, FS), any integer/float dtype) → (B, D) embeddings on the classifier's device."""
        x_np = self.gather(frames)
        if self._session is not None:
            out = self._session.run(["embeddings"], {"frames": x_np.astype(np.float32)})[0]
            return torch.from_numpy(out)
        x = torch.from_numpy(x_np)
        if self.device.type != "cpu":
            x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.module(x)  # the preprocessing casts to float32 on the device

    def classify(self, frames: Sequence[np.ndarray] | np.ndarray) -> BatchResult:
        """Classify a batch of frames (B × (M, SS, FS))."""
        emb = self.embed(frames)
        with torch.inference_mode():
            pred_t, dist_t = self.fewshot.predict(emb)
        pred = pred_t.cpu().numpy()
        dist = dist_t.cpu().numpy()
        labels = [UNKNOWN if p < 0 else self.class_names[p] for p in pred.tolist()]
        return BatchResult(pred, labels, dist, self.score(dist))

    def score(self, distances: np.ndarray) -> np.ndarray:
        """(B,) scores of (B, C) distances (module doc)."""
        if len(distances) == 0:
            return np.zeros(0)
        if self._single is not None:
            return log_distance_ratio(distances, self._single)
        d = np.sort(np.maximum(np.asarray(distances, dtype=np.float64), 1e-12), axis=1)
        return np.log(d[:, 1]) - np.log(d[:, 0]) if d.shape[1] > 1 else np.zeros(len(d))
