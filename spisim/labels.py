"""Label files: hit-type labels given by a person to shots of a dataset (see ``docs/label.md``).

A label file is a CSV log that is only ever appended to, one row per action, written and flushed to disk
(``fsync``) before the action is acknowledged, so that a crash of the browser, the server or the machine
loses at most the action in flight::

    index,label,time
    0,single,2025-05-01T09:12:03.114+00:00
    1,no_hit,2025-05-01T09:12:04.020+00:00
    1,undo,2025-05-01T09:12:05.377+00:00
    1,multi,2025-05-01T09:12:06.801+00:00

``index`` is the shot index in the dataset (0-based), ``label`` a class name (``no_hit``, ``single``,
``multi``, ``unintended`` for simulated data) or ``undo``, ``time`` an ISO 8601 time stamp with time zone.
An ``undo`` row withdraws the latest label of that shot that is still in force (the one before it, if any,
comes back). The label of a shot is what remains after replaying the rows in order; :func:`read_labels`
and :func:`label_codes` do that and are what other tools (``spi classify --support``, ``spi evaluate``)
use. A last line without its newline (a write cut short by a crash) is ignored by readers and removed by
:class:`LabelLog` before it appends.

The "game of hit" scores a person's labels against the ground truth of a simulated dataset:
:func:`game_report` computes accuracy, per-class precision and recall and the confusion matrix, and
:func:`save_game_report` writes them beside the label file as JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from .atomic import write_text_atomic
from .cxi import HIT_TYPES, LABEL_CLASSES, LABELS_PATH
from .errors import InputFileError
from .jsonutil import json_safe

HEADER: tuple[str, str, str] = ("index", "label", "time")
"""The first line of every label file."""

UNDO = "undo"
"""The ``label`` value of a row that withdraws the shot's latest label."""


@dataclass(frozen=True)
class LabelRow:
    """One row of a label file: shot ``index``, class name or :data:`UNDO`, ISO 8601 ``time``."""

    index: int
    label: str
    time: str


def now_iso() -> str:
    """The current time as ISO 8601 with milliseconds and the UTC offset."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _complete_text(path: Path) -> str:
    """The file's text up to and including its last newline (a cut-short last line is dropped)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"cannot read label file {path}: {exc.strerror or exc}") from None
    cut = raw.rfind(b"\n")
    try:
        return raw[: cut + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path} is not a label file (not UTF-8 text)") from None


