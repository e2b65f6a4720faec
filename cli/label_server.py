"""The local web server behind ``spi label``: one page to label shots by eye, and the "game of hit".

Only the standard library's :mod:`http.server` is used. What the server offers (nothing else):

========  ==========================  ==================================================================
method    path                        answer
========  ==========================  ==================================================================
GET       ``/``                       the page (``cli/label_page/index.html``)
GET       ``/static/app.js``          its script; ``/static/style.css`` its style sheet
GET       ``/api/state``              dataset, classes, labels and counts, where to continue, game state
GET       ``/api/shot/<i>.png``       shot ``i`` drawn in the assembled detector layout; query ``lo``,
                                      ``hi`` (contrast, percentiles 0–100), ``scale`` (``log``/``linear``),
                                      ``cmap`` (one of :data:`COLORMAPS`)
POST      ``/api/label``              ``{"index": i, "label": name}``: append a label
POST      ``/api/undo``               ``{}``: withdraw the latest label in force
POST      ``/api/finish``             ``{}``: end the game now and score it (``--game`` only)
========  ==========================  ==================================================================

Every request is checked: the ``Host`` header (against DNS rebinding when bound to a loopback address),
the token (query ``token`` or header ``X-Spi-Token``; required when bound to any other address, and
checked whenever given), the method, the exact path, the query keys and values, and for POST the content
type (``application/json``, which browsers never send cross-site without asking), the ``Origin`` (same
host), the body size and the JSON fields (index in range, label in the class set). Files are never looked
up by a name taken from the request: the page and its two assets are a fixed table.
"""

from __future__ import annotations

import hmac
import importlib.resources
import ipaddress
import json
import math
import re
import secrets
import socket
import statistics
import sys
import threading
import traceback
from collections import OrderedDict
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from spisim import __version__
from spisim.cxi import CXIReader
from spisim.detector.assemble import AssemblyMap, build_assembly_map
from spisim.errors import ConfigError, InputFileError
from spisim.labels import LabelLog, game_report, json_safe, now_iso, save_game_report

COLORMAPS: tuple[str, ...] = ("magma", "viridis", "inferno", "cividis", "gray", "gray_r")
"""Colour maps the page may ask for."""

GAP_RGB = (38, 42, 50)
"""Colour of gaps between modules and of masked pixels."""

MAX_IMAGE_PIXELS = 16_000_000
"""Largest assembled image accepted (a geometry beyond it is taken as wrong)."""

MAX_BODY_BYTES = 4096
MAX_URL_CHARS = 2048

