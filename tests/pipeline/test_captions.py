"""Captioning: prompt, validation and repair, the OpenAI client against a real HTTP server, the vLLM
server lifecycle, the signals captioner on the sample bucket, and captions in the curation outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from vidmill.pipeline.captions.client import CaptionRequest, OpenAIClient, VLLMServer, free_port
from vidmill.pipeline.captions.prompt import CaptionInvalid, build_prompt, n_seconds, parse_caption
from vidmill.pipeline.config import load_config
from vidmill.pipeline.curate import Curation

SERVER = str(Path(__file__).parents[1] / "openai_server.py")
GOOD = json.dumps({"summary": "A dog.", "seconds": [{"t": 0, "caption": "a"}, {"t": 1, "caption": "b"}]})


def test_prompt_asks_for_one_entry_per_second():
    prompt = build_prompt(4.5, 9, 2.0)
    assert "exactly 5 entries" in prompt and "t = 0 to 4" in prompt and "9 frames" in prompt
    assert [n_seconds(d) for d in (0.4, 1.0, 2.0001, 9.5, 10.0)] == [1, 1, 3, 10, 10]


@pytest.mark.parametrize("raw, repaired", [
    (GOOD, []),
    ("```json\n" + GOOD + "\n```", ["extracted_json"]),
    ("Here you go: " + GOOD + " Anything else?", ["extracted_json"]),
    (GOOD.replace('"b"}]', '"b"},]'), ["extracted_json", "trailing_commas"]),
    (GOOD[:-2], ["extracted_json", "truncated"]),
    (GOOD.replace('"t": 1', '"t": 7'), ["t_renumbered"]),
])
def test_repairable_outputs(raw, repaired):
    caption = parse_caption(raw, 2.0)
    assert caption.summary == "A dog." and caption.seconds == ["a", "b"] and caption.repaired == repaired


def test_extra_seconds_are_dropped_missing_ones_never_invented():
    assert parse_caption(GOOD, 1.0).seconds == ["a"]
    with pytest.raises(CaptionInvalid, match="2 seconds described, 3 needed"):
        parse_caption(GOOD, 2.5)


@pytest.mark.parametrize("raw", ["not json at all", "", '{"seconds": []}', '{"summary": "x", "seconds": "no"}',
                                 GOOD[:40]])
def test_invalid_outputs_are_refused(raw):
    with pytest.raises(CaptionInvalid):
        parse_caption(raw, 2.0)


@pytest.fixture()
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--port", str(port), "--jitter", "0.3"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def requests_for(ids: list[str], duration: float = 3.0) -> list[CaptionRequest]:
    return [CaptionRequest(i, duration, build_prompt(duration, 6, 2.0), [b"\xff\xd8jpeg"] * 6) for i in ids]


def test_openai_client_puts_every_caption_on_its_clip(server):
    ids = [f"clip{i:03d}" for i in range(40)] + ["slow-1", "err500-1", "bad-1", "trunc-1", "short-1", "garbage-1"]
    client = OpenAIClient(server, "test-model", concurrency=16, timeout_s=2.0, retries=2, backoff_s=0.05)
    results = {r.clip_id: r for r in client.run(requests_for(ids))}
    assert set(results) == set(ids)
    for clip_id in ids[:40] + ["slow-1", "err500-1", "bad-1", "trunc-1"]:
        r = results[clip_id]
        assert r.error is None, (clip_id, r.error)
        assert r.caption["summary"] == f"summary of {clip_id}"  # the reply for this clip, not another's
        assert [s["caption"] for s in r.caption["seconds"]] == [f"{clip_id} second {t}" for t in range(3)]
        assert r.tokens_out > 0 and r.tokens_in > 0
    assert results["slow-1"].attempts == 2 and results["err500-1"].attempts == 2 and results["bad-1"].attempts == 2
    assert results["trunc-1"].repaired == ["extracted_json", "truncated"]
    for clip_id in ["short-1", "garbage-1"]:
        r = results[clip_id]
        assert r.caption is None and r.attempts == 3 and r.raw  # raw output kept for inspection
        assert "CaptionInvalid" in r.error


def test_api_key_comes_from_the_environment(monkeypatch):
    client = OpenAIClient("http://127.0.0.1:1", "m", api_key_env="VIDMILL_TEST_KEY")
    assert "Authorization" not in client.headers("x:0")
    monkeypatch.setenv("VIDMILL_TEST_KEY", "sk-secret")
    assert client.headers("x:0")["Authorization"] == "Bearer sk-secret"


def test_vllm_server_lifecycle_with_a_test_server_as_launch_command():
    server = VLLMServer([sys.executable, SERVER, "--port", "{port}", "--model", "{model}"], "test-model",
                        health_timeout_s=30)
    server.start()
    try:
        client = OpenAIClient(server.base_url, "test-model", timeout_s=5, retries=2, backoff_s=0.2,
                              on_connection_error=server.ensure_running)
        assert all(r.error is None for r in client.run(requests_for(["a", "b"])))
        server.process.kill()  # the server dies
        server.process.wait()
        server.ensure_running()  # restarted on a new port, healthy again
        assert server.restarts == 1 and server.process.poll() is None
        client.base_url = server.base_url
        assert all(r.error is None for r in client.run(requests_for(["c"])))
    finally:
        server.stop()


def test_missing_vllm_is_a_clear_error_naming_the_backend():
    with pytest.raises(RuntimeError, match="caption backend 'vllm'"):
        VLLMServer(["no-such-vllm-binary", "serve"], "m").start()
    if shutil.which("vllm") is None:
        with pytest.raises(RuntimeError, match="caption backend 'vllm'"):
            VLLMServer(["vllm", "serve", "{model}"], "/no/model").start()


def test_signals_captioner_names_pans_static_shots_and_text(curated):
    rows = {Path(r["source_uri"]).name: r for r in pq.read_table(curated / "manifest.parquet").to_pylist()
            if r["kept"]}
    assert all(r["captioner"] == "signals" for r in rows.values())
    assert all("pans left" in s for s in rows["pan_left.mp4"]["captions_per_second"])
    assert all("zooms in" in s for s in rows["zoom_in.mp4"]["captions_per_second"])
    assert "holds still" in rows["moving_subject.mp4"]["captions_per_second"][0]
    assert "something moves" in rows["moving_subject.mp4"]["captions_per_second"][0]
    for r in rows.values():
        assert len(r["captions_per_second"]) == n_seconds(r["duration_s"])
    # text: the signals captioner mentions it (seen on the logo clip, rejected by the text filter)
    from vidmill.pipeline.captions.prompt import signals_caption

    caption = signals_caption([(0.0, __import__("numpy").zeros((64, 64, 3), "uint8"))], 1.0,
                              {"camera_motion": "static", "text_area_max": 0.03})
    assert "text is visible" in caption.seconds[0] and "text on screen" in caption.summary


def test_shards_carry_caption_txt_and_per_second_json(curated):
    for sample in wds.WebDataset(sorted(str(p) for p in (curated / "shards").glob("*.tar")), shardshuffle=False):
        row = json.loads(sample["json"])
        assert sample["txt"].decode() == row["caption"] and row["captioner"] == "signals"
        assert len(row["captions_per_second"]) == n_seconds(row["duration_s"])


def test_openai_backend_in_curation_and_captions_survive_for_resume(samples, server, tmp_path, local_ray):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for name in ["cuts.mp4", "pan_left.mp4"]:
        shutil.copy(samples / name, bucket / name)
    config = load_config(None, ["captions.backend=openai", f"captions.base_url={server}", "captions.model=test-model",
                                "scoring.ocr.enabled=false"])
    out = tmp_path / "out"
    Curation(str(bucket), out, config, progress=False).run()
    manifest = [r for r in pq.read_table(out / "manifest.parquet").to_pylist() if r["kept"]]
    assert len(manifest) == 4
    for r in manifest:
        assert r["caption"] == f"summary of {r['clip_id']}" and r["captioner"] == "openai:test-model"
        assert len(r["captions_per_second"]) == n_seconds(r["duration_s"]) and r["caption_tokens_out"] > 0
    asked = json.loads(urllib.request.urlopen(server + "/stats").read())["requests"]
    assert asked == 4
    Curation(str(bucket), out, config, progress=False).run()  # nothing is asked again
    assert json.loads(urllib.request.urlopen(server + "/stats").read())["requests"] == asked
    run = json.loads((out / "run.json").read_text())
    assert run["stages"]["caption"]["extra"]["reused"] == 4
