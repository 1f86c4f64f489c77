"""Rules that can never fire where a policy is deployed (``guardrails-uq policy check FILE --for serve``).

A rule reads signals; behind the proxy some signals exist only when a client or the upstream provides what
they are computed from. :func:`serve_warnings` names each rule whose signals depend on that, why, and the fix:

* retrieval-phase rules and rules on ``retrieval.*``: the proxy runs the retrieval phase only on requests that
  carry documents (the ``guardrails`` extension field) or ``tool`` messages;
* rules on ``injection.*``: the same (without documents or tool messages nothing is scored);
* rules on ``grounding.*``: grounding compares the answer with the kept documents; without documents
  ``grounding.checked`` is false and its other values are null;
* rules on ``uncertainty.*`` (and ``grounding.ccp``): computed from the token logprobs the upstream returns; the
  proxy asks for them, but behind an upstream that does not return them the scores are null (a rule on them
  never fires) and ``uncertainty.available`` / ``uncertainty.defer`` are false / true on every answer (a rule on
  them decides every answer); ``uncertainty.samples`` also needs the upstream to honour ``n``;
* rules on app signals (the policy's ``signals:`` section): the proxy has no way to receive them.
"""

from __future__ import annotations

from .loader import CompiledPolicy

DOCUMENTS_FIX = (
    'send the documents each answer is built on: extra_body={"guardrails": {"documents": [{"id", "text"}, ...]}} '
    "(README: documents through the proxy), or drop the rule from the served policy"
)
LOGPROBS_FIX = (
    "serve with an upstream that returns token logprobs (the proxy asks with logprobs: true; OpenAI, vLLM and "
    "llama.cpp servers return them), or drop the rule from the served policy"
)
#: Uncertainty signals with a value on every answer even without logprobs (available false, tokens 0, defer
#: true: a missing score defers), so a rule on them decides every answer behind an upstream without logprobs.
_PRESENCE = frozenset({"uncertainty.available", "uncertainty.tokens", "uncertainty.samples", "uncertainty.defer"})


def serve_warnings(policy: CompiledPolicy) -> list[str]:
    """One line per rule that fires behind the proxy only if clients or the upstream provide something: what it
    needs and the fix (empty when every rule can fire on any request)."""
    app = {name for name, info in policy.catalogue.items() if info.source == "app"}
    out: list[str] = []
    for phase in ("input", "retrieval", "output"):
        for rule in policy.phases[phase].rules:
            where = f"rule {rule.name!r} (line {rule.line})" if rule.line else f"rule {rule.name!r}"
            reads = set(rule.reads)
            supplied = sorted(reads & app)
            if supplied:
                out.append(
                    f"{where} reads {', '.join(supplied)}: the proxy receives no app signals, so it never sees a "
                    "value there; fix: compute it in a check, or serve a policy without it"
                )
            if phase == "retrieval" or any(s.startswith(("retrieval.", "injection.")) for s in reads):
                out.append(
                    f"{where} can fire only on requests that carry documents or tool messages (the retrieval "
                    f"phase runs on nothing else); fix: {DOCUMENTS_FIX}"
                )
            elif any(s.startswith("grounding.") and s != "grounding.ccp" for s in reads):
                out.append(
                    f"{where} reads grounding.*: without documents grounding.checked is false and the rest null; "
                    f"fix: {DOCUMENTS_FIX}"
                )
            scores = sorted(
                s for s in reads if (s.startswith("uncertainty.") and s not in _PRESENCE) or s == "grounding.ccp"
            )
            samples = getattr(policy.section("uncertainty"), "samples", 0)
            extra = f"; uncertainty.samples: {samples} also needs the upstream to honour n" if samples else ""
            if scores:
                out.append(
                    f"{where} reads {', '.join(scores)}, computed from the token logprobs the upstream returns: "
                    f"from an upstream that returns none they are null and the rule never fires{extra}; "
                    f"fix: {LOGPROBS_FIX}"
                )
            elif reads & _PRESENCE:
                names = ", ".join(sorted(reads & _PRESENCE))
                out.append(
                    f"{where} reads {names}: behind an upstream that returns no token logprobs these are the same "
                    f"for every answer (available false, defer true), so the rule decides every answer or none"
                    f"{extra}; fix: {LOGPROBS_FIX}"
                )
    return out