PAGE_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""URL path → (file in ``cli/label_page``, content type): the only files served."""

SHOT_PATH = re.compile(r"/api/shot/(0|[1-9][0-9]{0,11})\.png")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


# --------------------------------------------------------------------------------------------------------
# Drawing shots


def pixel_pitch(pixel_position: np.ndarray) -> float:
    """Median distance (m) between neighbouring pixel centres along the first row and column of each
    module of ``pixel_position`` (M, SS, FS, 3) m."""
    pos = np.asarray(pixel_position, dtype=np.float64)
    if pos.ndim != 4 or pos.shape[-1] != 3:
        raise InputFileError(f"pixel_position must have shape (M, SS, FS, 3), got {pos.shape}")
    steps = [np.array([])]
    if pos.shape[2] > 1:
        steps.append(np.linalg.norm(np.diff(pos[:, 0, :, :2], axis=1), axis=-1).ravel())
    if pos.shape[1] > 1:
        steps.append(np.linalg.norm(np.diff(pos[:, :, 0, :2], axis=1), axis=-1).ravel())
    step = np.concatenate(steps)
    step = step[np.isfinite(step) & (step > 0)]
    if not step.size or not np.all(np.isfinite(pos[..., :2])):
        raise InputFileError("pixel_position has no usable pixel pitch (non-finite or coincident pixels)")
    return float(np.median(step))


def stacked_positions(frame_shape: tuple[int, int, int], gap: int = 4) -> np.ndarray:
    """Stand-in pixel centres (M, SS, FS, 3), pitch 1, for files without geometry: modules one above the
    other, ``gap`` pixels apart, fast scan to the right, slow scan down."""
    m, ss, fs = frame_shape
    pos = np.zeros((m, ss, fs, 3))
    pos[..., 0] = np.arange(fs)[None, None, :]
    pos[..., 1] = -(np.arange(ss)[None, :, None] + (ss + gap) * np.arange(m)[:, None, None])
    return pos


def assembly_for(pixel_position: np.ndarray | None, frame_shape: tuple[int, int, int]) -> AssemblyMap:
    """The nearest-pixel :class:`~spisim.detector.AssemblyMap` of a file's geometry at its own pixel pitch
    (rows from +y down, columns from −x to +x, as everywhere in the toolkit); stacked modules when the
    file has no ``pixel_position``."""
    pos = stacked_positions(frame_shape) if pixel_position is None else np.asarray(pixel_position, np.float64)
    pitch = pixel_pitch(pos)
    span = np.ptp(pos[..., 0]) / pitch + 1, np.ptp(pos[..., 1]) / pitch + 1
    if span[0] * span[1] > MAX_IMAGE_PIXELS:
        raise InputFileError(f"assembled image would be {span[1]:.0f}×{span[0]:.0f} pixels: pixel_position "
                             f"looks wrong (pitch {pitch:.3g} m)")
    return build_assembly_map(pos, np.ones(frame_shape, bool), pitch)


def to_image(frame: np.ndarray, assembly: AssemblyMap, mask: np.ndarray) -> np.ndarray:
    """(H, W) float32 image of a (M, SS, FS) frame; NaN in gaps and where ``mask`` (M, SS, FS) is True."""
    return assembly.assemble(np.where(mask, np.float32(np.nan), frame.astype(np.float32)))


def render_png(image: np.ndarray, lo: float, hi: float, scale: str = "log", cmap: str = "magma") -> bytes:
    """Colour a (H, W) image (NaN = gap) into PNG bytes.

    Args:
        image: (H, W) values (photons or ADU); negative values count as 0 on the log scale.
        lo, hi: contrast limits as percentiles (0 ≤ lo < hi ≤ 100) of the finite scaled values.
        scale: ``log`` (log(1 + v)) or ``linear``.
        cmap: a matplotlib colour-map name from :data:`COLORMAPS`.
    """
    import matplotlib
    from PIL import Image

    v = np.log1p(np.clip(image, 0, None)) if scale == "log" else image.astype(np.float64)
    finite = np.isfinite(v)
    if finite.any():
        vmin, vmax = np.percentile(v[finite], [lo, hi])
        if not vmax > vmin:
            vmax = float(v[finite].max())
        if not vmax > vmin:
            vmax = vmin + 1.0
    else:
        vmin, vmax = 0.0, 1.0
    # an indexed PNG: 255 colour levels and the gap colour last (several times faster than RGB)
    level = np.clip((np.where(finite, v, vmin) - vmin) * (254.0 / (vmax - vmin)) + 0.5, 0, 254).astype(np.uint8)
    level[~finite] = 255
    lut = np.round(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 255))[:, :3] * 255).astype(np.uint8)
    palette = np.vstack([lut, np.array(GAP_RGB, np.uint8)[None]])
    out = Image.fromarray(level, "P")
    out.putpalette(palette.ravel().tolist())
    buf = BytesIO()
    out.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------
# The labelling session (no HTTP here)


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def default_labels_path(data_path: str | Path, game: bool) -> Path:
    """``DATA.labels.csv`` (or ``DATA.game.csv`` for the game) beside ``DATA.h5``."""
    p = Path(data_path)
    return p.with_name(p.stem + (".game.csv" if game else ".labels.csv"))


class LabelSession:
    """A dataset, its label file, and (for the game) the hidden truth and the order of play.

    Args:
        data_path: the CXI/HDF5 dataset.
        labels_path: the CSV label file (created if absent, continued if present).
        game: play the game of hit (needs ground truth in the dataset).
        game_shots: number of shots in a game (at most the dataset size).
        seed: seed of the game's random order.
        token: the access token; a random one when None.
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
    ) -> None:
        self.data_path = Path(data_path)
        self.reader = CXIReader(self.data_path)
        self.n_shots = len(self.reader)
        if self.n_shots == 0:
            raise InputFileError(f"{self.data_path} has no shots")
        self.class_names: list[str] = list(self.reader.class_names)
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
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n_shots:
            is_int = isinstance(index, int) and not isinstance(index, bool)
            raise RequestError(HTTPStatus.NOT_FOUND if is_int else HTTPStatus.BAD_REQUEST,
                               f"shot index must be an integer in 0..{self.n_shots - 1}, got {index!r}")
        if self.game and index not in self.in_game:
            raise RequestError(HTTPStatus.NOT_FOUND, f"shot {index} is not part of this game")
        return index

    # ---- labels
    def label(self, index: object, label: object) -> dict:
        """Append a label; returns counts, and the report when this label ended the game."""
        index = self.check_index(index)
        if not isinstance(label, str) or label not in self.class_names:
            raise RequestError(HTTPStatus.BAD_REQUEST,
                               f"label must be one of {', '.join(self.class_names)}, got {label!r}")
        if self.finished:
            raise RequestError(HTTPStatus.CONFLICT, "the game is over")
        row = self.log.add(index, label)
        out = {"index": index, "label": label, "time": row.time, "counts": self.log.counts()}
        if self.game and self._all_played():
            out["report"] = self.finish()
        return out

    def undo(self) -> dict:
        """Withdraw the latest label in force: ``{"index", "label" (now), "counts"}`` (index None: nothing)."""
        if self.finished:
            raise RequestError(HTTPStatus.CONFLICT, "the game is over")
        done = self.log.undo()
        index, label = done if done else (None, None)
        return {"index": index, "label": label, "counts": self.log.counts()}

    # ---- the game
    def finish(self) -> dict:
        """Score the shots played so far, save the report beside the label file, end the game."""
        if not self.game or self.truth is None:
            raise RequestError(HTTPStatus.NOT_FOUND, "not a game: start spi label with --game")
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


