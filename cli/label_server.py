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

The session (dataset, label file, game) is :class:`spisim.labelling.LabelSession`, the drawing of shots
:mod:`spisim.shotimage`; this module is the HTTP around them.

Every request is checked: the ``Host`` header (against DNS rebinding when bound to a loopback address), the
token (query ``token`` or header ``X-Spi-Token``; required when bound to any other address, and
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
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from spisim.errors import ConfigError
from spisim.labelling import LabelSession, SessionError, default_labels_path
from spisim.shotimage import (
    COLORMAPS,
    GAP_RGB,
    MAX_IMAGE_PIXELS,
    assembly_for,
    pixel_pitch,
    render_png,
    stacked_positions,
    to_image,
)

__all__ = [  # the server; and, re-exported for existing callers, the session and the drawing of shots
    "COLORMAPS", "GAP_RGB", "MAX_BODY_BYTES", "MAX_IMAGE_PIXELS", "MAX_URL_CHARS", "PAGE_FILES", "SECURITY_HEADERS",
    "SESSION_STATUS", "LabelHTTPServer", "LabelRequestHandler", "LabelSession", "RequestError", "SessionError",
    "assembly_for", "default_labels_path", "is_loopback", "page_bytes", "pixel_pitch", "render_png",
    "stacked_positions", "start_in_thread", "to_image",
]

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


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def from_session(cls, err: SessionError) -> RequestError:
        """The HTTP answer to a request the session refused."""
        return cls(SESSION_STATUS[err.kind], str(err))


SESSION_STATUS: dict[str, HTTPStatus] = {
    "invalid": HTTPStatus.BAD_REQUEST,
    "not_found": HTTPStatus.NOT_FOUND,
    "conflict": HTTPStatus.CONFLICT,
}
"""HTTP status of each kind of :class:`~spisim.labelling.SessionError`."""


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
        except SessionError as err:
            self._fail(RequestError.from_session(err))
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
        except SessionError as err:
            self._fail(RequestError.from_session(err))
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
