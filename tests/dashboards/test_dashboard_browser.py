"""The dashboard in headless Chromium (Playwright, Debian's /usr/bin/chromium): funnel numbers, a
what-if move, a clip that plays with its captions, refused paths, and the static report offline."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidmill.dashboards import rules

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                "(apt-get install -y chromium; `make setup` does it)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(curated: Path):
    port = _free_port()
    vidmill = Path(sys.executable).parent / "vidmill"
    proc = subprocess.Popen([str(vidmill), "dashboard", str(curated), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited: {proc.stdout.read()}")
            time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def _count(page, step: str) -> int:
    return int(page.locator(f'#funnel-0 tr[data-step="{step}"] td.count').inner_text().replace(",", ""))


def test_funnel_numbers_equal_the_manifest(server: str, page, curated: Path, artifacts):
    rows = manifest(curated)
    inputs = pq.read_table(curated / "inputs.parquet").to_pylist()
    page.goto(server + "/")
    page.wait_for_selector("body[data-charts-ready='1']", timeout=30_000)
    assert _count(page, "inputs") == len(inputs)
    assert _count(page, "inputs ok") == sum(r["status"] == "ok" for r in inputs)
    assert _count(page, "candidate clips") == len(rows)
    assert _count(page, "kept") == sum(r["kept"] for r in rows)
    assert _count(page, "in shards") == sum(r["shard"] is not None for r in rows)
    reasons = Counter(r for row in rows for r in row["reject_reasons"])
    for name, n in reasons.items():
        cell = page.locator("table.reasons").first.locator("tr", has_text=name).locator("td.r").first
        assert int(cell.inner_text().replace(",", "")) == n
    assert page.locator(".chart svg").count() >= 8  # the histograms drew
    page.screenshot(path=artifacts("overview.png"), full_page=True)


def test_moving_a_threshold_changes_the_kept_count(server: str, page, curated: Path, artifacts):
    rows = manifest(curated)
    run = __import__("json").loads((curated / "run.json").read_text())
    base = rules.run_thresholds(run["config"])
    th = rules.moved(base, {"text_persistent_area_max": 0.5})
    expected = 0
    for row in rows:  # the decision rules, row by row
        other = [r for r in row["reject_reasons"] if r not in rules.filter_reasons(row, base)]
        expected += not (other + rules.filter_reasons(row, th))
    assert expected != sum(r["kept"] for r in rows)  # the move matters on this data
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('whatif-kept').textContent !== '–'")
    assert int(page.inner_text("#whatif-kept").replace(",", "")) == sum(r["kept"] for r in rows)
    field = page.locator('input[data-num="text_persistent_area_max"]')
    field.fill("0.5")
    field.dispatch_event("input")
    page.wait_for_function(f"document.getElementById('whatif-kept').textContent.replace(/,/g, '') === '{expected}'",
                           timeout=15_000)
    assert "--set thresholds.text_persistent_area_max=0.5" in page.inner_text("#set-line")
    assert page.locator("#whatif-reasons tr.changed", has_text="text_overlay").count() == 1
    page.locator("#whatif").screenshot(path=artifacts("whatif.png"))


def _play(page, tile_selector: str) -> dict:
    page.click(tile_selector)
    page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=30_000)
    first = page.evaluate("document.getElementById('video').currentTime")
    page.wait_for_function(f"document.getElementById('video').currentTime > {first} + 0.5", timeout=30_000)
    return page.evaluate("""() => { const v = document.getElementById('video');
        const t = v.textTracks.length ? v.textTracks[0] : null;
        return {ready: v.readyState, time: v.currentTime, cues: t && t.activeCues ? t.activeCues.length : 0,
                cue: t && t.activeCues && t.activeCues.length ? t.activeCues[0].text : null,
                active: document.querySelector('#captions li.active')?.textContent ?? null,
                paused: v.paused}; }""")


def test_a_clip_plays_with_its_captions(server: str, page, curated: Path, artifacts):
    rows = {r["clip_id"]: r for r in manifest(curated)}
    page.goto(server + "/gallery?status=kept")
    first = page.locator(".tile").first.get_attribute("data-clip")
    state = _play(page, ".tile >> nth=0")
    assert state["ready"] >= 2 and state["time"] > 0.5 and not state["paused"]
    captions = rows[first]["captions_per_second"]
    second = min(int(math.floor(state["time"])), len(captions) - 1)
    assert state["cues"] >= 1 and state["cue"] in captions
    page.wait_for_function("document.querySelector('#captions li.active') !== null")
    active = page.inner_text("#captions li.active")
    assert active in captions and abs(captions.index(active) - second) <= 1
    page.screenshot(path=artifacts("gallery-playing.png"))
    page.keyboard.press("ArrowRight")  # keyboard: next clip
    second_id = page.locator(".tile").nth(1).get_attribute("data-clip")
    page.wait_for_function(f"document.getElementById('player-title').textContent.startsWith('{second_id}')")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.getElementById('player-title').textContent.startsWith('{first}')")


def test_a_rejected_clip_plays_from_its_source_span(server: str, page, curated: Path, artifacts):
    page.goto(server + "/gallery?status=rejected")
    tile = page.locator(".tile", has_text="text_overlay").first
    clip_id = tile.get_attribute("data-clip")
    state = _play(page, f'.tile[data-clip="{clip_id}"]')
    assert state["ready"] >= 2
    assert "played from its source span" in page.inner_text("#player-source")
    page.screenshot(path=artifacts("gallery-rejected.png"))


def test_paths_outside_the_outputs_are_refused(server: str, page, curated: Path):
    for path in ["/static/../../etc/passwd", "/static/..%2F..%2F..%2Fetc%2Fpasswd",
                 "/media/0/..%2Fmanifest.parquet.mp4", "/media/0/..%2F..%2F..%2Fetc%2Fpasswd.mp4", "/run.json",
                 f"/static/{curated}/run.json"]:
        response = page.request.get(server + path)
        assert response.status in (403, 404), (path, response.status)


def test_static_report_works_offline(browser, curated: Path, tmp_path: Path, artifacts):
    from vidmill.dashboards.export import write_report

    report = write_report([curated], tmp_path / "report.html")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "about:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(report.as_uri())
    page.wait_for_selector("body[data-charts-ready='1']", timeout=30_000)
    assert page.locator(".chart svg").count() >= 8
    assert not outside, outside
    page.screenshot(path=artifacts("report.png"), full_page=True)
    context.close()
