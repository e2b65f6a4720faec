"""``spi label`` without a browser: the label file, the game score, shot drawing, and the HTTP server's
answers to good and bad requests (path traversal, bad index, bad label, wrong token, wrong method ...)."""

from __future__ import annotations

import csv
import http.client
import json
import math
import os
import re
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from cli.label_server import (
    GAP_RGB,
    LabelHTTPServer,
    LabelSession,
    assembly_for,
    is_loopback,
    render_png,
    start_in_thread,
    to_image,
)
from spisim.cxi import HIT_TYPES, CXIWriter, ShotLabels
from spisim.errors import ConfigError, InputFileError
from spisim.labels import (
    HEADER,
    LabelLog,
    game_report,
    game_report_paths,
    label_codes,
    read_labels,
    read_rows,
    save_game_report,
)

# ------------------------------------------------------------------------------------------------------
# A small synthetic dataset: two 40 × 64 modules of 75 µm pixels, one above the beam and one below,
# 6 pixels apart, a masked beam stop; each shot's pattern is recognisable by eye.

PIXEL = 75e-6
SS, FS, GAP_PX = 40, 64, 6
N_SHOTS = 12
TRUTH = np.array([1, 0, 2, 3, 1, 0, 3, 2, 1, 2, 0, 3])


def detector_geometry() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pixel_position (2, SS, FS, 3) m, solid_angle (2, SS, FS), mask (2, SS, FS).

    Module 0 occupies image rows 0..SS-1, module 1 rows SS+GAP_PX..; slow scan runs down (−y); fast
    scan runs along +x, so image column = fs (x increases to the right, as spisim.detector draws).
    """
    ss, fs = np.meshgrid(np.arange(SS), np.arange(FS), indexing="ij")
    pos = np.zeros((2, SS, FS, 3))
    top = (SS + GAP_PX / 2) * PIXEL  # y of module 0's first row, ~ above the beam
    for m in range(2):
        row0 = m * (SS + GAP_PX)
        pos[m, ..., 0] = (fs - (FS - 1) / 2) * PIXEL
        pos[m, ..., 1] = top - (row0 + ss) * PIXEL
        pos[m, ..., 2] = 0.1
    r2 = (pos[..., 0] ** 2 + pos[..., 1] ** 2) + 0.1**2
    solid = PIXEL**2 * 0.1 / r2**1.5
    mask = np.hypot(pos[..., 0], pos[..., 1]) < 6 * PIXEL
    return pos, solid, mask


def synthetic_frame(kind: int, rng: np.random.Generator) -> np.ndarray:
    """(2, SS, FS) photons: 0 background, 1 sphere rings, 2 sphere rings × two-particle fringes, 3 streak."""
    pos, _, _ = detector_geometry()
    x, y = pos[..., 0] / PIXEL, pos[..., 1] / PIXEL
    r = np.hypot(x, y) + 1e-3
    expected = np.full(x.shape, 0.03)
    if kind in (1, 2):
        qr = 0.35 * r
        sphere = ((np.sin(qr) - qr * np.cos(qr)) / qr**3) ** 2
        pattern = 60.0 * sphere / sphere.max()
        if kind == 2:
            pattern = pattern * (1 + np.cos(0.9 * x + 0.4 * y))
        expected = expected + pattern
    elif kind == 3:
        expected = expected + 40.0 * np.exp(-(((x - 0.6 * y) / 2.0) ** 2)) * (r > 8)
    return rng.poisson(expected).astype(np.float32)


def write_dataset(path: Path, *, seed: int = 5) -> Path:
    """Write the synthetic N_SHOTS dataset (truth TRUTH) with spisim.cxi.CXIWriter."""
    pos, solid, mask = detector_geometry()
    rng = np.random.default_rng(seed)
    with CXIWriter(path, N_SHOTS, pixel_position=pos, solid_angle=solid, mask=mask, photon_energy_ev=1700.0,
                   pulse_energy_j=1e-3, structures=["sphere"], max_particles=2) as w:
        for i, kind in enumerate(TRUTH):
            n = {0: 0, 1: 1, 2: 2, 3: 0}[int(kind)]
            lab = ShotLabels(int(kind), np.zeros(n, int), np.tile([1.0, 0, 0, 0], (n, 1)), np.zeros((n, 3)),
                             1e16, float(TRUTH[i]))
            w.write_shot(i, synthetic_frame(int(kind), rng), lab)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "run.h5")


# ------------------------------------------------------------------------------------------------------
# The label file


def test_label_log_appends_undoes_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    with LabelLog(path, n_shots=10) as log:
        log.add(3, "single")
        log.add(4, "no_hit")
        log.add(3, "multi")  # relabel
        assert log.undo() == (3, "single")  # the relabel withdrawn, the first label back
        assert log.counts() == {"no_hit": 1, "single": 1, "multi": 0, "unintended": 0}
        assert log.last_index == 4
        # every action is on disk at once, before close
        lines = path.read_text().splitlines()
        assert lines[0] == ",".join(HEADER)
        assert [ln.split(",")[:2] for ln in lines[1:]] == [["3", "single"], ["4", "no_hit"], ["3", "multi"],
                                                           ["3", "undo"]]
    assert read_labels(path) == {3: "single", 4: "no_hit"}
    # a restart continues, and undo reaches back into the earlier session
    with LabelLog(path, n_shots=10) as log:
        assert log.labels == {3: "single", 4: "no_hit"}
        assert log.undo() == (4, None)
        assert log.undo() == (3, None)
        assert log.undo() is None
        log.add(7, "unintended")
    codes = label_codes(path, 10)
    assert codes.tolist() == [-1] * 7 + [3] + [-1] * 2
    times = [row.time for row in read_rows(path)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", t) for t in times)


def test_cut_short_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("index,label,time\n0,single,2025-01-01T00:00:00.000+00:00\n1,mul")
    assert read_labels(path) == {0: "single"}
    with LabelLog(path, n_shots=5) as log:
        log.add(2, "multi")
    assert path.read_text().splitlines()[1:] == ["0,single,2025-01-01T00:00:00.000+00:00",
                                                 path.read_text().splitlines()[2]]
    assert read_labels(path) == {0: "single", 2: "multi"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idx,lab,t\n", "not a label file"),
        ("index,label,time\n0,banana,t\n", "unknown label 'banana'"),
        ("index,label,time\n12,single,t\n", "out of range"),
        ("index,label,time\n-1,single,t\n", "not a non-negative integer"),
        ("index,label,time\n0,undo,t\n", "no label in force"),
        ("index,label,time\n0,single\n", "expected 3 fields"),
    ],
)
def test_bad_label_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputFileError, match=message):
        read_labels(path, n_shots=10)
    with pytest.raises(InputFileError, match=message):
        LabelLog(path, n_shots=10)


def test_game_report_against_a_hand_count(tmp_path: Path) -> None:
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    guess = np.array([0, 0, 1, 1, 1, 2, 1, 2, 1, 0])
    rep = game_report(truth, guess)
    # confusion by hand: truth 0 -> guessed 0,0,1,0 ; truth 1 -> 1,1,1 ; truth 2 -> 2,1,2 ; no truth 3
    assert rep["confusion"] == [[3, 1, 0, 0], [0, 3, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    assert rep["accuracy"] == pytest.approx(8 / 10)
    assert rep["classes"]["single"]["precision"] == pytest.approx(3 / 5)
    assert rep["classes"]["single"]["recall"] == pytest.approx(1.0)
    assert rep["classes"]["no_hit"]["recall"] == pytest.approx(3 / 4)
    assert rep["classes"]["multi"]["precision"] == pytest.approx(1.0)
    assert math.isnan(rep["classes"]["unintended"]["precision"]) and math.isnan(rep["classes"]["unintended"]["recall"])
    labels = tmp_path / "g.csv"
    jpath, cpath = save_game_report(rep, labels, {"seed": 7})
    assert (jpath, cpath) == game_report_paths(labels) == (tmp_path / "g.results.json", tmp_path / "g.results.csv")
    doc = json.loads(jpath.read_text())
    assert doc["seed"] == 7 and doc["classes"]["unintended"]["precision"] is None
    rows = list(csv.DictReader(cpath.open()))
    assert [r["class"] for r in rows] == list(HIT_TYPES)
    assert rows[0]["labelled_no_hit"] == "3" and rows[0]["labelled_single"] == "1"
    assert float(rows[1]["precision"]) == pytest.approx(0.6) and rows[3]["precision"] == ""


# ------------------------------------------------------------------------------------------------------
# Drawing


def test_assembly_puts_each_pixel_where_its_position_says() -> None:
    pos, _, mask = detector_geometry()
    asm = assembly_for(pos, (2, SS, FS))
    assert asm.pixel_size == pytest.approx(PIXEL)
    assert asm.image_shape == (2 * SS + GAP_PX, FS)
    # each pixel carries its own number; it must land where the geometry was built to put it
    ident = np.arange(2 * SS * FS, dtype=np.float32).reshape(2, SS, FS)
    img = to_image(ident, asm, np.zeros_like(mask))
    ss, fs = np.meshgrid(np.arange(SS), np.arange(FS), indexing="ij")
    for m in range(2):
        np.testing.assert_array_equal(img[ss + m * (SS + GAP_PX), fs], ident[m])
    frame = np.random.default_rng(1).random((2, SS, FS)).astype(np.float32) + 0.5
    img = to_image(frame, asm, mask)
    # signal conserved, every unmasked pixel in its own cell, gap rows empty
    assert np.nansum(img) == pytest.approx(frame[~mask].sum(), rel=1e-6)
    assert np.isfinite(img).sum() == (~mask).sum()
    assert np.isnan(img[SS : SS + GAP_PX]).all()
    # files without geometry: modules stacked, gap of 4
    stacked = assembly_for(None, (2, SS, FS))
    assert stacked.image_shape == (2 * SS + 4, FS)
    np.testing.assert_array_equal(to_image(ident, stacked, np.zeros_like(mask))[SS + 4 :], ident[1])


def test_render_png_colours_gaps_and_follows_contrast() -> None:
    pos, _, mask = detector_geometry()
    asm = assembly_for(pos, (2, SS, FS))
    frame = np.zeros((2, SS, FS), np.float32)
    frame[1, 5, 10] = 500.0  # one bright pixel, module 1
    frame[0] = np.random.default_rng(2).poisson(2.0, (SS, FS))
    img = to_image(frame, asm, mask)
    rgb = np.asarray(Image.open(BytesIO(render_png(img, 0, 100, "log", "gray"))).convert("RGB"))
    assert rgb.shape == (*asm.image_shape, 3)
    assert tuple(rgb[SS + 1, 3]) == GAP_RGB  # a gap row
    r, c = np.unravel_index(np.argmax(rgb[..., 0].astype(int) - 255 * np.isnan(img)), img.shape)
    assert (r, c) == (SS + GAP_PX + 5, 10)
    assert tuple(rgb[r, c]) == (255, 255, 255)  # 100th percentile is white in gray
    # a lower high limit saturates more pixels
    def white(png: bytes) -> int:
        return int((np.asarray(Image.open(BytesIO(png)).convert("RGB")) == 255).all(axis=-1).sum())

    sat_full = white(render_png(img, 0, 100, "log", "gray"))
    sat_low = white(render_png(img, 0, 90, "log", "gray"))
    assert sat_full == 1 and sat_low > 10


# ------------------------------------------------------------------------------------------------------
# The server


class Client:
    """Raw HTTP requests (paths sent exactly as given, no client-side normalisation)."""

    def __init__(self, server: LabelHTTPServer) -> None:
        self.port = server.port
        self.token = server.session.token

    def request(self, method: str, path: str, body: object = None, headers: dict | None = None,
                raw: bytes | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in h.items():
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        out = resp.status, dict(resp.getheaders()), resp.read()
        conn.close()
        return out


def serve(session: LabelSession, host: str = "127.0.0.1"):
    server = LabelHTTPServer(session, host, 0)
    start_in_thread(server)
    return server


@pytest.fixture
def server(dataset: Path):
    srv = serve(LabelSession(dataset, dataset.with_name("run.labels.csv")))
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.session.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the tests that must change nothing (they check the label file stays as it was)."""
    data = write_dataset(tmp_path_factory.mktemp("shared") / "run.h5")
    srv = serve(LabelSession(data, data.with_name("run.labels.csv")))
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.session.close()


