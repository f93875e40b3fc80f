"""Dashboard queries over the curated fixture and a synthetic manifest: funnel, histograms, what-if,
clip media by byte range, path safety, export."""

from __future__ import annotations

import re
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from vidmill.dashboards import distributions, funnel, media, queries, rules
from vidmill.dashboards.app import create_app
from vidmill.dashboards.export import render_report
from vidmill.dashboards.outputs import Store
from vidmill.dashboards.whatif import WhatIf


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def expected_whatif(rows: list[dict], base, changes: dict) -> tuple[int, Counter]:
    """The definition, row by row: stored reasons that are not the rule's stay; the rule re-decides the rest."""
    th = rules.moved(base, changes)
    kept, counts = 0, Counter()
    for row in rows:
        mine = rules.filter_reasons(row, base)
        other = [r for r in row["reject_reasons"] if r not in mine]
        new = other + [r for r in rules.filter_reasons(row, th) if r not in other]
        kept += not new
        counts.update(new)
    return kept, counts


@pytest.fixture(scope="module")
def client(curated: Path):
    with TestClient(create_app([curated])) as c:
        yield c


def test_funnel_equals_manifest(curated: Path):
    store = Store([curated])
    engine = WhatIf(store, 0)
    view = funnel.view(store, 0, engine.owned)
    steps = {s["step"]: s for s in view["funnel"]["steps"]}
    rows = manifest(curated)
    inputs = pq.read_table(curated / "inputs.parquet").to_pylist()
    assert steps["inputs"]["count"] == len(inputs)
    assert steps["inputs ok"]["count"] == sum(r["status"] == "ok" for r in inputs)
    assert steps["shots"]["count"] == pq.read_metadata(curated / "shots.parquet").num_rows
    assert steps["candidate clips"]["count"] == len(rows)
    assert steps["kept"]["count"] == sum(r["kept"] for r in rows)
    assert steps["in shards"]["count"] == sum(r["shard"] is not None for r in rows)
    assert abs(steps["kept"]["hours"] - sum(r["duration_s"] for r in rows if r["kept"]) / 3600) < 1e-9
    for step in view["funnel"]["steps"]:  # each filter step: clips with none of the reasons dropped so far
        if step.get("drops"):
            assert step["count"] == sum(not set(step["drops"]) & set(r["reject_reasons"]) for r in rows)
    counts = Counter(r for row in rows for r in row["reject_reasons"])
    assert {r["name"]: r["count"] for r in view["reasons"]} == dict(counts)
    assert all(r["meaning"] and "not declared" not in r["meaning"] for r in view["reasons"])
    errors = [r for r in inputs if r["status"] == "error"]
    assert view["input_errors"]["total"] == len(errors) > 0
    assert {e["error"] for e in view["input_errors"]["rows"]} == {e["error"] for e in errors}


def test_histogram_bins_count_every_value(curated: Path):
    store = Store([curated])
    rows = manifest(curated)
    hist = queries.histogram(store, 0, "sharpness", bins=10)
    values = [r for r in rows if r["sharpness"] is not None]
    assert sum(b["kept"] + b["rejected"] for b in hist["bins"]) == len(values)
    assert sum(b["kept"] for b in hist["bins"]) == sum(r["kept"] for r in values)
    assert hist["missing"] == len(rows) - len(values)
    starts = [b["start"] for b in hist["bins"]]
    assert starts == sorted(starts) and all(b["end"] > b["start"] for b in hist["bins"])
    for b in hist["bins"]:  # interior bins hold exactly the values in [start, end)
        if hist["lo"] < b["start"] and b["end"] < hist["hi"] - 1e-9:
            inside = [r for r in values if b["start"] <= r["sharpness"] < b["end"]]
            assert b["kept"] + b["rejected"] == len(inside)
    engine = WhatIf(store, 0)
    lines = {c["column"]: c["lines"] for c in distributions.charts(store, 0, engine)}
    assert {(ln["setting"], ln["value"]) for ln in lines["sharpness"]} == {("sharpness_min", engine.base.sharpness_min)}
    assert {ln["setting"] for ln in lines["brightness"]} == {"brightness_min", "brightness_max"}
    assert {ln["setting"] for ln in lines["duration_s"]} == {"spans.min_s"}


