"""The proxy's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class ServeConfig:
    """Proxy settings. ``api_keys`` None: no client authentication (loopback use only).

    ``max_body_bytes`` bounds a request body however it is sent (Content-Length or chunked);
    ``max_choices`` bounds the ``n`` a client may ask for (each choice passes the output phase).
    ``stream_mode``: ``cut`` (hold ``stream_window`` chunks back, decide on the prefix as it grows, cut on a
    violation) or ``buffer`` (release nothing until the whole answer is decided).
    ``max_upstream_bytes`` bounds an upstream response (a whole body, or a stream's total);
    ``stream_timeout`` bounds a stream's total duration (``timeout`` bounds each wait).
    ``otel``: export spans and metrics over OTLP/HTTP (OTEL_EXPORTER_OTLP_* environment variables); FastAPI's
    own request spans (continuing the client's ``traceparent``) then hold the Guard's phase spans.
    """

    policy: Path
    upstream: str
    upstream_api_key_env: str | None = None
    api_keys: set[str] | None = None
    max_body_bytes: int = 1_000_000
    rate_per_second: float = 50.0
    burst: int = 100
    timeout: float = 30.0
    top_logprobs: int = 5
    stream_window: int = 16
    reload_interval: float = 1.0
    max_choices: int = 8
    stream_mode: str = "cut"
    max_upstream_bytes: int = 8_000_000
    stream_timeout: float = 300.0
    otel: bool = False

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (for worker processes)."""
        data = asdict(self)
        data["policy"] = str(self.policy)
        data["api_keys"] = sorted(self.api_keys) if self.api_keys is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServeConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["policy"] = Path(values["policy"])
        if values.get("api_keys") is not None:
            values["api_keys"] = set(values["api_keys"])
        return cls(**values)