# --------------------------------------------------------------------------------------------------------
# HTTP


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_bytes(name: str) -> bytes:
    """A file of ``cli/label_page`` (package data)."""
    return importlib.resources.files("cli").joinpath("label_page", name).read_bytes()


class LabelHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves one :class:`LabelSession`.

    Args:
        session: the session to serve.
        host: address to bind (``127.0.0.1`` by default; IPv6 addresses work too).
        port: TCP port; 0 picks a free one (see :attr:`url`).
    """

    daemon_threads = True

    def __init__(self, session: LabelSession, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self.host = host
        self.require_token = not is_loopback(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, int(port)), LabelRequestHandler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = int(self.server_address[1])
        self.pages = {path: page_bytes(name) for path, (name, _) in PAGE_FILES.items()}

    def handle_error(self, request: object, client_address: object) -> None:
        """A browser that went away mid-answer is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """The page's address, with the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.session.token}"

    def allowed_host(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server (any host when bound to a non-loopback address)."""
        if header is None:
            return False
        if self.require_token:
            return True
        names = {self.host, "localhost", "127.0.0.1", "[::1]"}
        if ":" in self.host:
            names.add(f"[{self.host}]")
        return header.lower() in {f"{n}:{self.port}" for n in names}


class LabelRequestHandler(BaseHTTPRequestHandler):
    """Answers the requests listed in the module docstring; refuses everything else."""

    server: LabelHTTPServer
    server_version = "spi-label"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the terminal stays readable while labelling."""

    # ---- responses
    def _send(self, status: HTTPStatus, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _fail(self, err: RequestError, extra: dict | None = None) -> None:
        self._send(err.status, json.dumps({"error": str(err)}).encode(), "application/json", extra)

    # ---- checks
    def _check_common(self) -> tuple[str, dict[str, str]]:
        """Host, URL form, token; returns (path, query)."""
        if len(self.path) > MAX_URL_CHARS:
            raise RequestError(HTTPStatus.REQUEST_URI_TOO_LONG, "URL too long")
        if not self.server.allowed_host(self.headers.get("Host")):
            raise RequestError(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if not self.path.startswith("/"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad request target")
        parts = urlsplit(self.path)
        try:
            raw = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query),
                           max_num_fields=8)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "malformed query") from None
        if any(len(v) != 1 for v in raw.values()):
            raise RequestError(HTTPStatus.BAD_REQUEST, "repeated query parameter")
        query = {k: v[0] for k, v in raw.items()}
        token = query.pop("token", None) or self.headers.get("X-Spi-Token")
        if token is not None:
            if not hmac.compare_digest(token.encode(), self.server.session.token.encode()):
                raise RequestError(HTTPStatus.FORBIDDEN, "wrong token")
        elif self.server.require_token:
            raise RequestError(HTTPStatus.FORBIDDEN, "a token is required: use the address spi label printed")
        return parts.path, query

    def _route(self, path: str) -> tuple[str, int | None]:
        """(route name, shot index) of a path; 404 for anything unknown."""
        if path in PAGE_FILES:
            return "page", None
        if path in ("/api/state",):
            return "state", None
        if path in ("/api/label", "/api/undo", "/api/finish"):
            return path.rsplit("/", 1)[1], None
        m = SHOT_PATH.fullmatch(path)
        if m:
            return "shot", int(m.group(1))
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    # ---- methods
    def do_GET(self) -> None:  # noqa: N802
        try:
            path, query = self._check_common()
            route, index = self._route(path)
            if route in ("label", "undo", "finish"):
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
            if route == "page":
                _no_query(query)
                self._send(HTTPStatus.OK, self.server.pages[path], PAGE_FILES[path][1])
            elif route == "state":
                _no_query(query)
                self._json(self.server.session.state())
            else:
                self._shot(index, query)
        except RequestError as err:
            allow = {"Allow": "POST"} if err.status == HTTPStatus.METHOD_NOT_ALLOWED else None
            self._fail(err, allow)
        except Exception as exc:  # noqa: BLE001 - answer, and show it in the terminal
            self._internal_error(exc)

    def _shot(self, index: int | None, query: dict[str, str]) -> None:
        session = self.server.session
        session.check_index(index)
        unknown = set(query) - {"lo", "hi", "scale", "cmap"}
        if unknown:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {sorted(unknown)[0]!r}")
        lo = _percent(query.get("lo", "0"), "lo")
        hi = _percent(query.get("hi", "99.5"), "hi")
        if not lo < hi:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"lo ({lo}) must be below hi ({hi})")
        scale = query.get("scale", "log")
        if scale not in ("log", "linear"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "scale must be log or linear")
        cmap = query.get("cmap", "magma")
        if cmap not in COLORMAPS:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"cmap must be one of {', '.join(COLORMAPS)}")
        image, stats = session.shot_image(index)
        png = render_png(image, lo, hi, scale, cmap)
        self._send(HTTPStatus.OK, png, "image/png",
                   {"X-Shot-Sum": f"{stats['sum']:.6g}", "X-Shot-Max": f"{stats['max']:.6g}"})

    def do_POST(self) -> None:  # noqa: N802
        try:
            path, query = self._check_common()
            route, _ = self._route(path)
            if route not in ("label", "undo", "finish"):
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "use GET")
            _no_query(query)
            body = self._body()
            session = self.server.session
            if route == "label":
                if set(body) != {"index", "label"}:
                    raise RequestError(HTTPStatus.BAD_REQUEST, 'body must be {"index": int, "label": str}')
                self._json(session.label(body["index"], body["label"]))
            elif route == "undo":
                if body:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "body must be {}")
                self._json(session.undo())
            else:
                if body:
                    raise RequestError(HTTPStatus.BAD_REQUEST, "body must be {}")
                self._json({"report": session.finish()})
        except RequestError as err:
            allow = {"Allow": "GET"} if err.status == HTTPStatus.METHOD_NOT_ALLOWED else None
            self._fail(err, allow)
        except Exception as exc:  # noqa: BLE001 - answer, and show it in the terminal
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionError):
            return
        traceback.print_exc(file=sys.stderr)
        self._fail(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"server error: {exc.__class__.__name__}: {exc}"))

    def _body(self) -> dict:
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (self.headers.get("Host") or "").lower():
            raise RequestError(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def _refuse(self) -> None:
        try:
            path, _ = self._check_common()
            route, _ = self._route(path)
            allow = "POST" if route in ("label", "undo", "finish") else "GET"
            self._fail(RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed"),
                       {"Allow": allow})
        except RequestError as err:
            self._fail(err)
        self.close_connection = True

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = _refuse  # noqa: N815


def _no_query(query: dict[str, str]) -> None:
    if query:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unexpected query parameter {sorted(query)[0]!r}")


def _percent(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 100.0:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be a percentile in 0..100, got {text!r}")
    return value


def start_in_thread(server: LabelHTTPServer, poll_interval: float = 0.05) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); stop with ``server.shutdown(); server.server_close()``
    (``shutdown`` returns within ``poll_interval`` seconds)."""
    thread = threading.Thread(target=server.serve_forever, args=(poll_interval,), name="spi-label-server",
                              daemon=True)
    thread.start()
    return thread