def test_page_state_and_shot_images(server: LabelHTTPServer, dataset: Path) -> None:
    c = Client(server)
    status, headers, body = c.request("GET", "/")
    assert status == 200 and b'<script src="/static/app.js">' in body
    assert headers["X-Content-Type-Options"] == "nosniff" and "default-src 'none'" in headers["Content-Security-Policy"]
    for path, ctype in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        status, headers, body = c.request("GET", path)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(body) > 1000
    status, _, body = c.request("GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and state["n_shots"] == N_SHOTS and state["class_names"] == list(HIT_TYPES)
    assert state["mode"] == "label" and state["position"] == 0 and state["labels"] == {}
    assert state["image_shape"] == [2 * SS + GAP_PX, FS]
    status, headers, body = c.request("GET", "/api/shot/2.png?lo=1&hi=99&scale=linear&cmap=viridis")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(BytesIO(body)).size == (FS, 2 * SS + GAP_PX)
    with h5py.File(dataset) as f:
        frame = f["/entry_1/data_1/data"][2]
        mask = f["/entry_1/instrument_1/detector_1/mask"][()] != 0
    assert float(headers["X-Shot-Sum"]) == pytest.approx(frame[~mask].sum(), rel=1e-5)
    # the pattern is the one drawn: same pixels as rendering the frame directly
    expect = render_png(to_image(frame, server.session.assembly, mask), 1, 99, "linear", "viridis")
    assert np.array_equal(np.asarray(Image.open(BytesIO(body)).convert("RGB")),
                          np.asarray(Image.open(BytesIO(expect)).convert("RGB")))


def test_labels_and_undo_over_http_are_written_at_once(server: LabelHTTPServer) -> None:
    c = Client(server)
    path = server.session.labels_path
    status, _, body = c.request("POST", "/api/label", {"index": 0, "label": "single"})
    assert status == 200 and json.loads(body)["counts"]["single"] == 1
    assert read_labels(path) == {0: "single"}  # on disk while the server runs
    c.request("POST", "/api/label", {"index": 5, "label": "multi"})
    status, _, body = c.request("POST", "/api/undo", {})
    assert status == 200 and json.loads(body)["index"] == 5 and json.loads(body)["label"] is None
    c.request("POST", "/api/label", {"index": 1, "label": "no_hit"})
    assert read_labels(path) == {0: "single", 1: "no_hit"}
    state = json.loads(c.request("GET", "/api/state")[2])
    assert state["labels"] == {"0": "single", "1": "no_hit"} and state["position"] == 2


TRAVERSALS = [
    "/../../etc/passwd",
    "/static/../label_server.py",
    "/static/..%2flabel_server.py",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/app.js/",
    "/static/index.html",
    "/static/label_page/app.js",
    "//etc/passwd",
    "/api/shot/../../../etc/passwd.png",
    "/api/shot/%2e%2e%2f1.png",
    "/index.html",
    "/api/shot/1.png/../../run.h5",
    "/api/state/",
    "/favicon.ico",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_the_fixed_table_is_served(shared_server: LabelHTTPServer, path: str) -> None:
    status, _, body = Client(shared_server).request("GET", path)
    assert status == 404, (path, body)
    assert json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/shot/12.png", 404),  # N_SHOTS = 12: out of range
        ("/api/shot/99999999999.png", 404),
        ("/api/shot/-1.png", 404),
        ("/api/shot/01.png", 404),
        ("/api/shot/1e1.png", 404),
        ("/api/shot/1.png?lo=50&hi=10", 400),
        ("/api/shot/1.png?lo=nan", 400),
        ("/api/shot/1.png?hi=101", 400),
        ("/api/shot/1.png?cmap=../../etc", 400),
        ("/api/shot/1.png?scale=sqrt", 400),
        ("/api/shot/1.png?lo=1&lo=2", 400),
        ("/api/shot/1.png?path=/etc/passwd", 400),
        ("/api/state?x=1", 400),
        ("http://evil.example/api/state", 400),
    ],
)
def test_bad_shot_requests(shared_server: LabelHTTPServer, path: str, status: int) -> None:
    got, headers, body = Client(shared_server).request("GET", path)
    assert got == status, (path, body)
    assert headers["Content-Type"] == "application/json" and "error" in json.loads(body)


