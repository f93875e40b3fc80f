"""An OpenAI-compatible chat-completions server for tests and benchmarks (aiohttp, 127.0.0.1 only).

Behaviour per request is chosen by the clip id in X-Request-Id ("<clip_id>:<attempt>"):
  slow-*     first attempt sleeps past any sane client timeout, later ones answer
  err500-*   first attempt answers HTTP 500
  bad-*      first attempt answers prose, not JSON
  trunc-*    answers JSON cut off before its closing brackets (repairable)
  short-*    always describes one second too few (never valid)
  garbage-*  always answers prose
Every caption names the clip id it was asked for, so a reply on the wrong clip is visible. Replies
are delayed by --latency plus a random 0..--jitter seconds, so they finish out of order.
    python tests/openai_server.py --port 8000 [--latency 0.05] [--jitter 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re

from aiohttp import web


def caption_text(clip_id: str, seconds: int) -> str:
    return json.dumps({"summary": f"summary of {clip_id}",
                       "seconds": [{"t": t, "caption": f"{clip_id} second {t}"} for t in range(seconds)]})


def make_app(latency: float = 0.0, jitter: float = 0.0, slow_s: float = 30.0) -> web.Application:
    stats = {"requests": 0}

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def count(_request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def completions(request: web.Request) -> web.Response:
        stats["requests"] += 1
        request_id = request.headers.get("X-Request-Id", "unknown:0")
        clip_id, attempt = request_id.rsplit(":", 1)
        body = await request.json()
        prompt = body["messages"][0]["content"][0]["text"]
        n_images = len(body["messages"][0]["content"]) - 1
        seconds = int(re.search(r"exactly (\d+) entries", prompt).group(1))
        await asyncio.sleep(latency + random.random() * jitter)
        first = attempt == "0"
        if clip_id.startswith("slow-") and first:
            await asyncio.sleep(slow_s)
        if clip_id.startswith("err500-") and first:
            return web.Response(status=500, text="internal error")
        content = caption_text(clip_id, seconds)
        if (clip_id.startswith("bad-") and first) or clip_id.startswith("garbage-"):
            content = "I am sorry, here is a description of the video in prose."
        elif clip_id.startswith("trunc-"):
            content = content[:-3]
        elif clip_id.startswith("short-"):
            content = caption_text(clip_id, seconds - 1)
        reply = {"id": f"chatcmpl-{stats['requests']}", "object": "chat.completion",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": len(prompt.split()) + 64 * n_images,
                           "completion_tokens": len(content.split())}}
        return web.json_response(reply, headers={"X-Request-Id": request_id})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.get("/health", health), web.get("/stats", count),
                    web.post("/v1/chat/completions", completions)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    args, _ = parser.parse_known_args()  # ignores vllm-style flags when used as a launch command
    web.run_app(make_app(args.latency, args.jitter), host="127.0.0.1", port=args.port, print=None,
                shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