MOVES = [{}, {"text_persistent_area_max": 0.5}, {"text_area_max": 0.001, "motion_min": 0.0},
         {"sharpness_min": 300.0}, {"brightness_min": 0.3, "brightness_max": 0.5}, {"motion_max": 0.01}]


@pytest.mark.parametrize("which", ["curated", "synthetic"])
def test_whatif_equals_filter_reasons_row_by_row(which: str, request: pytest.FixtureRequest):
    out = request.getfixturevalue(which)
    store = Store([out])
    engine = WhatIf(store, 0)
    rows = manifest(out)
    moves = MOVES + ([{"sharpness_min": 54.6}, {"colourfulness_min": 40.0, "text_persistent_area_max": 0.001}]
                     if which == "synthetic" else [])
    changed_kept = set()
    for changes in moves:
        kept, counts = expected_whatif(rows, engine.base, changes)
        got = engine.evaluate(changes)
        assert got["kept_new"] == kept, changes
        assert {r["name"]: r["new"] for r in got["reasons"] if r["new"]} == dict(counts), changes
        changed_kept.add(kept)
        # the printed --set line, read back through load_config on the run's thresholds, gives these thresholds
        overrides = [part.strip() for part in got["set_line"].split("--set") if part.strip()]
        assert {o.split("=")[0] for o in overrides} == {f"thresholds.{k}" for k, v in changes.items()
                                                        if getattr(engine.base, k) != v}
        applied = {o.split("=")[0].removeprefix("thresholds."): float(o.split("=")[1]) for o in overrides}
        assert rules.moved(engine.base, applied) == rules.moved(engine.base, changes)
    assert len(changed_kept) > 1  # the moves did change what is kept
    assert engine.evaluate({})["kept_new"] == sum(r["kept"] for r in rows)


def test_whatif_reads_the_rules_inputs(curated: Path):
    engine = WhatIf(Store([curated]), 0)
    assert {"sharpness_min", "motion_min", "text_area_max"} <= set(engine.inputs.settings)
    assert "dedup" not in engine.inputs.settings  # not read by filter_reasons
    assert {"sharpness", "camera_motion", "quality_status"} <= set(engine.inputs.columns)
    assert "duplicate" not in engine.owned and "too_short" not in engine.owned
    sliders = {s["setting"]: s for s in engine.sliders()}
    assert sliders["sharpness_min"]["columns"] == ["sharpness"] and sliders["sharpness_min"]["reasons"] == ["blurry"]


def test_synthetic_scale_loose(synthetic: Path):
    """20k rows: page aggregates and a what-if move well under the loose bound (bench/dashboard.py does 1M)."""
    t = time.perf_counter()
    with TestClient(create_app([synthetic])) as c:
        loaded = time.perf_counter() - t
        for url in ("/", "/api/hist?column=motion_score", "/api/whatif?sharpness_min=30", "/gallery?page=3"):
            t = time.perf_counter()
            assert c.get(url).status_code == 200
            assert time.perf_counter() - t < 10, url
    assert loaded < 30


def kept_clip(out: Path) -> dict:
    return next(r for r in manifest(out) if r["kept"])