@pytest.mark.parametrize(
    ("body", "raw", "headers", "status"),
    [
        ({"index": 3, "label": "banana"}, None, None, 400),
        ({"index": 3, "label": "undo"}, None, None, 400),
        ({"index": 12, "label": "single"}, None, None, 404),
        ({"index": -1, "label": "single"}, None, None, 404),
        ({"index": "3", "label": "single"}, None, None, 400),
        ({"index": True, "label": "single"}, None, None, 400),
        ({"index": 2.0, "label": "single"}, None, None, 400),
        ({"index": 3, "label": "single", "x": 1}, None, None, 400),
        ({"index": 3}, None, None, 400),
        (None, b"index=3&label=single", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        (None, b'{"index": 3, "label": "single"}', {"Content-Type": "text/plain"}, 415),
        (None, b"{not json", None, 400),
        (None, b"[3, 4]", None, 400),
        (None, b"{" + b" " * 5000 + b"}", None, 413),
        ({"index": 3, "label": "single"}, None, {"Origin": "http://evil.example"}, 403),
    ],
)
def test_bad_label_requests_change_nothing(shared_server: LabelHTTPServer, body, raw, headers, status) -> None:
    before = shared_server.session.labels_path.read_bytes()
    got, _, answer = Client(shared_server).request("POST", "/api/label", body, headers, raw)
    assert got == status, answer
    assert "error" in json.loads(answer)
    assert shared_server.session.labels_path.read_bytes() == before


def test_same_origin_post_is_accepted(server: LabelHTTPServer) -> None:
    c = Client(server)
    status, _, _ = c.request("POST", "/api/label", {"index": 3, "label": "multi"},
                             {"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200 and read_labels(server.session.labels_path) == {3: "multi"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/", "GET"),
        ("POST", "/api/state", "GET"),
        ("POST", "/api/shot/1.png", "GET"),
        ("GET", "/api/label", "POST"),
        ("GET", "/api/undo", "POST"),
        ("PUT", "/api/label", "POST"),
        ("DELETE", "/api/label", "POST"),
        ("PATCH", "/", "GET"),
        ("OPTIONS", "/api/label", "POST"),
    ],
)
def test_wrong_methods_are_refused(shared_server: LabelHTTPServer, method: str, path: str, allow: str) -> None:
    before = shared_server.session.labels_path.read_bytes()
    body = {"index": 1, "label": "single"} if method != "GET" else None
    status, headers, _ = Client(shared_server).request(method, path, body)
    assert status == 405 and headers["Allow"] == allow
    assert shared_server.session.labels_path.read_bytes() == before


