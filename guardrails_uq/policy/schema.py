"""The policy file's schema (pydantic). Check sections come from the check registry.

The JSON Schema for editors is generated from these models (``guardrails-uq policy schema``), never written
by hand.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ..decision import Action
from ..types import Phase

_SIGNAL_NAME = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


class StrictModel(BaseModel):
    """Base of every policy model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


#: ``enforce``: rules decide what the client gets; ``shadow``: they are evaluated and recorded only.
Mode = Literal["enforce", "shadow"]


class CheckConfig(StrictModel):
    """Base of every check's policy section: the settings the Guard applies to any check."""

    timeout_ms: float | None = Field(
        default=None,
        gt=0,
        description="Time limit of one run of the check, in milliseconds (default: none). On expiry its signals "
        "are missing, the timeout is recorded as a CheckTimeoutError in the Decision and on_error decides; the "
        "late result is discarded.",
    )


class Rule(StrictModel):
    """One rule: in phase ``at``, when the CEL condition ``when`` holds, take ``action``."""

    name: str = Field(description="Unique name; recorded in every Decision it makes.", min_length=1)
    at: Phase = Field(
        description="Phase whose signals the rule reads: input, retrieval, output, or tool (before a tool the "
        "model called runs: tool.name, tool.arguments).",
    )
    when: str = Field(description="CEL condition over signals, e.g. 'provenance.bci_max > 20.0'.")
    action: Action = Field(description="allow, abstain or escalate.")
    message: str | None = Field(
        default=None, description="Text returned to the user on abstain (defaults to messages.abstain)."
    )
    description: str | None = Field(default=None, description="Why the rule exists (shown by explain).")
    mode: Mode | None = Field(
        default=None,
        description="shadow: evaluate and record what the rule would do (Decision.shadow), never enforce it; "
        "enforce; default: the policy's mode.",
    )


class ModelEndpoint(StrictModel):
    """An OpenAI-compatible chat-completions endpoint."""

    base_url: str = Field(description="Base URL ending before /chat/completions, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name sent in the request body.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key)."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds before a request is abandoned.")
    max_retries: int = Field(default=2, ge=0, description="Retries on 429 and 5xx, with exponential backoff.")


class Escalation(StrictModel):
    """Where an escalate action sends the request."""

    model: ModelEndpoint | None = Field(default=None, description="The larger model to defer to.")


class Audit(StrictModel):
    """Where every Decision is appended."""

    path: str = Field(description="A .jsonl file or a .sqlite/.db database (relative to the policy file).")
    fsync: bool = Field(default=False, description="fsync after each record (durable, slower).")


class Messages(StrictModel):
    """Default user-facing texts."""

    abstain: str = Field(default="I can't help with that.", description="Returned on abstain without a message.")
    escalate: str = Field(
        default="This request needs review.", description="Returned on escalate when no target is configured."
    )
    error: str = Field(
        default="I can't answer that right now.",
        description="Returned when on_error decides after a failure.",
    )


class Telemetry(StrictModel):
    """OpenTelemetry spans and metrics (needs the ``otel`` extra; without it the Guard records none)."""

    otel: bool = Field(
        default=False,
        description="Export spans and metrics over OTLP/HTTP (endpoint from OTEL_EXPORTER_OTLP_ENDPOINT or "
        "`endpoint`) when the app has configured no tracer provider of its own. Spans are recorded whenever the "
        "app has configured one, whatever this says.",
    )
    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP base URL for otel: true, e.g. http://127.0.0.1:4318 (default: the OTEL_EXPORTER_OTLP_* "
        "environment variables, else http://localhost:4318).",
    )
    content: bool = Field(
        default=False,
        description="Record the request and answer text on phase spans (gen_ai.security.content.input.value, "
        ".output.value). Off by default: spans then hold numbers, names and ids only, never message content.",
    )
    check_spans: bool = Field(
        default=True,
        description="A span per check under each phase span. False: phase spans only (each check's time is "
        "still in the guardrails_uq.check.duration histogram and in the Decision's timings_ms); recording every "
        "trace then costs about a third as much (bench/otel.py).",
    )


SignalDeclType = Literal["number", "integer", "bool", "string", "list"]


class PolicyBase(StrictModel):
    """Top-level policy keys that do not belong to a check."""

    version: Literal[1] = Field(description="Policy format version; 1.")
    name: str = Field(description="Policy name, recorded in every Decision.", min_length=1)
    description: str | None = Field(default=None, description="Free text.")
    signals: dict[str, SignalDeclType] = Field(
        default_factory=dict,
        description="Signals the app supplies with each call (dotted names such as app.user_tier) and their type.",
    )
    escalation: Escalation | None = Field(default=None, description="Target of the escalate action.")
    audit: Audit | None = Field(default=None, description="Decision log; omit to keep no log.")
    messages: Messages = Field(default_factory=Messages, description="Default user-facing texts.")
    telemetry: Telemetry = Field(default_factory=Telemetry, description="OpenTelemetry spans and metrics.")
    rules: list[Rule] = Field(default_factory=list, description="Evaluated in order per phase; first match decides.")
    default: Action = Field(default=Action.ALLOW, description="Action when no rule matched by the last phase.")
    on_error: Action = Field(
        default=Action.ABSTAIN, description="Action when a check or rule fails (fail closed by default)."
    )
    mode: Mode = Field(
        default="enforce",
        description="shadow: observe only; every rule, the default and on_error after a failed check are recorded "
        "in Decision.shadow and the client always gets allow. enforce: rules decide (a rule may say mode: shadow).",
    )

    @field_validator("signals")
    @classmethod
    def _signal_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _SIGNAL_NAME.match(name):
                raise ValueError(f"signal name {name!r} must be dotted lowercase words, e.g. app.user_tier")
        return value


@functools.lru_cache(maxsize=1)
def policy_model() -> type[PolicyBase]:
    """The full Policy model: PolicyBase plus one optional section per registered check."""
    from ..checks import registry

    sections: dict[str, Any] = {
        name: (spec.config | None, Field(default=None, description=spec.description or f"The {name} check."))
        for name, spec in sorted(registry().items())
    }
    model: type[PolicyBase] = create_model("Policy", __base__=PolicyBase, **sections)
    return model


def json_schema() -> dict[str, Any]:
    """The policy's JSON Schema (for editors such as VS Code's YAML extension)."""
    schema = policy_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "guardrails-uq policy"
    return schema
