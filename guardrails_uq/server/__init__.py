"""``guardrails-uq serve``: an OpenAI-compatible chat-completions proxy that applies a policy.

Every response carries the Decision: a ``guardrails`` field in the body (in the last chunk when streaming;
per choice too when ``n`` > 1) and ``X-Guardrails-Action`` / ``X-Guardrails-Decision`` headers.
``/healthz`` reports the policy and reloads per policy; ``/metrics`` serves Prometheus counters (decisions by
policy, action and rule, reloads per policy, upstream errors) and latency histograms. Client API keys, body
size (however the body is sent) and per-key request rate are limited. A request the proxy failed to check is
answered with the on_error action (abstain by default), never forwarded, and logged. Each policy file is
re-read off the request path when it changes; a new version replaces the old one only once it has loaded
completely. One proxy can serve a policy per tenant (``--policies DIR``): the key file says which key may use
which, a request names one with ``X-Guardrails-Policy``.

Modules: :mod:`.config` (settings), :mod:`.limits` (auth, rate, body size), :mod:`.tenants` (the policies
served, which key may use which), :mod:`.wire` (the OpenAI format, read strictly, written from what was
checked), :mod:`.exchange` (the guarded exchange), :mod:`.holder` (a serving Guard and its reloads),
:mod:`.app` (routes and the access log).
"""

from __future__ import annotations

from .app import create_app, serve
from .config import ServeConfig
from .holder import PolicyHolder
from .limits import RateLimiter
from .tenants import KeyGrant, Tenants

__all__ = ["KeyGrant", "PolicyHolder", "RateLimiter", "ServeConfig", "Tenants", "create_app", "serve"]