def test_range_requests_return_tar_member_bytes(curated: Path, client: TestClient):
    row = kept_clip(curated)
    with tarfile.open(curated / "shards" / row["shard"]) as tar:
        data = tar.extractfile(f"{row['key']}.mp4").read()
    whole = client.get(f"/media/0/{row['clip_id']}.mp4")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/media/0/{row['clip_id']}.mp4", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(f"/media/0/{row['clip_id']}.mp4", headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    rest = client.get(f"/media/0/{row['clip_id']}.mp4", headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.content == data[-10:]
    assert client.get(f"/media/0/{row['clip_id']}.mp4", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    index = media.tar_index(curated / "shards" / row["shard"])
    assert index[f"{row['key']}.mp4"].size == len(data)


def test_captions_track_and_clip_row(curated: Path, client: TestClient):
    row = kept_clip(curated)
    vtt = client.get(f"/media/0/{row['clip_id']}.vtt")
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    cues = re.findall(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$", vtt.text, re.M)
    assert len(cues) == len(row["captions_per_second"]) > 0
    assert cues[0][0] == "00:00:00.000" and all(c in vtt.text for c in row["captions_per_second"])
    got = client.get(f"/api/clip/{row['clip_id']}?run=0").json()
    assert got["playable"] and got["row"]["captions_per_second"] == row["captions_per_second"]
    thumb = client.get(f"/thumb/0/{row['clip_id']}.jpg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"


def test_rejected_clip_preview_from_source_span(curated: Path, client: TestClient):
    row = next(r for r in manifest(curated) if not r["kept"] and "too_short" not in r["reject_reasons"])
    assert client.get(f"/media/0/{row['clip_id']}.mp4").status_code == 404  # not in a shard
    preview = client.get(f"/preview/0/{row['clip_id']}.mp4")
    assert preview.status_code == 200 and preview.content[4:8] == b"ftyp"
    import io

    import av

    with av.open(io.BytesIO(preview.content)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base)
    assert abs(seconds - row["duration_s"]) < 0.2


@pytest.mark.parametrize("path", [
    "/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/media/0/..%2F..%2Fetc%2Fpasswd.mp4",
    "/media/0/..%2Fmanifest.parquet.mp4", "/media/9/x.mp4", "/media/0/nonexistent.mp4", "/thumb/0/..%2Frun.json.jpg",
    "/preview/0/%2Fetc%2Fpasswd.mp4", "/manifest.parquet", "/run.json", "/api/clip/..%2Frun.json?run=0",
    "/api/hist?run=0&column=sharpness);DROP TABLE clips_0;--",
])
def test_paths_outside_the_outputs_are_refused(client: TestClient, path: str):
    response = client.get(path)
    assert response.status_code in (403, 404), (path, response.status_code)
    assert b"root:" not in response.content


def test_read_only(client: TestClient):
    assert client.post("/api/whatif?run=0").status_code == 405
    assert client.put("/media/0/x.mp4").status_code == 405


def test_export_is_self_contained(curated: Path, tmp_path: Path):
    html = render_report([curated, curated])
    assert "<script src=" not in html and "<link rel=\"stylesheet\"" not in html
    for attr in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html):
        assert not re.match(r"^(https?:)?//", attr), attr
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html)
    rows = manifest(curated)
    assert f">{len(rows)}</td>" in html.replace(",", "")  # candidate clips in the funnel
    assert "Runs compared" in html


def test_host_warning(monkeypatch: pytest.MonkeyPatch, curated: Path, capsys: pytest.CaptureFixture):
    import uvicorn

    from vidmill.cli import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: served.update(host=host, port=port))
    assert main(["dashboard", str(curated), "--port", "9999"]) == 0
    assert served["host"] == "127.0.0.1" and "warning" not in capsys.readouterr().err
    assert main(["dashboard", str(curated), "--host", "0.0.0.0", "--port", "9999"]) == 0
    assert "warning" in capsys.readouterr().err and served["host"] == "0.0.0.0"


def test_compare_two_runs(curated: Path, tmp_path: Path):
    """A second run in which one kept clip became blurry: counts differ by one, that clip is 'only in A'."""
    import shutil

    import pyarrow as pa

    other = tmp_path / "other"
    shutil.copytree(curated, other, ignore=shutil.ignore_patterns("_work", "shards"))
    table = pq.read_table(curated / "manifest.parquet")
    rows = table.to_pylist()
    flipped = next(r for r in rows if r["kept"])
    flipped.update(kept=False, reject_reasons=["blurry"], shard=None, key=None)
    shutil.rmtree(other / "manifest.parquet")  # a dataset directory since issue 18: B is a single file (both load)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), other / "manifest.parquet")
    with TestClient(create_app([curated, other])) as c:
        html = c.get("/compare?a=0&b=1").text
        assert flipped["clip_id"] in html
        from vidmill.dashboards import compare

        store = c.app.state.dashboard.store
        view = compare.view(store, 0, 1, WhatIf(store, 0).owned)
        assert view["only_a"]["total"] == 1 and view["only_a"]["rows"][0]["clip_id"] == flipped["clip_id"]
        assert view["only_a"]["rows"][0]["other_reasons"] == ["blurry"] and view["only_b"]["total"] == 0
        kept = {s["step"]: s for s in view["funnel"]}["kept"]
        assert kept["a"]["count"] == kept["b"]["count"] + 1


