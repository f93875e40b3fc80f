"""Caption client throughput against the local OpenAI-compatible test server: concurrency 1 vs 32.

The server answers every request after a fixed latency (default 50 ms, like a busy model server's
queueing), so the ratio shows whether the client overlaps requests or is itself the bottleneck.

    python bench/captions.py [--requests 128] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vidmill.pipeline.captions.client import CaptionRequest, OpenAIClient, free_port
from vidmill.pipeline.captions.prompt import build_prompt

SERVER = Path(__file__).resolve().parents[1] / "tests" / "openai_server.py"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--latency", str(args.latency)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        jpeg = bytes(20_000)  # a 20 kB frame, 20 frames per request (10 s at 2 fps)
        requests = [CaptionRequest(f"clip{i:04d}", 10.0, build_prompt(10.0, 20, 2.0), [jpeg] * 20)
                    for i in range(args.requests)]
        print(f"{args.requests} requests, server latency {args.latency * 1e3:.0f} ms, 20 x 20 kB frames each")
        rates = {}
        for concurrency in (1, 32):
            client = OpenAIClient(url, "bench", concurrency=concurrency, timeout_s=60, retries=0)
            start = time.perf_counter()
            results = client.run(requests)
            wall = time.perf_counter() - start
            assert all(r.error is None for r in results)
            tokens = sum(r.tokens_out for r in results)
            rates[concurrency] = len(results) / wall
            print(f"concurrency {concurrency:>2}: {rates[concurrency]:8.1f} requests/s {tokens / wall:10.1f} "
                  f"output tokens/s ({wall:.2f} s)")
        print(f"ratio 32 vs 1: {rates[32] / rates[1]:.1f}x (ideal {min(32, args.requests):d}x if the client "
              f"never waits on itself)")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