def read_rows(
    path: str | Path, *, class_names: Sequence[str] = HIT_TYPES, n_shots: int | None = None
) -> list[LabelRow]:
    """All complete rows of a label file, in file order, validated.

    Args:
        path: the CSV label file.
        class_names: the allowed labels (besides :data:`UNDO`).
        n_shots: when given, every index must be below it (the file belongs to a dataset of this size).

    Raises:
        InputFileError: a missing or malformed file, an unknown label, an index out of range, or an
            ``undo`` of a shot that has no label in force.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"no such label file: {path}")
    text = _complete_text(path)
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        raise InputFileError(f"{path} is empty: a label file starts with the line {','.join(HEADER)}")
    if tuple(c.strip() for c in lines[0]) != HEADER:
        raise InputFileError(f"{path} is not a label file: first line is {','.join(lines[0])!r}, "
                             f"expected {','.join(HEADER)!r}")
    allowed = set(class_names)
    rows: list[LabelRow] = []
    in_force: dict[int, int] = {}
    for lineno, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        if len(cells) != 3:
            raise InputFileError(f"{path}:{lineno}: expected 3 fields (index,label,time), got {len(cells)}")
        raw_index, label, time = (c.strip() for c in cells)
        if not raw_index.isdigit():
            raise InputFileError(f"{path}:{lineno}: shot index {raw_index!r} is not a non-negative integer")
        index = int(raw_index)
        if n_shots is not None and index >= n_shots:
            raise InputFileError(f"{path}:{lineno}: shot index {index} is out of range for a dataset of "
                                 f"{n_shots} shots (a label file of another dataset?)")
        if label == UNDO:
            if in_force.get(index, 0) == 0:
                raise InputFileError(f"{path}:{lineno}: undo of shot {index}, which has no label in force")
            in_force[index] -= 1
        elif label in allowed:
            in_force[index] = in_force.get(index, 0) + 1
        else:
            raise InputFileError(f"{path}:{lineno}: unknown label {label!r}: expected one of "
                                 f"{', '.join(class_names)} or {UNDO}")
        rows.append(LabelRow(index, label, time))
    return rows


def replay(rows: Sequence[LabelRow]) -> tuple[dict[int, str], list[int]]:
    """Replay rows in order.

    Returns:
        ``(labels, stack)``: the label in force per shot index (shots whose labels were all undone are
        absent), and the indices of the label rows still in force, oldest first (what successive undos
        withdraw, last first).
    """
    history: dict[int, list[str]] = {}
    stack: list[int] = []
    for row in rows:
        if row.label == UNDO:
            history[row.index].pop()
            # the label withdrawn is the latest row in force of that shot
            for k in range(len(stack) - 1, -1, -1):
                if stack[k] == row.index:
                    del stack[k]
                    break
        else:
            history.setdefault(row.index, []).append(row.label)
            stack.append(row.index)
    labels = {i: h[-1] for i, h in history.items() if h}
    return labels, stack


def read_labels(
    path: str | Path, *, class_names: Sequence[str] = HIT_TYPES, n_shots: int | None = None
) -> dict[int, str]:
    """The label in force of every labelled shot: ``{shot index: class name}`` (see :func:`read_rows`)."""
    return replay(read_rows(path, class_names=class_names, n_shots=n_shots))[0]


def label_codes(path: str | Path, n_shots: int, *, class_names: Sequence[str] = HIT_TYPES) -> np.ndarray:
    """(n_shots,) int64 class codes (index into ``class_names``) of a label file; −1 where unlabelled."""
    codes = np.full(int(n_shots), -1, dtype=np.int64)
    position = {name: k for k, name in enumerate(class_names)}
    for index, label in read_labels(path, class_names=class_names, n_shots=n_shots).items():
        codes[index] = position[label]
    return codes


class LabelLog:
    """An open label file that labels are appended to, one fsync-ed row per action; thread-safe.

    The file is created with its header when absent; an existing file is read (so a restart continues
    where it stopped) and a cut-short last line is removed.

    Args:
        path: the CSV label file.
        class_names: the allowed labels, in key order (key 1 is ``class_names[0]``).
        n_shots: the dataset size; every index must be below it.
    """

    def __init__(self, path: str | Path, *, class_names: Sequence[str] = HIT_TYPES, n_shots: int) -> None:
        self.path = Path(path)
        self.class_names = tuple(class_names)
        if UNDO in self.class_names:
            raise ValueError(f"{UNDO!r} cannot be a class name")
        self.n_shots = int(n_shots)
        self._lock = threading.Lock()
        if self.path.exists() and self.path.stat().st_size > 0:
            rows = read_rows(self.path, class_names=self.class_names, n_shots=self.n_shots)
            text = _complete_text(self.path)
            if len(text.encode("utf-8")) != self.path.stat().st_size:
                with open(self.path, "r+b") as f:  # drop the cut-short last line
                    f.truncate(len(text.encode("utf-8")))
                    f.flush()
                    os.fsync(f.fileno())
        else:
            rows = []
            if not self.path.parent.is_dir():
                raise InputFileError(f"cannot create label file {self.path}: no folder {self.path.parent}")
        self.rows: list[LabelRow] = rows
        self.labels, self._stack = replay(rows)
        try:
            self._file = open(self.path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise InputFileError(f"cannot write label file {self.path}: {exc.strerror or exc}") from None
        if not rows and self.path.stat().st_size == 0:
            self._write(",".join(HEADER) + "\n")

    def _write(self, text: str) -> None:
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _append(self, index: int, label: str) -> LabelRow:
        row = LabelRow(index, label, now_iso())
        self._write(f"{row.index},{row.label},{row.time}\n")
        self.rows.append(row)
        return row

    def add(self, index: int, label: str) -> LabelRow:
        """Give shot ``index`` the class ``label``; the row is on disk when this returns.

        Raises:
            ValueError: index out of range or label not a class name.
        """
        if not (isinstance(index, int) and 0 <= index < self.n_shots):
            raise ValueError(f"shot index {index!r} out of range 0..{self.n_shots - 1}")
        if label not in self.class_names:
            raise ValueError(f"unknown label {label!r}: expected one of {', '.join(self.class_names)}")
        with self._lock:
            row = self._append(index, label)
            self.labels[index] = label
            self._stack.append(index)
            return row

    def undo(self) -> tuple[int, str | None] | None:
        """Withdraw the latest label still in force (written as an ``undo`` row).

        Returns:
            ``(index, label)``: the shot and the label it has now (None if it has none), or None when there
            is nothing to undo.
        """
        with self._lock:
            if not self._stack:
                return None
            index = self._stack[-1]
            self._append(index, UNDO)
            self.labels, self._stack = replay(self.rows)
            return index, self.labels.get(index)

    def counts(self) -> dict[str, int]:
        """Number of shots per class (labels in force)."""
        with self._lock:
            out = dict.fromkeys(self.class_names, 0)
            for label in self.labels.values():
                out[label] += 1
            return out

    @property
    def last_index(self) -> int | None:
        """Shot index of the last label row in force (where to continue after a restart), or None."""
        with self._lock:
            return self._stack[-1] if self._stack else None

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> LabelLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def game_report(truth: np.ndarray, guess: np.ndarray, class_names: Sequence[str] = HIT_TYPES) -> dict:
    """Score a person's labels against the ground truth.

    Args:
        truth: (n,) int class codes of the shots played.
        guess: (n,) int class codes given by the person, same order.
        class_names: names of the codes.

    Returns:
        ``{"n_shots", "accuracy", "classes": {name: {"precision", "recall", "support", "predicted"}},
        "class_names", "confusion"}``; ``confusion[t][p]`` counts shots of true class ``t`` labelled
        ``p``. Precision (recall) is NaN for a class never guessed (never true); accuracy NaN for n = 0.
    """
    truth = np.asarray(truth, dtype=np.int64)
    guess = np.asarray(guess, dtype=np.int64)
    if truth.shape != guess.shape or truth.ndim != 1:
        raise ValueError(f"truth {truth.shape} and guess {guess.shape} must be equal 1-D shapes")
    k = len(class_names)
    if truth.size and (truth.min() < 0 or truth.max() >= k or guess.min() < 0 or guess.max() >= k):
        raise ValueError(f"class codes must lie in 0..{k - 1}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, guess), 1)
    classes = {}
    for c, name in enumerate(class_names):
        tp = confusion[c, c]
        classes[name] = {
            "precision": _ratio(tp, confusion[:, c].sum()),
            "recall": _ratio(tp, confusion[c, :].sum()),
            "support": int(confusion[c, :].sum()),
            "predicted": int(confusion[:, c].sum()),
        }
    return {
        "n_shots": int(truth.size),
        "accuracy": _ratio(np.trace(confusion), truth.size),
        "class_names": list(class_names),
        "classes": classes,
        "confusion": confusion.tolist(),
    }


def game_report_paths(labels_path: str | Path) -> tuple[Path, Path]:
    """Where :func:`save_game_report` writes: ``<labels stem>.results.json`` and ``.results.csv``."""
    p = Path(labels_path)
    return p.with_name(p.stem + ".results.json"), p.with_name(p.stem + ".results.csv")


def save_game_report(report: dict, labels_path: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write a :func:`game_report` beside the label file, each file replaced atomically.

    JSON: the report (NaN as null) with ``extra`` (dataset, seed, timing ...) merged in. CSV: one row per
    true class: ``class,support,precision,recall,<predicted class 1>,...`` (confusion counts; empty
    precision/recall where undefined).

    Returns:
        (json path, csv path).
    """
    json_path, csv_path = game_report_paths(labels_path)
    doc = {**report, **(extra or {})}
    write_text_atomic(json_path, json.dumps(json_safe(doc), indent=2) + "\n", fsync=True)
    names = report["class_names"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "support", "precision", "recall", *(f"labelled_{n}" for n in names)])
    for name, row in zip(names, report["confusion"], strict=True):
        c = report["classes"][name]
        fmt = ["" if math.isnan(c[key]) else f"{c[key]:.6g}" for key in ("precision", "recall")]
        w.writerow([name, c["support"], *fmt, *row])
    write_text_atomic(csv_path, buf.getvalue(), fsync=True)
    return json_path, csv_path


