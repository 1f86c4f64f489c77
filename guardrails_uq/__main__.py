"""``python -m guardrails_uq``."""

from .cli import main

raise SystemExit(main())
