"""Caption backends that talk to a model: an OpenAI-compatible client and a `vllm serve` process.

`OpenAIClient` sends chat-completion requests with the frames as base64 JPEG data URLs, at most
`concurrency` at once, each with a timeout, retried with exponential backoff on timeouts, connection
errors, HTTP 429 / 5xx and invalid outputs. Every request carries an X-Request-Id; a reply whose id
does not match is refused, so a caption can never land on the wrong clip. The API key is read from
the environment variable named in config and never logged.

`VLLMServer` owns one `vllm serve` process (its command is configurable, so tests run a test server in
its place): start, wait for /health, restart when it has died.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from vidmill.pipeline.captions.prompt import Caption, CaptionInvalid, caption_json, parse_caption


@dataclass
class CaptionRequest:
    clip_id: str
    duration_s: float
    prompt: str
    jpegs: list[bytes]


@dataclass
class CaptionResult:
    clip_id: str
    caption: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    repaired: list[str] = field(default_factory=list)


class RetryableError(RuntimeError):
    pass


class OpenAIClient:
    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 32,
                 timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0,
                 sampling: dict[str, Any] | None = None, on_connection_error=None):
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key_env = model, api_key_env
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.sampling = sampling or {}
        self.on_connection_error = on_connection_error

    def payload(self, request: CaptionRequest) -> dict[str, Any]:
        images = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(j).decode()}}
                  for j in request.jpegs]
        return {"model": self.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": request.prompt}, *images]}], **self.sampling}

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"X-Request-Id": request_id, "Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def run(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        return asyncio.run(self._run_all(requests))

    async def _run_all(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        limit = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(request: CaptionRequest) -> CaptionResult:
                async with limit:
                    return await self._caption(session, request)

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _caption(self, session: aiohttp.ClientSession, request: CaptionRequest) -> CaptionResult:
        result = CaptionResult(request.clip_id)
        start = time.perf_counter()
        for attempt in range(self.retries + 1):
            result.attempts = attempt + 1
            try:
                text, usage = await self._post(session, request, f"{request.clip_id}:{attempt}")
                result.raw = text
                result.tokens_in += int(usage.get("prompt_tokens", 0))
                result.tokens_out += int(usage.get("completion_tokens", 0))
                caption: Caption = parse_caption(text, request.duration_s)
                result.caption, result.repaired, result.error = caption_json(caption), caption.repaired, None
                break
            except (RetryableError, CaptionInvalid) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff_s * 2**attempt)
            except aiohttp.ClientResponseError as exc:  # 4xx other than 429: retrying will not help
                result.error = f"HTTP {exc.status}: {exc.message}"
                break
        result.latency_s = round(time.perf_counter() - start, 4)
        if result.caption is None:
            result.error = result.error or "no caption"
        else:
            result.raw = None  # kept only for failures
        return result

    async def _post(self, session: aiohttp.ClientSession, request: CaptionRequest, request_id: str):
        try:
            async with session.post(f"{self.base_url}/v1/chat/completions", json=self.payload(request),
                                    headers=self.headers(request_id),
                                    timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as response:
                if response.status == 429 or response.status >= 500:
                    raise RetryableError(f"HTTP {response.status}")
                response.raise_for_status()
                echoed = response.headers.get("X-Request-Id")
                if echoed is not None and echoed != request_id:
                    raise RetryableError(f"reply for request {echoed} arrived for {request_id}")
                body = await response.json(content_type=None)
        except asyncio.TimeoutError as exc:
            raise RetryableError(f"timed out after {self.timeout_s}s") from exc
        except aiohttp.ClientConnectionError as exc:
            if self.on_connection_error is not None:
                self.on_connection_error()
            raise RetryableError(f"connection: {exc}") from exc
        try:
            return body["choices"][0]["message"]["content"] or "", body.get("usage") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise RetryableError("reply is not a chat completion") from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """One OpenAI-compatible model server process on this node (a Ray actor owns one per GPU replica)."""

    def __init__(self, command: list[str], model: str, tensor_parallel: int = 1, health_timeout_s: float = 900.0,
                 max_restarts: int = 3):
        self.template, self.model, self.tp = command, model, tensor_parallel
        self.health_timeout_s, self.max_restarts = health_timeout_s, max_restarts
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        values = {"model": self.model, "port": str(self.port), "tp": str(self.tp)}
        return [part.format(**values) for part in self.template]

    def check_runnable(self) -> None:
        exe = self.template[0]
        if shutil.which(exe) is None and not os.path.exists(exe):
            raise RuntimeError(f"caption backend 'vllm': launch command {exe!r} not found "
                               "(pip install vllm on a GPU node, or point captions.vllm_command elsewhere)")
        if os.path.basename(exe) == "vllm":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("caption backend 'vllm' needs a CUDA GPU on this node; none is visible")
            if not self.model or not os.path.exists(self.model):
                raise RuntimeError(f"caption backend 'vllm': model path {self.model!r} not found (local weights only)")

    def start(self) -> None:
        self.check_runnable()
        self.port = free_port()
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        import urllib.request

        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.process.stderr.read().decode(errors="replace")[-2000:] if self.process.stderr else ""
                raise RuntimeError(f"caption backend 'vllm': server exited with {self.process.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"caption backend 'vllm': server not healthy after {self.health_timeout_s:.0f}s")

    def ensure_running(self) -> None:
        """Restart the server if it has died (bounded); called before each batch and on connection errors."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.restarts >= self.max_restarts:
            raise RuntimeError(f"caption backend 'vllm': server died {self.restarts} times; giving up")
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