# ------------------------------------------------------------------------------------------------ label files


class LabelNames:
    """The class names a label file may use: a list of names and, optionally, any ``STRUCTURE/HIT_TYPE`` name
    (the (structure, hit type) classes of ``label: structure_hit_type``, e.g. ``capsid/single``).

    Args:
        names: the allowed names.
        structure_hit_types: also allow ``STRUCTURE/HIT_TYPE`` for any structure and a hit type of
            :data:`spisim.cxi.HIT_TYPES`.
    """

    def __init__(self, names: Iterable[str] = LABEL_CLASSES, *, structure_hit_types: bool = False) -> None:
        self.names = tuple(dict.fromkeys(str(n) for n in names))
        self.structure_hit_types = bool(structure_hit_types)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self.names:
            return True
        if self.structure_hit_types:
            head, sep, tail = name.rpartition("/")
            return bool(sep and head.strip() and tail in HIT_TYPES)
        return False

    def describe(self) -> str:
        """The allowed names in words, for error messages."""
        text = ", ".join(self.names)
        if self.structure_hit_types:
            text += " or STRUCTURE/HIT_TYPE (e.g. capsid/single)"
        return text

    def __repr__(self) -> str:
        return f"LabelNames({self.describe()})"


def as_label_names(class_names: Sequence[str] | LabelNames | None) -> LabelNames:
    """``class_names`` as :class:`LabelNames` (None: :data:`spisim.cxi.LABEL_CLASSES`)."""
    if class_names is None:
        return LabelNames(LABEL_CLASSES)
    if isinstance(class_names, LabelNames):
        return class_names
    return LabelNames(class_names)


