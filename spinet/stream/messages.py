"""Stream messages: shots in (Karabo bridge trains, the ``spi-frames`` ZeroMQ message) and results out.

Everything that reads or writes bytes on the wire lives here; ``docs/stream.md`` describes the formats.

* :class:`Shot`: one detector frame with its ids, the unit that every source delivers.
* :func:`split_frames`: a detector data array of any of the layouts used at facilities → (P, M, SS, FS).
* Karabo bridge: :func:`resolve_karabo_source` picks the detector data in a train, :func:`karabo_shots`
  turns a train into shots.
* ``spi-frames`` (our own OnDA-style ZeroMQ message): :func:`encode_frame_message`,
  :func:`decode_frame_message`.
* ``spi-stream-results`` (what ``spi stream --publish`` sends): :func:`encode_results`,
  :func:`decode_results`.

A message that cannot be read raises :class:`MalformedMessage` with one line saying why; the stream counts
it and goes on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

FRAME_FORMAT = "spi-frames"
RESULT_FORMAT = "spi-stream-results"
FORMAT_VERSION = 1
RESULT_TOPIC = b"spi.results"
"""First frame (ZeroMQ topic) of every results message."""

PULSE_STRIDE = 10_000
"""Shots without an explicit index get ``index = train_id * PULSE_STRIDE + pulse_id`` (stable across restarts;
EuXFEL pulse ids stay below 2,700)."""

DEFAULT_KARABO_KEY = "image.data"
SPI_INDEX_KEY = "spi.index"
"""Karabo key of the shots' dataset indices (int64 (P,)), sent by ``spi serve``."""
SPI_LABEL_KEY = "spi.label"
"""Karabo key of the shots' true class names (list of P strings), sent by ``spi serve``."""


class MalformedMessage(ValueError):
    """A message the stream cannot read (counted and logged, never fatal)."""


@dataclass
class Shot:
    """One detector frame as it came off the stream.

    Attributes:
        frame: (M, SS, FS) detector values, any integer or float dtype (photons or ADU).
        index: the shot's index: the dataset index (replay, ``spi serve``), the message's ``index``, or
            ``train_id * PULSE_STRIDE + pulse_id``.
        train_id: facility train id (Karabo ``timestamp.tid``), or None.
        pulse_id: pulse id within the train, or None.
        truth: true class name where the message carries it, else None.
        t_arrival: ``time.monotonic()`` when the message was received, s.
    """

    frame: np.ndarray
    index: int
    train_id: int | None = None
    pulse_id: int | None = None
    truth: str | None = None
    t_arrival: float = 0.0

    @property
    def key(self) -> tuple:
        """What identifies the shot across restarts: (train id, pulse id) where known, else the index."""
        if self.train_id is not None:
            return ("t", int(self.train_id), -1 if self.pulse_id is None else int(self.pulse_id))
        return ("i", int(self.index))


def shot_key(index: int, train_id: int | None, pulse_id: int | None) -> tuple:
    """:attr:`Shot.key` from its parts (used when reading a log back)."""
    if train_id is not None:
        return ("t", int(train_id), -1 if pulse_id is None else int(pulse_id))
    return ("i", int(index))


# --------------------------------------------------------------------------------------------- frame layouts


def check_frame_dtype(dtype: np.dtype) -> None:
    """Raise MalformedMessage unless ``dtype`` is a real integer or float type."""
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise MalformedMessage(f"frame dtype {dtype} is not an integer or float type")


