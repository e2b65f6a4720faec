"""A simulated beamline (``spi serve``): shots with their true labels sent through a real Karabo bridge server.

The shots are made first into memory (:func:`simulate_buffer`: ``spisim.generate.Simulator(manifest).shot(i)``;
or :func:`file_buffer`: an existing CXI file), so the sending rate does not depend on the simulation speed.
:class:`BeamlineServer` then feeds ``karabo_bridge.ServerInThread`` one train at a time: ``pulses`` shots per
train, trains due at ``pulses / rate`` second intervals, train ids counting up from ``first_train``.

Each train (:func:`spinet.stream.messages.karabo_train`) holds, under ``source`` (default
``SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED``, the name of EuXFEL's corrected AGIPD stream): ``image.data``
(P, M, SS, FS) in ``dtype``, ``image.trainId``, ``image.pulseId``, ``spi.index`` (the shots' indices in the
buffer) and ``spi.label`` (their true class names); metadata ``timestamp.tid`` = the train id.

Like a facility bridge, the server does not wait for a slow client: a REP socket sends a train when a client
asks for one and keeps at most ``buffer`` trains queued; older ones are dropped (counted in
:attr:`ServeResult.dropped_trains`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spisim.cxi import CXIReader
from spisim.errors import ConfigError, OutputFileError
from spisim.manifest import Manifest, load_manifest

from ..data import file_labels, shot_label_name
from .messages import DEFAULT_KARABO_KEY, karabo_train

DEFAULT_SOURCE = "SPB_DET_AGIPD1M-1/CAL/APPEND_CORRECTED"
SERVER_SOCKETS = ("REP", "PUB", "PUSH")
FRAME_DTYPES = ("float32", "float16", "uint16", "int32")


@dataclass
class ShotBuffer:
    """Shots to serve: frames (N, M, SS, FS), true class names (N), and where they came from."""

    frames: np.ndarray
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.frames)


def simulate_buffer(manifest_path: str | Path | Manifest | None, n_shots: int | None = None, *,
                    seed: int | None = None, label_mode: str = "hit_type",
                    progress: Callable[[int], None] | None = None) -> ShotBuffer:
    """Simulate the shots of a manifest (None: the built-in default) into memory.

    Args:
        manifest_path: the YAML manifest, or a loaded :class:`spisim.manifest.Manifest` (then ``n_shots`` and
            ``seed`` must be None: they are the manifest's).
        n_shots: shots (default: the manifest's ``shots``).
        seed: overrides the manifest's seed.
        label_mode: ``hit_type`` or ``structure_hit_type`` class names.
        progress: called with 1 after each shot.
    """
    from spisim.simulator import Simulator

    if isinstance(manifest_path, Manifest):
        if n_shots is not None or seed is not None:
            raise ValueError("give shots and seed as overrides when loading the manifest")
        m = manifest_path
    else:
        m = load_manifest(manifest_path, overrides={"shots": n_shots, "seed": seed})
    sim = Simulator(m)
    frames, labels = sim.shots(0, m.spec.shots, progress)
    names = [shot_label_name(lab, label_mode, m.spec.structure_names) for lab in labels]
    return ShotBuffer(frames, names, m.source)


def file_buffer(path: str | Path, n_shots: int | None = None, *, label_mode: str = "hit_type") -> ShotBuffer:
    """The first ``n_shots`` shots (default: all) of a CXI/HDF5 file; labels "" where the file has none."""
    with CXIReader(path) as r:
        n = len(r) if n_shots is None else min(int(n_shots), len(r))
        frames = r.frames(np.arange(n))
        names = [""] * n
        if r.has_labels:
            idx, lab = file_labels(r, label_mode)
            for i, name in zip(idx, lab, strict=True):
                if i < n:
                    names[int(i)] = name
    return ShotBuffer(frames, names, str(path))


@dataclass
class ServeResult:
    """What a serve run did: trains and shots fed to the bridge, trains dropped unsent, seconds."""

    trains: int
    shots: int
    dropped_trains: int
    seconds: float


class BeamlineServer:
    """Serve a :class:`ShotBuffer` through ``karabo_bridge.ServerInThread`` (module doc).

    Args:
        buffer: the shots.
        endpoint: where to bind, e.g. ``tcp://*:4545``.
        rate: shots/s (None: as fast as the bridge takes them).
        pulses: shots per train.
        socket: REP (clients use REQ, the Karabo default), PUB or PUSH.
        source, key: Karabo source name and data key of the frames.
        first_train: train id of the first train.
        dtype: dtype the frames are sent in (None: as they are).
        repeat: times the buffer is played (0: for ever).
        buffer_trains: trains the bridge keeps queued for a slow client.
        with_labels: send the true labels (``spi.label``).
    """

    def __init__(self, buffer: ShotBuffer, endpoint: str, *, rate: float | None = None, pulses: int = 1,
                 socket: str = "REP", source: str = DEFAULT_SOURCE, key: str = DEFAULT_KARABO_KEY,
                 first_train: int = 1_000_000, dtype: str | None = None, repeat: int = 1, buffer_trains: int = 10,
                 with_labels: bool = True) -> None:
        if rate is not None and not rate > 0:
            raise ConfigError(f"--rate must be > 0 shots/s, got {rate}")
        if pulses < 1:
            raise ConfigError(f"--pulses must be >= 1, got {pulses}")
        if socket.upper() not in SERVER_SOCKETS:
            raise ConfigError(f"--socket must be one of {', '.join(SERVER_SOCKETS)}, got {socket!r}")
        if dtype is not None and dtype not in FRAME_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(FRAME_DTYPES)}, got {dtype!r}")
        if len(buffer) == 0:
            raise ConfigError("nothing to serve: the buffer has no shots")
        self.buffer = buffer
        self.endpoint = endpoint
        self.rate = rate
        self.pulses = int(pulses)
        self.socket = socket.upper()
        self.source = source
        self.key = key
        self.first_train = int(first_train)
        self.repeat = int(repeat)
        self.buffer_trains = int(buffer_trains)
        self.with_labels = with_labels
        frames = buffer.frames
        if dtype is not None and frames.dtype != np.dtype(dtype):
            if np.dtype(dtype).kind in "iu":
                info = np.iinfo(dtype)
                frames = np.clip(np.rint(frames), info.min, info.max)
            frames = frames.astype(dtype)
        self.frames = frames
        self._stop = threading.Event()
        self.bound_endpoint: str | None = None

    def stop(self) -> None:
        """End :meth:`run` after the train in hand."""
        self._stop.set()

    def run(self, on_train: Callable[[int], None] | None = None, ready: threading.Event | None = None) -> ServeResult:
        """Serve until the buffer has been played ``repeat`` times or :meth:`stop`.

        Args:
            on_train: called with the number of shots after each train fed.
            ready: set once the socket is bound.
        """
        import zmq
        from karabo_bridge import ServerInThread

        try:
            server = ServerInThread(self.endpoint, sock=self.socket, maxlen=self.buffer_trains)
        except zmq.ZMQError as exc:
            raise OutputFileError(f"cannot serve on {self.endpoint}: {exc}") from None
        self.bound_endpoint = server.server_socket.getsockopt_string(zmq.LAST_ENDPOINT)
        server.start()
        if ready is not None:
            ready.set()
        n = len(self.buffer)
        trains = shots = dropped = 0
        t0 = time.monotonic()
        try:
            k = 0  # shots played so far (over all repeats)
            total = None if self.repeat == 0 else n * self.repeat
            while not self._stop.is_set() and (total is None or k < total):
                p = self.pulses if total is None else min(self.pulses, total - k)
                sel = (np.arange(k, k + p) % n)
                if self.rate is not None:
                    due = t0 + k / self.rate
                    while not self._stop.is_set() and (left := due - time.monotonic()) > 0:
                        time.sleep(min(left, 0.05))
                data, meta = karabo_train(
                    self.frames[sel], self.first_train + trains, source=self.source, key=self.key,
                    indices=sel, labels=[self.buffer.labels[i] for i in sel] if self.with_labels else None,
                )
                if self.rate is None:
                    while not self._stop.is_set():
                        try:
                            server.feed(data, meta, block=True, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                else:
                    try:
                        server.feed(data, meta, block=False)
                    except queue.Full:  # no client keeps up: drop the oldest queued train, like a facility bridge
                        try:
                            server.buffer.get_nowait()
                            dropped += 1
                        except queue.Empty:
                            pass
                        try:
                            server.feed(data, meta, block=False)
                        except queue.Full:
                            dropped += 1
                trains += 1
                shots += p
                k += p
                if on_train is not None:
                    on_train(p)
            # let the bridge hand over what it still holds (a client may still be asking)
            end = time.monotonic() + 2.0
            while not self._stop.is_set() and server.buffer.qsize() > 0 and time.monotonic() < end:
                time.sleep(0.01)
        finally:
            server.stop()
        return ServeResult(trains, shots, dropped, time.monotonic() - t0)