def test_tokens_and_host_header(shared_server: LabelHTTPServer) -> None:
    c = Client(shared_server)
    token = shared_server.session.token
    assert len(token) >= 20
    assert c.request("GET", f"/?token={token}")[0] == 200  # accepted on loopback too
    assert c.request("GET", "/api/state", headers={"X-Spi-Token": token})[0] == 200
    assert c.request("GET", "/?token=wrong")[0] == 403
    assert c.request("GET", f"/?token={token[:-1]}")[0] == 403
    assert c.request("GET", "/api/state", headers={"X-Spi-Token": "wrong"})[0] == 403
    assert c.request("POST", "/api/label?token=wrong", {"index": 1, "label": "single"})[0] == 403
    # DNS rebinding: a page of another site resolving to 127.0.0.1 sends its own Host
    assert c.request("GET", "/api/state", headers={"Host": f"evil.example:{shared_server.port}"})[0] == 403
    assert c.request("GET", "/api/state", headers={"Host": f"localhost:{shared_server.port}"})[0] == 200
    assert read_labels(shared_server.session.labels_path) == {}


def test_token_required_off_loopback(dataset: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    srv = serve(LabelSession(dataset, dataset.with_name("t.csv")), host="0.0.0.0")
    try:
        assert srv.require_token and f"token={srv.session.token}" in srv.url
        c = Client(srv)
        assert c.request("GET", "/")[0] == 403
        assert c.request("GET", "/api/shot/0.png")[0] == 403
        assert c.request("POST", "/api/label", {"index": 1, "label": "single"})[0] == 403
        assert c.request("GET", "/?token=nope")[0] == 403
        assert c.request("GET", f"/?token={srv.session.token}")[0] == 200
        status, _, body = c.request("POST", "/api/label", {"index": 1, "label": "single"},
                                    {"X-Spi-Token": srv.session.token})
        assert status == 200
    finally:
        srv.shutdown()
        srv.server_close()
        srv.session.close()


# ------------------------------------------------------------------------------------------------------
# The game


def test_game_hides_truth_keeps_order_and_scores(dataset: Path, tmp_path: Path) -> None:
    labels = tmp_path / "game.csv"
    session = LabelSession(dataset, labels, game=True, game_shots=6, seed=11)
    again = LabelSession(dataset, tmp_path / "other.csv", game=True, game_shots=6, seed=11)
    other = LabelSession(dataset, tmp_path / "other2.csv", game=True, game_shots=6, seed=12)
    order = session.order
    assert order == again.order and order != other.order and len(set(order)) == 6
    for s in (again, other):
        s.close()
    srv = serve(session)
    c = Client(srv)
    try:
        state = json.loads(c.request("GET", "/api/state")[2])
        assert state["mode"] == "game" and state["game"]["order"] == order and state["game"]["report"] is None
        # nothing per shot but the order and the person's own labels
        assert set(state) == {"dataset", "labels_file", "n_shots", "class_names", "units", "image_shape", "mode",
                              "labels", "counts", "position", "colormaps", "version", "game"}
        assert set(state["game"]) == {"order", "seed", "finished", "report"}
        outside = next(i for i in range(N_SHOTS) if i not in order)
        assert c.request("GET", f"/api/shot/{outside}.png")[0] == 404
        assert c.request("POST", "/api/label", {"index": outside, "label": "single"})[0] == 404
        # answer: right for the first four, one class off for the last two
        guesses = [int(TRUTH[i]) if k < 4 else (int(TRUTH[i]) + 1) % 4 for k, i in enumerate(order)]
        for k, (i, g) in enumerate(zip(order, guesses, strict=True)):
            status, _, body = c.request("POST", "/api/label", {"index": i, "label": HIT_TYPES[g]})
            assert status == 200
            assert ("report" in json.loads(body)) == (k == 5)
        report = json.loads(body)["report"]
        expect = game_report(TRUTH[order], np.array(guesses))
        assert report["accuracy"] == pytest.approx(4 / 6)
        assert report["confusion"] == expect["confusion"]
        jpath, cpath = game_report_paths(labels)
        doc = json.loads(jpath.read_text())
        assert doc["accuracy"] == pytest.approx(4 / 6) and doc["seed"] == 11 and doc["complete"] is True
        assert doc["confusion"] == expect["confusion"] and cpath.is_file()
        assert c.request("POST", "/api/label", {"index": order[0], "label": "single"})[0] == 409
        assert c.request("POST", "/api/undo", {})[0] == 409
    finally:
        srv.shutdown()
        srv.server_close()
        session.close()
    # a restart shows the finished game; another seed on the same file is refused
    with pytest.raises(ConfigError, match="outside this game"):
        LabelSession(dataset, labels, game=True, game_shots=6, seed=12)
    s = LabelSession(dataset, labels, game=True, game_shots=6, seed=11)
    st = s.state()
    assert st["game"]["finished"] and st["game"]["report"]["accuracy"] == pytest.approx(4 / 6)
    s.close()


def test_game_needs_ground_truth(dataset: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.h5"
    real.write_bytes(dataset.read_bytes())
    with h5py.File(real, "a") as f:
        del f["/entry_1/labels"]
    with pytest.raises(ConfigError, match="needs a simulated dataset with ground truth"):
        LabelSession(real, game=True)
    s = LabelSession(real)  # labelling real data works
    assert s.class_names == list(HIT_TYPES) and s.labels_path == tmp_path / "real.labels.csv"
    s.close()


# ------------------------------------------------------------------------------------------------------
# The command


def test_command_prints_address_and_serves(dataset: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import spi; spi()", "label", str(dataset), "--no-browser", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = None
        for _ in range(10):
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
            if m:
                url = m
                break
        assert url, proc.stderr.read() if proc.poll() is not None else "no address printed"
        port, token = int(url.group(1)), url.group(2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/?token={token}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert dataset.with_name("run.labels.csv").read_text().startswith("index,label,time")


def test_command_user_errors_are_one_line(tmp_path: Path, dataset: Path) -> None:
    from click.testing import CliRunner

    from cli.main import spi

    result = CliRunner().invoke(spi, ["label", str(tmp_path / "missing.h5"), "--no-browser"])
    assert result.exit_code == 1 and "no such file" in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("index,label,time\n40,single,t\n")
    result = CliRunner().invoke(spi, ["label", str(dataset), "--labels", str(bad), "--no-browser"])
    assert result.exit_code == 1 and "out of range" in result.output


def test_classes_of_a_session_can_be_single_vs_rest(dataset: Path, tmp_path: Path) -> None:
    from spisim.errors import ConfigError

    labels = tmp_path / "binary.csv"
    session = LabelSession(dataset, labels, classes=["single", "not_single"])
    try:
        assert session.class_names == ["single", "not_single"]
        session.label(0, "not_single")
        session.label(1, "single")
        with pytest.raises(Exception, match="label must be one of single, not_single"):
            session.label(2, "multi")
    finally:
        session.close()
    from spisim.labels import read_label_file

    assert read_label_file(labels) == {0: "not_single", 1: "single"}
    for bad, message in ((["single", "alien"], "unknown class 'alien'"), (["single"], "at least two"),
                         (["single", "single"], "twice")):
        with pytest.raises(ConfigError, match=message):
            LabelSession(dataset, tmp_path / "x.csv", classes=bad)
    with pytest.raises(ConfigError, match="--game"):
        LabelSession(dataset, tmp_path / "y.csv", classes=["single", "not_single"], game=True)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()