def split_frames(array: np.ndarray, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """A detector data array as frames (P, M, SS, FS), without copying where possible.

    Layouts recognised, tried in this order (M = modules, P = pulses):

    * one frame: exactly M·SS·FS values, e.g. (M, SS, FS), (SS, FS) when M = 1, or (M·SS, FS);
    * pulses first: (P, M, SS, FS), or (P, SS, FS) when M = 1 (files, ``spi serve``, Karabo ``file`` layout);
    * pulses last: (M, SS, FS, P), or (SS, FS, P) when M = 1;
    * Karabo ``online`` layout (calibration pipeline): (M, FS, SS, P), or (FS, SS, P) when M = 1.

    Args:
        array: the data array.
        frame_shape: (M, SS, FS) of the detector the model is set up for.

    Raises:
        MalformedMessage: the array fits none of the layouts, or is not numeric.
    """
    a = np.asarray(array)
    check_frame_dtype(a.dtype)
    m, ss, fs = (int(v) for v in frame_shape)
    n = m * ss * fs
    if a.size == n and a.ndim >= 1:
        return a.reshape(1, m, ss, fs)
    shape = a.shape
    cores = [(m, ss, fs)] + ([(ss, fs)] if m == 1 else [])
    for core in cores:
        k = len(core)
        if a.ndim == k + 1 and shape[1:] == core:
            return a.reshape(shape[0], m, ss, fs)
    for core in cores:
        k = len(core)
        if a.ndim == k + 1 and shape[:-1] == core:
            return np.moveaxis(a, -1, 0).reshape(shape[-1], m, ss, fs)
    online = [(m, fs, ss)] + ([(fs, ss)] if m == 1 else [])
    for core in online:
        k = len(core)
        if a.ndim == k + 1 and shape[:-1] == core:
            moved = np.moveaxis(a, -1, 0)  # (P, [M,] FS, SS)
            return np.swapaxes(moved, -1, -2).reshape(shape[-1], m, ss, fs)
    raise MalformedMessage(
        f"detector data of shape {shape} does not hold frames of shape {(m, ss, fs)} "
        "(expected (M, SS, FS), (P, M, SS, FS), (M, SS, FS, P) or Karabo's online (M, FS, SS, P))"
    )


def _int_list(value: Any, n: int, what: str) -> list[int] | None:
    if value is None:
        return None
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1 and n > 1:
        arr = np.repeat(arr, n)
    if arr.size != n or arr.dtype.kind not in "iu":
        raise MalformedMessage(f"{what} must be {n} integers, got {arr.size} values of {arr.dtype}")
    return [int(v) for v in arr]


def _str_list(value: Any, n: int, what: str) -> list[str | None] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = [value]
    if not isinstance(value, Sequence | np.ndarray) or len(value) != n:
        raise MalformedMessage(f"{what} must be a list of {n} class names")
    out: list[str | None] = []
    for v in value:
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out.append(str(v) if v not in (None, "") else None)
    return out


def make_shots(
    frames: np.ndarray,
    *,
    t_arrival: float,
    train_id: int | None = None,
    pulse_ids: Sequence[int] | None = None,
    indices: Sequence[int] | None = None,
    truth: Sequence[str | None] | None = None,
    counter: list[int] | None = None,
) -> list[Shot]:
    """Shots of a (P, M, SS, FS) array with their ids.

    The index of a shot is ``indices[p]`` where given, else ``train_id * PULSE_STRIDE + pulse_id`` (pulse id
    = position in the train when not given), else the next value of ``counter[0]`` (a running count, not
    stable across restarts).
    """
    p = frames.shape[0]
    pulses = list(pulse_ids) if pulse_ids is not None else (list(range(p)) if train_id is not None else None)
    out = []
    for k in range(p):
        pid = None if pulses is None else int(pulses[k])
        if indices is not None:
            idx = int(indices[k])
        elif train_id is not None:
            idx = int(train_id) * PULSE_STRIDE + int(pid if pid is not None else k)
        else:
            if counter is None:
                raise MalformedMessage("a shot without index or train id")
            idx = counter[0]
            counter[0] += 1
        if idx < 0:
            raise MalformedMessage(f"shot index {idx} is negative")
        out.append(Shot(frames[k], idx, None if train_id is None else int(train_id), pid,
                        None if truth is None else truth[k], t_arrival))
    return out


# --------------------------------------------------------------------------------------------- Karabo bridge


def describe_karabo_train(data: Mapping[str, Mapping[str, Any]], limit: int = 12) -> str:
    """What a train holds, for error messages: ``source: array keys (shapes)``, at most ``limit`` sources."""
    parts = []
    for src in sorted(data)[:limit]:
        props = data[src] if isinstance(data[src], Mapping) else {}
        arrays = [f"{k} {tuple(v.shape)}" for k, v in sorted(props.items())
                  if isinstance(v, np.ndarray) and v.ndim >= 2]
        parts.append(f"{src}: {', '.join(arrays) if arrays else 'no image arrays'}")
    more = f" and {len(data) - limit} more sources" if len(data) > limit else ""
    return "; ".join(parts) + more if parts else "nothing"


def resolve_karabo_source(
    data: Mapping[str, Mapping[str, Any]], source: str | None, key: str = DEFAULT_KARABO_KEY
) -> str:
    """The source name that holds the detector data ``key`` in a train.

    Args:
        data: a train's data, ``{source: {key: value}}``.
        source: the wanted source, or None: the only source holding ``key``.
        key: the detector data key.

    Raises:
        LookupError: no (or no unique) match; the message lists what the train holds.
    """
    if source is not None:
        if source not in data:
            raise LookupError(f"no source {source!r} in the stream")
        if not isinstance(data[source], Mapping) or key not in data[source]:
            raise LookupError(f"source {source!r} has no key {key!r}")
        return source
    having = sorted(s for s, props in data.items() if isinstance(props, Mapping) and key in props)
    if len(having) == 1:
        return having[0]
    if not having:
        raise LookupError(f"no source in the stream has the key {key!r}")
    raise LookupError(f"several sources have the key {key!r} ({', '.join(having)}): choose one with --karabo-source")


def karabo_shots(
    data: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Mapping[str, Any]],
    source: str,
    key: str,
    frame_shape: tuple[int, int, int],
    t_arrival: float,
    counter: list[int] | None = None,
) -> list[Shot]:
    """The shots of one Karabo bridge train.

    Frames: ``data[source][key]`` (any layout of :func:`split_frames`). Train id: ``meta[source]['timestamp.tid']``
    (else ``<prefix>trainId``); pulse ids: ``<prefix>pulseId`` where present (prefix: the key up to its last dot,
    e.g. ``image.``); shot indices: ``spi.index`` where present; true labels: ``spi.label`` where present.

    Raises:
        MalformedMessage: the source or key is missing, or the arrays do not fit.
    """
    props = data.get(source)
    if not isinstance(props, Mapping) or key not in props:
        raise MalformedMessage(f"train without {source}/{key}")
    arr = props[key]
    if not isinstance(arr, np.ndarray):
        raise MalformedMessage(f"{source}/{key} is a {type(arr).__name__}, not an array")
    frames = split_frames(arr, frame_shape)
    n = frames.shape[0]
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    tid: Any = (meta.get(source) or {}).get("timestamp.tid") if isinstance(meta, Mapping) else None
    if tid is None and f"{prefix}trainId" in props:
        tid = np.asarray(props[f"{prefix}trainId"]).reshape(-1)[:1]
        tid = int(tid[0]) if tid.size else None
    if tid is not None:
        try:
            tid = int(tid)
        except (TypeError, ValueError):
            raise MalformedMessage(f"train id {tid!r} is not an integer") from None
    pulse_ids = _int_list(props.get(f"{prefix}pulseId"), n, f"{prefix}pulseId")
    indices = _int_list(props.get(SPI_INDEX_KEY), n, SPI_INDEX_KEY)
    truth = _str_list(props.get(SPI_LABEL_KEY), n, SPI_LABEL_KEY)
    return make_shots(frames, t_arrival=t_arrival, train_id=tid, pulse_ids=pulse_ids, indices=indices, truth=truth,
                      counter=counter)