def read_label_file(
    path: str | Path, n_shots: int | None = None, class_names: Sequence[str] | LabelNames | None = None
) -> dict[int, str]:
    """Labels by name from a label file: ``{shot index: class name}``.

    Formats: CSV ``index,label`` (a header line is optional; an index may appear twice only with the same
    label), the ``index,label,time`` logs of ``spi label`` (replayed with their undos), or HDF5 with datasets
    ``index`` (int) and ``label`` (strings), or a CXI file's ``/entry_1/labels/hit_type`` (−1 = none).

    Args:
        path: the label file.
        n_shots: when given, indices must lie in [0, n_shots).
        class_names: the names a label may take (a list, or :class:`LabelNames`); None:
            :data:`spisim.cxi.LABEL_CLASSES` (the four hit types and ``not_single``).

    Raises:
        InputFileError: a missing or malformed file, an unknown class name (the message lists the known
            ones), an index given twice with different labels (the message names both lines), an index out
            of range. Line numbers are the file's own (header and blank lines counted).
    """
    path = Path(path)
    allowed = as_label_names(class_names)
    if not path.is_file():
        raise InputFileError(f"no such label file: {path}")
    if h5py.is_hdf5(path):
        labels = _hdf5_labels(path, allowed)
    else:
        labels = _csv_labels(path, allowed, n_shots)
    if n_shots is not None:
        bad = [i for i in labels if not 0 <= i < n_shots]
        if bad:
            raise InputFileError(f"{path}: shot index {bad[0]} is out of range for a dataset of {n_shots} shots")
    return labels


