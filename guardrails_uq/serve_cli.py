"""CLI: ``serve`` (the OpenAI-compatible guard proxy) and ``replay`` (re-decide logged calls)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .jsonsafe import dumps

if TYPE_CHECKING:
    from .server.tenants import KeyGrant


def read_api_keys(path: Path) -> dict[str, KeyGrant]:
    """Client keys, one per line, each optionally followed by the policies it may use (``KEY name, name`` or
    ``KEY *``; blank lines and ``#`` comments skipped; see :mod:`guardrails_uq.server.tenants`). InputError
    naming the file (and line, never the key) and the fix when it is missing, unreadable, not text, holds no
    key, a malformed policy list, or one key twice with different policies."""
    from .server.tenants import parse_key_line

    fix = "pass --api-keys a text file with one client key per line (optionally followed by its policies)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"API key file not found; {fix}", source=f"--api-keys {path}") from None
    except IsADirectoryError:
        raise InputError(f"is a directory; {fix}", source=f"--api-keys {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read ({exc}); {fix}", source=f"--api-keys {path}") from None
    grants: dict[str, KeyGrant] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, grant = parse_key_line(line, f"{path}:{number}")
        first = grants.setdefault(key, grant)
        if first.policies != grant.policies:
            raise InputError(f"this key is also on line {first.source.rsplit(':', 1)[1]} with other policies; "
                             "list all its policies on one line", source=grant.source)  # fmt: skip
    if not grants:
        raise InputError(f"holds no key; {fix}", source=f"--api-keys {path}")
    return grants


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServeConfig, serve

    keys = None
    if args.api_keys:
        keys = read_api_keys(Path(args.api_keys))
    config = ServeConfig(
        policy=Path(args.policy) if args.policy else None,
        policies=Path(args.policies) if args.policies else None,
        upstream=args.upstream,
        upstream_api_key_env=args.upstream_api_key_env,
        api_keys=keys,
        max_body_bytes=args.max_body,
        rate_per_second=args.rate,
        burst=args.burst,
        timeout=args.timeout,
        stream_mode=args.stream_mode,
        stream_window=args.stream_window,
        otel=args.otel,
    )
    if args.workers < 1:
        raise InputError("must be at least 1", source="--workers")
    serve(config, host=args.host, port=args.port, workers=args.workers)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import render, replay

    report = replay(args.policy, args.log, engine=args.engine, progress=True, shadow=args.shadow)
    print(dumps(report) if args.json else render(report))
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    p = commands.add_parser("serve", help="an OpenAI-compatible proxy that applies a policy (needs the 'serve' extra)")
    p.add_argument("--policy", default=None, help="the policy file to serve")
    p.add_argument(
        "--policies",
        default=None,
        help="a folder: serve every policy in it, one per tenant (--api-keys maps keys to policies; a request "
        "picks one with the X-Guardrails-Policy header)",
    )
    p.add_argument("--upstream", required=True, help="base URL of the upstream model, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--upstream-api-key-env", default=None)
    p.add_argument(
        "--api-keys",
        default=None,
        help="file with one accepted client API key per line, optionally followed by the policies it may use "
        "(`KEY name, name` or `KEY *`)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-body", type=int, default=1_000_000, help="largest request body in bytes")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second per client key")
    p.add_argument("--burst", type=int, default=100)
    p.add_argument("--timeout", type=float, default=30.0, help="upstream timeout in seconds")
    p.add_argument(
        "--stream-mode",
        choices=("cut", "buffer"),
        default="cut",
        help="cut: hold --stream-window chunks back and cut on a violation; buffer: release nothing until decided",
    )
    p.add_argument("--stream-window", type=int, default=16, help="chunks held back (and decided on) in cut mode")
    p.add_argument("--workers", type=int, default=1, help="worker processes (rate limits apply per worker)")
    p.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry spans and metrics over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT; the 'otel' extra)",
    )
    p.set_defaults(handler=_cmd_serve)

    p = commands.add_parser("replay", help="re-decide logged calls under another policy (what-if)")
    p.add_argument("log")
    p.add_argument("--policy", required=True)
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--shadow",
        action="store_true",
        help="evaluate the policy in shadow: read every rule (shadow ones too) as enforced and compare with what "
        "the log says was enforced",
    )
    p.set_defaults(handler=_cmd_replay)
