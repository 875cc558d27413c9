"""Webhook delivery: one ordered queue per provider, signed with Standard Webhooks.

Faults shape delivery: ``duplicate_webhook_rate`` sends an event a second time with the same
``webhook-id``; ``out_of_order_webhooks`` holds events until none has arrived for
``reorder_window_ms`` and sends the held batch newest first."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from infrastructure.psp_sandbox.faults import FaultState
from infrastructure.psp_sandbox.signing import sign_webhook

ATTEMPTS = 3
BACKOFF_S = (0.1, 0.3)
DELIVERY_TIMEOUT_S = 5.0

# provider -> (url or None, secret)
Target = Callable[[str], tuple[str | None, str]]


# No proxy from the environment: receivers are usually on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    # Only http(s) URLs get here: ProviderConfig validates webhook_url.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _OPENER.open(request, timeout=DELIVERY_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class WebhookDispatcher:
    """Sends each provider's events in order from a background task per provider."""

    def __init__(self, providers: list[str], target: Target, faults: dict[str, FaultState]):
        self._target = target
        self._faults = faults
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {
            p: asyncio.Queue() for p in providers
        }
        self._workers: list[asyncio.Task[None]] = []
        self._retired: set[asyncio.Task[None]] = set()
        self.deliveries: list[dict[str, Any]] = []

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._run(provider), name=f"webhooks-{provider}")
            for provider in self._queues
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    def publish(self, provider: str, event: dict[str, Any]) -> None:
        self._queues[provider].put_nowait(event)

    def pending(self) -> int:
        return sum(q.qsize() for q in self._queues.values())

    def reset(self) -> None:
        """Drop queued and held events (a worker may be holding a reordered batch)."""
        running = bool(self._workers)
        for task in self._workers:
            task.cancel()
            # Keep a reference until the cancellation has run.
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        self._workers = []
        for queue in self._queues.values():
            while not queue.empty():
                queue.get_nowait()
        self.deliveries.clear()
        if running:
            self.start()

    async def _run(self, provider: str) -> None:
        queue = self._queues[provider]
        while True:
            batch = [await queue.get()]
            faults = self._faults[provider].faults
            if faults.out_of_order_webhooks:
                window = faults.reorder_window_ms / 1000
                while True:
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), window))
                    except TimeoutError:
                        break
                batch.reverse()
            for event in batch:
                await self._deliver(provider, event, duplicate=False)
                if self._faults[provider].duplicate_webhook():
                    await self._deliver(provider, event, duplicate=True)

    async def _deliver(self, provider: str, event: dict[str, Any], *, duplicate: bool) -> None:
        url, secret = self._target(provider)
        record: dict[str, Any] = {
            "event_id": event["id"],
            "type": event["type"],
            "provider": provider,
            "duplicate": duplicate,
            "url": url,
            "attempts": 0,
            "status": None,
            "error": None,
        }
        self.deliveries.append(record)
        if url is None:
            record["error"] = "no webhook_url configured"
            return
        body = orjson.dumps(event)
        for attempt in range(ATTEMPTS):
            record["attempts"] = attempt + 1
            headers = {
                "content-type": "application/json",
                "user-agent": f"psp-sandbox/{provider}",
                **sign_webhook(secret, event["id"], body, timestamp=datetime.now(UTC)),
            }
            try:
                record["status"] = await asyncio.to_thread(_post, url, body, headers)
                record["error"] = None
            except (OSError, ValueError) as exc:
                record["status"], record["error"] = None, repr(exc)
            if record["status"] is not None and 200 <= record["status"] < 300:
                return
            if attempt < len(BACKOFF_S):
                await asyncio.sleep(BACKOFF_S[attempt])