def _numbered_rows(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows with the file line number each ends on (1-based, blank lines counted)."""
    reader = csv.reader(io.StringIO(text))
    out = []
    for cells in reader:
        if cells and any(c.strip() for c in cells):
            out.append((reader.line_num, cells))
    return out


def _unknown(path: Path, where: str, label: str, allowed: LabelNames) -> InputFileError:
    return InputFileError(f"{path}:{where}: unknown class {label!r}: expected one of {allowed.describe()}")


def _csv_labels(path: Path, allowed: LabelNames, n_shots: int | None) -> dict[int, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read label file {path}: {exc}") from None
    rows = _numbered_rows(text)
    if not rows:
        raise InputFileError(f"label file {path} is empty")
    header = [c.strip().lower() for c in rows[0][1]]
    if header[:3] == ["index", "label", "time"]:
        # the log of spi label: check the names here (its own reader knows only the names it is given)
        found: list[str] = []
        for lineno, cells in _numbered_rows(_complete_text(path))[1:]:
            if len(cells) < 2:
                continue
            label = cells[1].strip()
            if label == UNDO:
                continue
            if label not in allowed:
                raise _unknown(path, str(lineno), label, allowed)
            found.append(label)
        return read_labels(path, class_names=sorted(set(found)) or ["none"], n_shots=n_shots)
    if header[:2] == ["index", "label"]:
        rows = rows[1:]
    out: dict[int, str] = {}
    line_of: dict[int, int] = {}
    for lineno, r in rows:
        if len(r) < 2:
            raise InputFileError(f"{path}:{lineno}: expected 'index,label', got {','.join(r)!r}")
        idx, label = r[0].strip(), r[1].strip()
        if not idx.isdigit():
            raise InputFileError(f"{path}:{lineno}: shot index {idx!r} is not a non-negative integer")
        if not label:
            raise InputFileError(f"{path}:{lineno}: empty label")
        if label not in allowed:
            raise _unknown(path, str(lineno), label, allowed)
        i = int(idx)
        if n_shots is not None and i >= n_shots:
            raise InputFileError(f"{path}:{lineno}: shot index {i} is out of range for a dataset of {n_shots} shots")
        if i in out and out[i] != label:
            raise InputFileError(f"{path}: shot {i} is labelled {out[i]!r} on line {line_of[i]} and {label!r} on "
                                 f"line {lineno}: give each shot one label")
        if i not in out:
            out[i], line_of[i] = label, lineno
    return out


def _hdf5_labels(path: Path, allowed: LabelNames) -> dict[int, str]:
    with h5py.File(path, "r") as f:
        if "label" in f and "index" in f:
            idx = np.asarray(f["index"][()], dtype=np.int64).reshape(-1)
            raw = f["label"][()]
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(raw).reshape(-1)]
            if len(names) != len(idx):
                raise InputFileError(f"{path}: 'index' and 'label' have different lengths")
            out: dict[int, str] = {}
            entry_of: dict[int, int] = {}
            for k, (i, n) in enumerate(zip(idx.tolist(), names, strict=True)):
                if n not in allowed:
                    raise _unknown(path, f" label[{k}]", n, allowed)
                if i in out and out[i] != n:
                    raise InputFileError(f"{path}: shot {i} is labelled {out[i]!r} at entry {entry_of[i]} and {n!r} "
                                         f"at entry {k} of 'index'/'label': give each shot one label")
                if i not in out:
                    out[i], entry_of[i] = n, k
            return out
        key = f"{LABELS_PATH}/hit_type"
        if key in f:
            codes = np.asarray(f[key][()], dtype=np.int64)
            names = json.loads(f[key].attrs.get("names", json.dumps(list(HIT_TYPES))))
            for c in np.unique(codes[codes >= 0]):
                if int(c) >= len(names):
                    raise InputFileError(f"{path}: {key} has code {int(c)} but only {len(names)} names")
                if names[int(c)] not in allowed:
                    raise _unknown(path, f" {key}", names[int(c)], allowed)
            return {int(i): names[c] for i, c in enumerate(codes) if c >= 0}
    raise InputFileError(f"{path}: an HDF5 label file needs datasets 'index' and 'label' (or {key})")
