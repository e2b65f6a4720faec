"""A labelling session of ``spi label``: a dataset, its label file, and for the game of hit the hidden truth and
the order of play (no HTTP here: ``cli/label_server.py`` serves a session).

Every label is appended to the label file (:class:`spisim.labels.LabelLog`) at once; a game is scored by
:func:`spisim.labels.game_report` and its report saved beside the label file.
"""

from __future__ import annotations

import secrets
import statistics
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from . import __version__
from .cxi import LABEL_CLASSES, CXIReader
from .errors import ConfigError, InputFileError
from .jsonutil import json_safe
from .labels import LabelLog, game_report, now_iso, save_game_report
from .shotimage import COLORMAPS, assembly_for, to_image

SESSION_ERRORS: tuple[str, ...] = ("invalid", "not_found", "conflict")
"""Kinds of :class:`SessionError`: a malformed request, no such shot (or not a game), the game is over."""


class SessionError(Exception):
    """A request the session refuses: its ``kind`` (one of :data:`SESSION_ERRORS`) and a one-line message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        if kind not in SESSION_ERRORS:
            raise ValueError(f"unknown session error kind {kind!r}")  # internal misuse
        self.kind = kind


def default_labels_path(data_path: str | Path, game: bool) -> Path:
    """``DATA.labels.csv`` (or ``DATA.game.csv`` for the game) beside ``DATA.h5``."""
    p = Path(data_path)
    return p.with_name(p.stem + (".game.csv" if game else ".labels.csv"))


def check_label_classes(classes: Sequence[str]) -> list[str]:
    """The classes of a labelling session, checked: each in :data:`spisim.cxi.LABEL_CLASSES`, no repeats, two or more.

    Raises:
        ConfigError: one line naming what is wrong and the known class names.
    """
    names = [str(c).strip() for c in classes]
    unknown = [n for n in names if n not in LABEL_CLASSES]
    if unknown:
        raise ConfigError(f"unknown class {unknown[0]!r}: choose from {', '.join(LABEL_CLASSES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"a class is given twice in {', '.join(names)}")
    if len(names) < 2:
        raise ConfigError(f"give at least two classes to choose from, got {', '.join(names) or 'none'}")
    return names


class LabelSession:
    """A dataset, its label file, and (for the game) the hidden truth and the order of play.

    Args:
        data_path: the CXI/HDF5 dataset.
        labels_path: the CSV label file (created if absent, continued if present).
        game: play the game of hit (needs ground truth in the dataset).
        game_shots: number of shots in a game (at most the dataset size).
        seed: seed of the game's random order.
        token: the access token; a random one when None.
        classes: the classes a person chooses from, in key order (each one of
            :data:`spisim.cxi.LABEL_CLASSES`, e.g. ``("single", "not_single")`` to label a run single vs rest);
            None: the dataset's own class names (the four hit types for a file without labels).
    """

    def __init__(
        self,
        data_path: str | Path,
        labels_path: str | Path | None = None,
        *,
        game: bool = False,
        game_shots: int = 100,
        seed: int = 0,
        token: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.data_path = Path(data_path)
        if classes is not None:
            classes = check_label_classes(classes)
            if game:
                raise ConfigError("--classes does not go with --game: the game scores against the dataset's classes")
        self.reader = CXIReader(self.data_path)
        self.n_shots = len(self.reader)
        if self.n_shots == 0:
            raise InputFileError(f"{self.data_path} has no shots")
        self.class_names: list[str] = list(classes) if classes is not None else list(self.reader.class_names)
        self.units = str(self.reader.data.attrs.get("units", ""))
        self.mask = self.reader.mask
        self.assembly = assembly_for(self.reader.pixel_position, self.reader.frame_shape)
        self.labels_path = Path(labels_path) if labels_path else default_labels_path(self.data_path, game)
        self.token = token or secrets.token_urlsafe(18)
        self.game = bool(game)
        self.seed = int(seed)
        self.truth: np.ndarray | None = None
        self.order: list[int] = []
        if self.game:
            if not self.reader.has_labels:
                raise ConfigError(f"--game needs a simulated dataset with ground truth; {self.data_path} has "
                                  "no /entry_1/labels/hit_type")
            truth = self.reader.hit_type
            if truth.min() < 0 or truth.max() >= len(self.class_names):
                raise InputFileError(f"{self.data_path}: hit_type has codes outside 0..{len(self.class_names) - 1}")
            if game_shots < 1:
                raise ConfigError(f"--game-shots must be at least 1, got {game_shots}")
            k = min(int(game_shots), self.n_shots)
            self.order = [int(i) for i in np.random.default_rng(self.seed).permutation(self.n_shots)[:k]]
            self.truth = truth
        self.log = LabelLog(self.labels_path, class_names=self.class_names, n_shots=self.n_shots)
        self.in_game = set(self.order)
        if self.game:
            outside = sorted(set(self.log.labels) - self.in_game)
            if outside:
                self.log.close()
                raise ConfigError(f"{self.labels_path} has labels of shots outside this game (first: {outside[0]}); "
                                  "use the --seed and --game-shots it was started with, or another --labels file")
        self.finished = self.game and self._all_played()
        self.report: dict | None = None
        self.report_paths: tuple[Path, Path] | None = None
        self._lock = threading.Lock()
        self._images: OrderedDict[int, tuple[np.ndarray, dict]] = OrderedDict()

    # ---- navigation
    def _all_played(self) -> bool:
        return all(i in self.log.labels for i in self.order)

    def resume_index(self) -> int:
        """Shot to show first: the game's first unplayed shot, else the first unlabelled shot after the
        last one labelled (wrapping round), else the last one labelled."""
        labels = self.log.labels
        if self.game:
            return next((i for i in self.order if i not in labels), self.order[-1])
        last = self.log.last_index
        start = 0 if last is None else last + 1
        for k in range(self.n_shots):
            i = (start + k) % self.n_shots
            if i not in labels:
                return i
        return last if last is not None else 0

    def state(self) -> dict:
        """Everything the page needs to start (the game's truth is never in it)."""
        labels = self.log.labels
        out = {
            "dataset": self.data_path.name,
            "labels_file": str(self.labels_path),
            "n_shots": self.n_shots,
            "class_names": self.class_names,
            "units": self.units,
            "image_shape": list(self.assembly.image_shape),
            "mode": "game" if self.game else "label",
            "labels": {str(i): lab for i, lab in labels.items()},
            "counts": self.log.counts(),
            "position": self.resume_index(),
            "colormaps": list(COLORMAPS),
            "version": __version__,
        }
        if self.game:
            out["game"] = {"order": self.order, "seed": self.seed, "finished": self.finished,
                           "report": self._report_for_page() if self.finished else None}
        return out

    # ---- images
    def shot_image(self, index: int) -> tuple[np.ndarray, dict]:
        """(H, W) image of shot ``index`` and its statistics (sum, max over unmasked pixels)."""
        with self._lock:
            if index in self._images:
                self._images.move_to_end(index)
                return self._images[index]
            frame = self.reader[index]
            good = frame[~self.mask]
            stats = {"sum": float(good.sum()) if good.size else 0.0, "max": float(good.max()) if good.size else 0.0}
            item = (to_image(frame, self.assembly, self.mask), stats)
            self._images[index] = item
            while len(self._images) > 16:
                self._images.popitem(last=False)
            return item

    def check_index(self, index: object) -> int:
        """``index`` if it names a shot of this session (of the game, in a game); else :class:`SessionError`."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n_shots:
            is_int = isinstance(index, int) and not isinstance(index, bool)
            raise SessionError("not_found" if is_int else "invalid",
                               f"shot index must be an integer in 0..{self.n_shots - 1}, got {index!r}")
        if self.game and index not in self.in_game:
            raise SessionError("not_found", f"shot {index} is not part of this game")
        return index

    # ---- labels
    def label(self, index: object, label: object) -> dict:
        """Append a label; returns counts, and the report when this label ended the game."""
        index = self.check_index(index)
        if not isinstance(label, str) or label not in self.class_names:
            raise SessionError("invalid",
                               f"label must be one of {', '.join(self.class_names)}, got {label!r}")
        if self.finished:
            raise SessionError("conflict", "the game is over")
        row = self.log.add(index, label)
        out = {"index": index, "label": label, "time": row.time, "counts": self.log.counts()}
        if self.game and self._all_played():
            out["report"] = self.finish()
        return out

    def undo(self) -> dict:
        """Withdraw the latest label in force: ``{"index", "label" (now), "counts"}`` (index None: nothing)."""
        if self.finished:
            raise SessionError("conflict", "the game is over")
        done = self.log.undo()
        index, label = done if done else (None, None)
        return {"index": index, "label": label, "counts": self.log.counts()}

    # ---- the game
    def finish(self) -> dict:
        """Score the shots played so far, save the report beside the label file, end the game."""
        if not self.game or self.truth is None:
            raise SessionError("not_found", "not a game: start spi label with --game")
        labels = self.log.labels
        played = [i for i in self.order if i in labels]
        position = {name: k for k, name in enumerate(self.class_names)}
        guess = np.array([position[labels[i]] for i in played], dtype=np.int64)
        report = game_report(self.truth[played], guess, self.class_names)
        extra = {
            "dataset": str(self.data_path.resolve()),
            "labels_file": str(self.labels_path.resolve()),
            "seed": self.seed,
            "game_shots": len(self.order),
            "complete": len(played) == len(self.order),
            "median_seconds_per_label": self._median_seconds(),
            "finished_at": now_iso(),
            "spi_version": __version__,
        }
        self.report = {**report, **extra}
        self.report_paths = save_game_report(report, self.labels_path, extra)
        self.finished = True
        return self._report_for_page()

    def _median_seconds(self) -> float | None:
        times = [datetime.fromisoformat(r.time) for r in self.log.rows if r.index in self.in_game]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        return statistics.median(gaps) if gaps else None

    def _report_for_page(self) -> dict:
        if self.report is None:
            self.finish()
        rep = json_safe(self.report)
        rep["files"] = [str(p) for p in self.report_paths] if self.report_paths else []
        return rep

    def close(self) -> None:
        self.log.close()
        self.reader.close()
