"""Export the embedding network with its preprocessing: frames (B, M, SS, FS) → embeddings (B, D).

* TorchScript (``torch.jit.trace``): ``<stem>.ts.pt``, load with ``torch.jit.load``; the extra file
  ``spinet.json`` holds class names, the preprocess config and the frame shape.
* ONNX (opset 17, dynamic batch): ``<stem>.onnx``, input ``frames`` float32 (B, M, SS, FS), output
  ``embeddings`` (B, D); the same JSON is in the model's metadata (key ``spinet``).

The exported graph is the training detector's preprocessing (gather table, scaling, z-score) followed by
the network, so a deployment feeds raw frames. :func:`check_onnx` compares onnxruntime with torch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spisim.errors import ConfigError

from .checkpoint import ModelBundle
from .preprocess import Preprocessor

FORMATS = ("torchscript", "onnx")


class InferenceModule(nn.Module):
    """Preprocessing + embedding network: (B, M, SS, FS) float32 → (B, D) unit embeddings."""

    def __init__(self, preprocessor: Preprocessor, embedder: nn.Module) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.embedder = embedder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.embedder(self.preprocessor(frames))


def inference_module(bundle: ModelBundle, preprocessor: Preprocessor | None = None) -> InferenceModule:
    """The bundle's network behind ``preprocessor`` (default: the training detector's), eval mode, CPU copy
    untouched."""
    pre = preprocessor or bundle.preprocessor
    return InferenceModule(pre, bundle.model).eval()


def _metadata(bundle: ModelBundle) -> str:
    return json.dumps(
        {
            "class_names": bundle.class_names,
            "preprocess": bundle.config.to_dict()["preprocess"],
            "frame_shape": list(bundle.preprocessor.frame_shape),
            "embedding_dim": bundle.config.model.embedding_dim,
            "spi_version": bundle.doc.get("spi_version"),
        }
    )


def _example(pre: Preprocessor, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((batch, *pre.frame_shape), 2.0), generator=g)


def export_torchscript(bundle: ModelBundle, path: str | Path) -> Path:
    """Trace the inference module and save it as TorchScript at ``path``."""
    module = inference_module(bundle).cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (_example(bundle.preprocessor),), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"spinet.json": _metadata(bundle)})
    return Path(path)


def export_onnx(bundle: ModelBundle, path: str | Path, opset: int = 17) -> Path:
    """Export the inference module to ONNX at ``path`` (dynamic batch axis)."""
    import onnx

    module = inference_module(bundle).cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (_example(bundle.preprocessor),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["frames"],
            output_names=["embeddings"],
            dynamic_axes={"frames": {0: "batch"}, "embeddings": {0: "batch"}},
        )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "spinet", _metadata(bundle)
    onnx.save(model, str(path))
    return Path(path)


def check_onnx(path: str | Path, bundle: ModelBundle, frames: torch.Tensor | None = None) -> float:
    """Largest absolute difference between onnxruntime and torch embeddings on ``frames``
    (default: random Poisson frames, batch 3)."""
    import onnxruntime as ort

    frames = _example(bundle.preprocessor, batch=3, seed=1) if frames is None else frames
    with torch.no_grad():
        ref = inference_module(bundle).cpu()(frames).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["embeddings"], {"frames": frames.numpy().astype(np.float32)})[0]
    return float(np.max(np.abs(got - ref)))


def export_model(model_path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export a checkpoint: ``fmt`` is ``torchscript`` or ``onnx``; ``out`` defaults to the checkpoint's
    name with ``.ts.pt`` or ``.onnx``."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model_path = Path(model_path)
    bundle = ModelBundle.load(model_path)
    stem = model_path.with_suffix("")
    if fmt == "torchscript":
        return export_torchscript(bundle, out or stem.with_name(stem.name + ".ts.pt"))
    return export_onnx(bundle, out or stem.with_name(stem.name + ".onnx"))