def test_gallery_filters_and_pages(curated: Path):
    from vidmill.dashboards import gallery

    store = Store([curated])
    rows = manifest(curated)
    page = gallery.page(store, 0, gallery.Filters(status="rejected", size=12))
    assert page["total"] == sum(not r["kept"] for r in rows)
    reason = rows and Counter(x for r in rows for x in r["reject_reasons"]).most_common(1)[0][0]
    got = gallery.page(store, 0, gallery.Filters(reason=reason))
    assert {r["clip_id"] for r in got["rows"]} == {r["clip_id"] for r in rows if reason in r["reject_reasons"]}
    pages = [gallery.page(store, 0, gallery.Filters(size=12, page=p))["rows"] for p in range(2)]
    assert [r["clip_id"] for r in pages[0] + pages[1]] == [r["clip_id"] for r in rows][:24]
    word = next(r for r in rows if r["captions_per_second"])["captions_per_second"][-1].split(";")[0]
    found = gallery.page(store, 0, gallery.Filters(text=word.upper()))
    assert found["total"] == sum(any(word in c for c in (r["captions_per_second"] or []) + [r["caption"] or ""])
                                 for r in rows) > 0
    ranged = gallery.page(store, 0, gallery.Filters(column="sharpness", low=100.0, high=500.0, size=96))
    assert ranged["total"] == sum(r["sharpness"] is not None and 100 <= r["sharpness"] <= 500 for r in rows)


def test_duplicate_groups_side_by_side(curated: Path, client: TestClient):
    from vidmill.dashboards import gallery

    rows = manifest(curated)
    groups = Counter(r["dup_group"] for r in rows if r["dup_group"])
    assert groups, "the sample bucket has a re-encoded near duplicate"
    page = gallery.page(Store([curated]), 0, gallery.Filters(dups=True))
    assert [r["dup_group"] for r in page["rows"]] == sorted(r["dup_group"] for r in rows if r["dup_group"])
    member = next(r for r in rows if r["dup_of"])
    got = client.get(f"/api/clip/{member['clip_id']}?run=0").json()
    assert {d["clip_id"] for d in got["duplicates"]} == {r["clip_id"] for r in rows
                                                        if r["dup_group"] == member["dup_group"]}
    assert member["dup_of"] in client.get("/gallery?run=0&dups=1").text


def test_an_output_without_clips(tmp_path: Path):
    import pyarrow as pa

    from vidmill.pipeline.decide import filter_reasons  # noqa: F401  (registers the scorers' columns)
    from vidmill.pipeline.records import manifest_schema

    pq.write_table(pa.Table.from_pylist([], schema=manifest_schema()), tmp_path / "manifest.parquet")
    with TestClient(create_app([tmp_path])) as c:
        assert c.get("/").status_code == 200 and c.get("/gallery").status_code == 200
        got = c.get("/api/whatif?run=0&sharpness_min=20").json()
        assert got["kept_new"] == 0 and got["clips"] == 0
        assert c.get("/api/hist?run=0&column=sharpness").json()["bins"] == []
    assert "vidmill" in render_report([tmp_path])


def test_play_link_opens_the_page_holding_the_clip(curated: Path, client: TestClient):
    last = manifest(curated)[-1]["clip_id"]
    response = client.get(f"/gallery?run=0&size=12&play={last}", follow_redirects=False)
    assert response.status_code == 303 and "page=1" in response.headers["location"]
    page = client.get(response.headers["location"])
    assert f'data-clip="{last}"' in page.text