def karabo_train(
    frames: np.ndarray,
    train_id: int,
    *,
    source: str,
    key: str = DEFAULT_KARABO_KEY,
    indices: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    timestamp: float | None = None,
) -> tuple[dict, dict]:
    """A Karabo bridge train (data, metadata) of frames (P, M, SS, FS), as ``spi serve`` sends it.

    Keys of ``source``: ``key`` (the frames, pulses first), ``<prefix>trainId`` and ``<prefix>pulseId`` (P,)
    uint64, :data:`SPI_INDEX_KEY` (P,) int64 and :data:`SPI_LABEL_KEY` (P strings) when given.
    """
    p = frames.shape[0]
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    props: dict[str, Any] = {
        key: np.ascontiguousarray(frames),
        f"{prefix}trainId": np.full(p, train_id, dtype=np.uint64),
        f"{prefix}pulseId": np.arange(p, dtype=np.uint64),
    }
    if indices is not None:
        props[SPI_INDEX_KEY] = np.asarray(indices, dtype=np.int64)
    if labels is not None:
        props[SPI_LABEL_KEY] = [str(v) for v in labels]
    t = time.time() if timestamp is None else float(timestamp)
    sec, _, frac = f"{t:.6f}".partition(".")
    meta = {source: {"source": source, "timestamp": t, "timestamp.sec": sec, "timestamp.frac": frac.ljust(18, "0"),
                     "timestamp.tid": int(train_id)}}
    return {source: props}, meta


# --------------------------------------------------------------------------------------------- spi-frames (ZeroMQ)


def encode_frame_message(
    frames: np.ndarray,
    *,
    train_id: int | None = None,
    pulse_ids: Sequence[int] | None = None,
    indices: Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    timestamp: float | None = None,
) -> bytes:
    """One ``spi-frames`` message (msgpack map) of frames (P, M, SS, FS) or one frame (M, SS, FS).

    Keys: ``format`` = "spi-frames", ``version`` = 1, ``frames`` = {``dtype`` (numpy type string, e.g. "<u2"),
    ``shape`` (list), ``data`` (raw C-order bytes)}, and optionally ``train_id`` (int), ``pulse_id``,
    ``index`` (lists of P ints), ``label`` (list of P true class names), ``timestamp`` (Unix time, s).
    """
    a = np.ascontiguousarray(frames)
    msg: dict[str, Any] = {
        "format": FRAME_FORMAT,
        "version": FORMAT_VERSION,
        "frames": {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()},
        "timestamp": time.time() if timestamp is None else float(timestamp),
    }
    if train_id is not None:
        msg["train_id"] = int(train_id)
    if pulse_ids is not None:
        msg["pulse_id"] = [int(v) for v in pulse_ids]
    if indices is not None:
        msg["index"] = [int(v) for v in indices]
    if labels is not None:
        msg["label"] = [str(v) for v in labels]
    return msgpack.packb(msg, use_bin_type=True)


