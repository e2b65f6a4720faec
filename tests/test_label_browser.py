"""``spi label`` end to end in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The tests start the server themselves on 127.0.0.1, port 0, in a thread; label shots by key presses,
reload and continue, check the label file; and play a short game of hit and check its report.

Where Chromium or Playwright is missing these tests FAIL when ``SPI_REQUIRE_BROWSER=1`` (CI sets it) and
are skipped, with the reason, otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_label_server import N_SHOTS, TRUTH, write_dataset

from cli.label_server import LabelHTTPServer, LabelSession, start_in_thread
from spisim.cxi import HIT_TYPES
from spisim.labels import game_report, game_report_paths, read_labels, read_rows

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("SPI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SPI_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("SPI_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (SPI_REQUIRE_BROWSER=1) but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="spi-label-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(15_000)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    pg.close()
    assert not errors, f"errors in the page: {errors}"


def start(session: LabelSession) -> LabelHTTPServer:
    server = LabelHTTPServer(session, "127.0.0.1", 0)
    start_in_thread(server)
    return server


def stop(server: LabelHTTPServer) -> None:
    server.shutdown()
    server.server_close()
    server.session.close()


def wait_shot(page, index: int) -> None:
    """Wait until shot ``index`` is on screen and no action is in flight."""
    page.wait_for_function(
        """i => { const v = document.getElementById('viewer');
                  return v.dataset.loaded === 'true' && v.dataset.shot === String(i)
                         && document.body.dataset.busy !== '1'; }""",
        arg=index,
    )


def press(page, key: str, then_shot: int) -> None:
    page.keyboard.press(key)
    wait_shot(page, then_shot)


def counts_on_page(page) -> list[int]:
    return [int(page.inner_text(f"#count-{k}")) for k in range(4)]


def test_label_by_keys_reload_and_continue(page, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "run.h5")
    labels = tmp_path / "run.labels.csv"
    server = start(LabelSession(data, labels))
    try:
        page.goto(server.url)
        wait_shot(page, 0)
        assert page.inner_text("#shot-index") == "#0"
        assert page.inner_text("#modebadge").lower() == "labelling"
        press(page, "2", 1)           # shot 0: single
        press(page, "1", 2)           # shot 1: no hit
        press(page, "3", 3)           # shot 2: multi
        assert read_labels(labels) == {0: "single", 1: "no_hit", 2: "multi"}
        press(page, "u", 2)           # undo brings shot 2 back, unlabelled
        assert read_labels(labels) == {0: "single", 1: "no_hit"}
        assert page.inner_text("#current-label") == ""
        press(page, "4", 3)           # shot 2: unintended
        press(page, "s", 4)           # skip shot 3
        press(page, "1", 5)           # shot 4: no hit
        assert counts_on_page(page) == [2, 1, 0, 1]
        page.screenshot(path=str(tmp_path / "label.png"))

        page.reload()                 # continues after the last labelled shot
        wait_shot(page, 5)
        assert counts_on_page(page) == [2, 1, 0, 1]
        assert page.inner_text("#progress-text") == f"4 / {N_SHOTS} labelled"
        press(page, "2", 6)           # shot 5: single
        press(page, "ArrowLeft", 5)
        assert page.inner_text("#current-label") == "Single"
        page.keyboard.press("g")      # go to shot 3, the skipped one
        page.keyboard.type("3")
        press(page, "Enter", 3)
        press(page, "3", 6)           # shot 3: multi, then on to the next unlabelled shot
        assert counts_on_page(page) == [2, 2, 1, 1]
        page.click("#btn-undo")       # undo by button
        wait_shot(page, 3)
        page.click(".cls[data-code='1']")  # label by button
        wait_shot(page, 6)
    finally:
        stop(server)
    # a new server on the same files continues after the last shot labelled
    server = start(LabelSession(data, labels))
    try:
        page.goto(server.url)
        wait_shot(page, 6)
        assert counts_on_page(page) == [2, 3, 0, 1]
    finally:
        stop(server)
    assert read_labels(labels) == {0: "single", 1: "no_hit", 2: "unintended", 4: "no_hit", 5: "single",
                                   3: "single"}
    rows = read_rows(labels)
    assert [r.label for r in rows].count("undo") == 2 and len(rows) == 10
    assert (tmp_path / "label.png").stat().st_size > 10_000


def test_contrast_and_zoom_controls(page, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "run.h5")
    server = start(LabelSession(data, tmp_path / "l.csv"))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(server.url)
        wait_shot(page, 0)
        page.evaluate("localStorage.clear()")
        page.select_option("#cmap", "viridis")
        wait_shot(page, 0)
        page.locator("#hi").fill("90")
        page.locator("#hi").dispatch_event("change")
        wait_shot(page, 0)
        assert any("cmap=viridis" in u and "hi=90" in u for u in requests)
        before = page.inner_text("#zoom-level")
        page.keyboard.press("+")
        after = page.inner_text("#zoom-level")
        assert int(after.rstrip("%")) > int(before.rstrip("%"))
        # every network request stayed on this server (images are shown from blob: URLs)
        foreign = [u for u in requests if not u.startswith((f"http://127.0.0.1:{server.port}/", "blob:", "data:"))]
        assert not foreign
    finally:
        stop(server)


def test_game_of_hit(page, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "sim.h5")
    labels = tmp_path / "sim.game.csv"
    server = start(LabelSession(data, labels, game=True, game_shots=6, seed=4))
    order = server.session.order
    try:
        page.goto(server.url)
        wait_shot(page, order[0])
        assert page.inner_text("#modebadge").lower() == "game of hit"
        assert not page.is_visible("#btn-skip") and not page.is_visible("#goto")
        guesses = []
        for k, i in enumerate(order):
            wait_shot(page, i)
            assert page.inner_text("#shot-position") == f"{k + 1} of 6 in this game"
            if k == 2:               # undo a slip of the finger
                page.keyboard.press(str((int(TRUTH[i]) + 2) % 4 + 1))
                wait_shot(page, order[3])
                press(page, "u", i)
            g = int(TRUTH[i]) if k % 3 else (int(TRUTH[i]) + 1) % 4  # wrong on shots 0 and 3
            guesses.append(g)
            page.keyboard.press(str(g + 1))
        page.wait_for_selector("#report:not([hidden])")
        page.screenshot(path=str(tmp_path / "game.png"))
        expect = game_report(TRUTH[order], np.array(guesses))
        assert page.inner_text("#rep-accuracy") == f"{100 * expect['accuracy']:.1f}%"
        cells = page.locator("#rep-confusion tr").all_inner_texts()
        assert len(cells) == 5 and cells[2].split("\t")[1:] == [str(v) for v in expect["confusion"][1]]
        page.keyboard.press("Escape")
        page.wait_for_selector("#report", state="hidden")
        page.keyboard.press("1")     # the game is over: no more labels
        page.click("#btn-finish")    # now "Show score"
        page.wait_for_selector("#report:not([hidden])")
    finally:
        stop(server)
    jpath, cpath = game_report_paths(labels)
    doc = json.loads(jpath.read_text())
    assert doc["accuracy"] == pytest.approx(4 / 6) and doc["confusion"] == expect["confusion"]
    assert doc["n_shots"] == 6 and doc["seed"] == 4 and cpath.read_text().startswith("class,support")
    assert read_labels(labels) == {i: HIT_TYPES[g] for i, g in zip(order, guesses, strict=True)}
    assert len(read_rows(labels)) == 6 + 2  # six labels, the slip and its undo; nothing after the end
