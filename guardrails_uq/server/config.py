"""The proxy's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from .tenants import KeyGrant


@dataclass
class ServeConfig:
    """Proxy settings: ``policy`` (one policy file) or ``policies`` (a folder: every policy in it, a policy per
    tenant, :mod:`.tenants`), exactly one. ``api_keys`` None: no client authentication (loopback use only);
    a set of keys: bare keys (as a key line without policies); a mapping: the :class:`~.tenants.KeyGrant` of
    each key.

    ``max_body_bytes`` bounds a request body however it is sent (Content-Length or chunked);
    ``max_choices`` bounds the ``n`` a client may ask for (each choice passes the output phase).
    ``stream_mode``: ``cut`` (hold ``stream_window`` chunks back, decide on the prefix as it grows, cut on a
    violation) or ``buffer`` (release nothing until the whole answer is decided).
    ``max_upstream_bytes`` bounds an upstream response (a whole body, or a stream's total);
    ``stream_timeout`` bounds a stream's total duration (``timeout`` bounds each wait).
    ``otel``: export spans and metrics over OTLP/HTTP (OTEL_EXPORTER_OTLP_* environment variables); FastAPI's
    own request spans (continuing the client's ``traceparent``) then hold the Guard's phase spans.
    """

    policy: Path | None = None
    upstream: str = ""
    upstream_api_key_env: str | None = None
    api_keys: set[str] | dict[str, KeyGrant] | None = None
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
    policies: Path | None = None

    def __post_init__(self) -> None:
        if (self.policy is None) == (self.policies is None):
            raise InputError(
                "pass either --policy FILE (one policy) or --policies DIR (a policy per tenant), not "
                + ("both" if self.policy is not None else "neither"),
                source="--policy/--policies",
            )
        if not self.upstream:
            raise InputError("the upstream's base URL is required, e.g. http://127.0.0.1:8000/v1", source="--upstream")

    def grants(self) -> dict[str, KeyGrant] | None:
        """Each client key's grant (a plain set of keys: bare keys, as key lines without policies)."""
        if self.api_keys is None or isinstance(self.api_keys, dict):
            return self.api_keys
        return {key: KeyGrant(None, "api_keys") for key in self.api_keys}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (for worker processes)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_keys"}
        for name in ("policy", "policies"):
            data[name] = str(data[name]) if data[name] is not None else None
        grants = self.grants()
        data["api_keys"] = None if grants is None else [[k, asdict(g)] for k, g in sorted(grants.items())]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServeConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("policy", "policies"):
            values[name] = Path(values[name]) if values.get(name) is not None else None
        if values.get("api_keys") is not None:
            values["api_keys"] = {
                key: KeyGrant(tuple(g["policies"]) if g["policies"] is not None else None, g["source"])
                for key, g in values["api_keys"]
            }
        return cls(**values)
