"""Who may call the proxy and how much: client keys, per-key rate, body size enforced while reading."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from starlette.requests import Request


class RequestRefused(Exception):
    """A request refused before it reaches the Guard: HTTP status, OpenAI error type, message."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.status = status
        self.kind = kind
        super().__init__(message)


@dataclass
class _Bucket:
    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class RateLimiter:
    """Token bucket per client key."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(tokens=float(self.burst)))
            now = time.monotonic()
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True


def client_key(request: Request, api_keys: Collection[str] | None) -> str:
    """The caller's key ("anonymous" when keys are off); RequestRefused(401) when it is missing or unknown.

    Keys are accepted only as ``Authorization: Bearer``; keys in the query string are never read (they end
    up in logs and browser histories)."""
    if api_keys is None:
        return "anonymous"
    auth = request.headers.get("authorization", "")
    key = auth.removeprefix("Bearer ").strip()
    known = any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys)
    if not auth.startswith("Bearer ") or not key or not known:
        raise RequestRefused(401, "invalid or missing API key (send it as 'Authorization: Bearer <key>')",
                             "authentication_error")  # fmt: skip
    return key


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes, whether the client declared
    its length or streams it chunked (the body is never held beyond ``limit``)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRefused(400, "Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise RequestRefused(413, f"body larger than {limit} bytes (--max-body)")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRefused(413, f"body larger than {limit} bytes (--max-body)")
        parts.append(chunk)
    return b"".join(parts)
