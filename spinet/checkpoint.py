"""Checkpoints: the trained network together with everything needed to use it.

A checkpoint (``torch.save`` of plain containers and tensors, loaded with ``weights_only=True``) holds::

    format, format_version, spi_version, created        how it was made
    config                                              the whole run config (preprocess section included)
    class_names                                         class id → name
    model_state                                         embedding network weights (float32, 4 bytes a weight)
    preprocess_meta, preprocess_state, geometry_key     the training detector's gather table
    epoch, best_metric, best_epoch, bad_epochs,         training state
    history
    optimizer_state                                     Adam's two moments per weight (8 bytes a weight):
                                                        only in the checkpoint --resume continues from
                                                        (``last.pt``), see ``optimizer`` of save_checkpoint

Without the optimizer state (``best.pt``, kept epochs) a checkpoint is about a third of the size (60 MB instead of
177 MB for the default 14.6 M-weight network on a (2, 512, 1024) detector): it classifies, exports and benchmarks
like any other, but cannot be resumed.

:class:`ModelBundle` loads one for inference and rebuilds the preprocessing for another detector from
the saved ``preprocess`` config when a data file's geometry differs from the training one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spisim import __version__
from spisim.atomic import atomic_path
from spisim.errors import InputFileError

from .config import Config
from .models import build_model
from .preprocess import Preprocessor, geometry_key

FORMAT = "spinet-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    *,
    config: Config,
    class_names: list[str],
    model: nn.Module,
    preprocessor: Preprocessor,
    geometry: str,
    optimizer: bool = True,
    **training_state: Any,
) -> None:
    """Write a checkpoint atomically (a temporary file renamed over ``path``).

    Args:
        path: output file.
        config: the run config.
        class_names: class id → name.
        model: the embedding network (a DDP wrapper is unwrapped).
        preprocessor: preprocessing of the training detector.
        geometry: :func:`spinet.preprocess.geometry_key` of that detector.
        optimizer: keep ``optimizer_state`` of `training_state` (the checkpoint ``--resume`` continues from,
            ``last.pt``); False leaves it out (``best.pt``: two thirds smaller, for inference and export).
        training_state: epoch, optimizer_state, best_metric, history ... (stored as given).
    """
    net = model.module if hasattr(model, "module") else model
    if not optimizer:
        training_state.pop("optimizer_state", None)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spi_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "class_names": list(class_names),
        "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "preprocess_meta": preprocessor.describe(),
        "preprocess_state": {k: v.detach().cpu() for k, v in preprocessor.state_dict().items()},
        "geometry_key": geometry,
        **training_state,
    }
    with atomic_path(path) as tmp:  # a full disk or Ctrl-C: no half-written file, no temporary left
        torch.save(doc, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (raises InputFileError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"no such model file: {path}")
    try:
        doc = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise InputFileError(f"{path} is not a spinet checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputFileError(f"{path} is not a spinet checkpoint (written by spi train)")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise InputFileError(f"{path} was written by a newer spinet (format {doc['format_version']})")
    return doc


@dataclass
class ModelBundle:
    """A trained network ready for inference.

    Attributes:
        config: the run config.
        class_names: class id → name.
        model: the embedding network, eval mode.
        preprocessor: preprocessing of the training detector.
        geometry: that detector's geometry key.
        doc: the raw checkpoint dict.
    """

    config: Config
    class_names: list[str]
    model: nn.Module
    preprocessor: Preprocessor
    geometry: str
    doc: dict

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
        doc = load_checkpoint(path)
        config = Config.from_dict(doc["config"])
        model = build_model(config.model, config.preprocess.input_size)
        model.load_state_dict(doc["model_state"])
        model.to(device).eval()
        pre = Preprocessor.from_state(doc["preprocess_meta"], doc["preprocess_state"])
        return cls(config, list(doc["class_names"]), model, pre, doc["geometry_key"], doc)

    def preprocessor_for(
        self, frame_shape: tuple[int, int, int], pixel_position: np.ndarray | None, mask: np.ndarray | None
    ) -> Preprocessor:
        """Preprocessing for a detector: the stored one when the geometry is the training one, else one
        rebuilt from the saved ``preprocess`` config."""
        if geometry_key(frame_shape, pixel_position, mask) == self.geometry:
            return self.preprocessor
        return Preprocessor.from_geometry(self.config.preprocess, frame_shape, pixel_position, mask)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