def decode_frame_message(
    payload: bytes, frame_shape: tuple[int, int, int], t_arrival: float, counter: list[int] | None = None
) -> list[Shot]:
    """The shots of a ``spi-frames`` message (see :func:`encode_frame_message`).

    Raises:
        MalformedMessage: not msgpack, not a ``spi-frames`` map, or arrays that do not fit.
    """
    try:
        msg = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for broken input
        raise MalformedMessage(f"not a msgpack message ({exc.__class__.__name__})") from None
    if not isinstance(msg, dict) or msg.get("format") != FRAME_FORMAT:
        raise MalformedMessage(f"not a {FRAME_FORMAT} message (a msgpack map with format={FRAME_FORMAT!r})")
    if int(msg.get("version", 0)) > FORMAT_VERSION:
        raise MalformedMessage(f"{FRAME_FORMAT} version {msg.get('version')} is newer than this reader's")
    fr = msg.get("frames")
    if not isinstance(fr, dict) or not {"dtype", "shape", "data"} <= set(fr):
        raise MalformedMessage("frames must be a map with dtype, shape and data")
    try:
        dtype = np.dtype(fr["dtype"])
        shape = tuple(int(v) for v in fr["shape"])
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"bad frames dtype or shape: {exc}") from None
    check_frame_dtype(dtype)
    data = fr["data"]
    if not isinstance(data, bytes) or len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise MalformedMessage(f"frames data has {len(data) if isinstance(data, bytes) else 'no'} bytes, "
                               f"expected {int(np.prod(shape)) * dtype.itemsize} for {shape} {dtype}")
    frames = split_frames(np.frombuffer(data, dtype=dtype).reshape(shape), frame_shape)
    n = frames.shape[0]
    tid = msg.get("train_id")
    if tid is not None and not isinstance(tid, int):
        raise MalformedMessage(f"train_id {tid!r} is not an integer")
    return make_shots(
        frames, t_arrival=t_arrival, train_id=tid,
        pulse_ids=_int_list(msg.get("pulse_id"), n, "pulse_id"),
        indices=_int_list(msg.get("index"), n, "index"),
        truth=_str_list(msg.get("label"), n, "label"),
        counter=counter,
    )


# --------------------------------------------------------------------------------------------- results


def encode_results(
    class_names: Sequence[str],
    shots: Sequence[Shot],
    labels: Sequence[str],
    scores: np.ndarray,
    distances: np.ndarray,
    latency_ms: np.ndarray,
) -> list[bytes]:
    """A ``spi-stream-results`` message: [topic :data:`RESULT_TOPIC`, msgpack map] for one batch.

    Map keys: ``format``, ``version``, ``time`` (Unix s), ``class_names`` (C), and per shot (lists of B):
    ``index``, ``train_id`` and ``pulse_id`` (int or nil), ``label`` (class name or "unknown"), ``score``
    (single-hit score, see :mod:`spinet.stream.engine`), ``distances`` (B lists of C squared embedding
    distances), ``truth`` (class name or nil), ``latency_ms`` (from arrival to result).
    """
    msg = {
        "format": RESULT_FORMAT,
        "version": FORMAT_VERSION,
        "time": time.time(),
        "class_names": list(class_names),
        "index": [s.index for s in shots],
        "train_id": [s.train_id for s in shots],
        "pulse_id": [s.pulse_id for s in shots],
        "label": list(labels),
        "score": [float(v) for v in scores],
        "distances": np.asarray(distances, dtype=np.float64).tolist(),
        "truth": [s.truth for s in shots],
        "latency_ms": [float(v) for v in latency_ms],
    }
    return [RESULT_TOPIC, msgpack.packb(msg, use_bin_type=True)]


def decode_results(parts: Sequence[bytes]) -> dict:
    """The map of a results message (the parts as received: topic, payload)."""
    msg = msgpack.unpackb(parts[-1], raw=False)
    if not isinstance(msg, dict) or msg.get("format") != RESULT_FORMAT:
        raise MalformedMessage(f"not a {RESULT_FORMAT} message")
    return msg
