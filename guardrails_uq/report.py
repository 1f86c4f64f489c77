"""``guardrails-uq report``: one self-contained HTML file explaining every decision of an audit log.

One card per request (its Decisions joined by ``request_id``: input, retrieval, output, every choice), with
the request's verdict; for each Decision: action, rule and the values it read; the model's answer with every token coloured by
its probability (green = confident, red = unsure; hover for the value), copied corpus spans highlighted
with their BCI; the claim-level view (each sentence with its tokens' mean and max NLL, the least sure one
marked); the guidelines injected; the chunks kept and dropped against the conformal threshold.
Summary charts (actions, rules, score distributions) are inline SVG. No scripts, no external resources.
The log is untrusted: evidence is printed only through the validated views of :mod:`.report_evidence`, every
text escaped; a record that does not fit is skipped and counted on the page.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .audit import ReadReport, RequestRecord, group_requests
from .decision import Decision
from .report_evidence import EvidenceView, MalformedEvidence, SpanView, TokenView, evidence_view

_ACTION_COLOURS = {"allow": "#2e7d32", "abstain": "#c62828", "escalate": "#ef6c00"}
SHOWN_SKIPS = 10
"""How many skipped records the page lists by name (all are counted)."""
_HISTOGRAMS = (
    "provenance.bci_max",
    "uncertainty.mean_nll",
    "uncertainty.g_nll",
    "retrieval.kept",
    "guidelines.top_score",
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;background:#fafafa}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}.charts{display:flex;flex-wrap:wrap;gap:1.5rem}
.chart{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem}.chart h3{font-size:.9rem;margin:.2rem 0 .5rem}
.card{background:#fff;border:1px solid #ddd;border-left:6px solid #999;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.card.allow{border-left-color:#2e7d32}.card.abstain{border-left-color:#c62828}.card.escalate{border-left-color:#ef6c00}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:4px;color:#fff;font-size:.8rem;font-weight:600}
.meta{color:#666;font-size:.85rem}.answer{background:#f5f5f5;padding:.5rem;border-radius:4px;white-space:pre-wrap;line-height:1.7}
.tok{border-radius:3px;padding:0 1px}mark{background:#ffeb3b;outline:2px solid #f57f17}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
.phase{border-top:1px solid #eee;padding-top:.3rem}.claims tr.unsure td{background:#fff3e0}.claims .flag{color:#e65100;font-weight:600}.kept{color:#2e7d32}.dropped{color:#999;text-decoration:line-through}details{margin:.3rem 0}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _colour(probability: float) -> str:
    """Red (p=0) to green (p=1), light enough to read black text on."""
    hue = int(120 * max(0.0, min(1.0, probability)))
    return f"hsl({hue},70%,82%)"


def _bar_chart(title: str, counts: dict[str, int], colours: dict[str, str] | None = None) -> str:
    if not counts:
        return ""
    width, row = 360, 22
    top = max(counts.values())
    rows = []
    for i, (label, count) in enumerate(sorted(counts.items(), key=lambda kv: -kv[1])):
        length = int((width - 200) * count / top) if top else 0
        colour = (colours or {}).get(label, "#5c6bc0")
        y = i * row
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{_esc(label[:24])}</text>'
            f'<rect x="160" y="{y + 4}" width="{max(length, 1)}" height="14" fill="{colour}"/>'
            f'<text x="{165 + length}" y="{y + 15}" font-size="12">{count}</text>'
        )
    height = row * len(counts)
    return f'<div class="chart"><h3>{_esc(title)}</h3><svg width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">{"".join(rows)}</svg></div>'


def _histogram(title: str, values: Sequence[float], bins: int = 12) -> str:
    values = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / span * bins))] += 1
    width, height, top = 300, 110, max(counts)
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - (height - 30) * c / top:.1f}" width="{bar - 2:.1f}" '
        f'height="{(height - 30) * c / top:.1f}" fill="#26a69a"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )
    axis = f'<text x="0" y="{height - 4}" font-size="11">{low:.3g}</text><text x="{width - 40}" y="{height - 4}" font-size="11">{high:.3g}</text>'
    return f'<div class="chart"><h3>{_esc(title)} (n={len(values)})</h3><svg width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">{rects}{axis}</svg></div>'


def _token_span(token: TokenView) -> str:
    p = math.exp(token.logprob)
    return f'<span class="tok" style="background:{_colour(p)}" title="p={p:.3f}">{_esc(token.token)}</span>'


def _marked(text: str, spans: Sequence[SpanView]) -> str:
    """``text`` escaped, with the first occurrence of each span's text (not overlapping an earlier one) in
    ``<mark>``. Spans are located in the raw text, so no span can match inside markup the report wrote."""
    found: list[tuple[int, int, SpanView]] = []
    for span in spans:
        start = text.find(span.text) if span.text else -1
        while start >= 0 and any(start < e and start + len(span.text) > s for s, e, _ in found):
            start = text.find(span.text, start + 1)
        if start >= 0:
            found.append((start, start + len(span.text), span))
    pieces, at = [], 0
    for start, end, span in sorted(found, key=lambda f: f[0]):
        pieces.append(_esc(text[at:start]))
        pieces.append(f'<mark title="BCI {span.bci:.1f}, {span.count} occurrence(s)">{_esc(text[start:end])}</mark>')
        at = end
    pieces.append(_esc(text[at:]))
    return "".join(pieces)


def _answer_html(decision: Decision, view: EvidenceView) -> str:
    text, tokens, spans = decision.generated, view.tokens, view.spans
    if not text and not tokens:
        return ""
    coloured = "".join(_token_span(t) for t in tokens)
    if tokens and "".join(t.token for t in tokens).strip() == (text or "").strip():
        pieces = coloured
    else:
        pieces = _esc(text or "") + (f'<div class="meta">{coloured}</div>' if tokens else "")
    body = f'<div class="answer">{pieces}</div>'
    if spans:
        rows = "".join(
            f"<tr><td>{_esc(s.text[:80])}</td><td>{s.bci:.1f}</td><td>{s.length}</td><td>"
            + ", ".join(f"{_esc(src.doc)}@{src.offset}" for src in s.sources)
            + "</td></tr>"
            for s in spans
        )
        body += (
            f'<p class="meta">Copied spans found in the corpus:</p><div class="answer">{_marked(text or "", spans)}'
            f"</div><table><tr><th>span</th><th>BCI</th><th>tokens</th><th>sources</th></tr>{rows}</table>"
        )
    return body


def _claims_html(view: EvidenceView) -> str:
    """The claim-level view: each sentence of the answer with its tokens (coloured by probability) and their
    mean and max NLL; the least confident claim is marked. Computed from the logged tokens (the same split
    as the check's ``claims`` evidence), so logs written before that evidence existed show it too."""
    from .uncertainty.claims import claims, worst_claim

    tokens = view.tokens
    if not tokens:
        return ""
    found = claims([t.token for t in tokens], [t.logprob for t in tokens])
    worst = worst_claim(found)
    rows = []
    for claim in found:
        unsure = claim is worst and len(found) > 1
        flag = ' <span class="flag">least sure</span>' if unsure else ""
        pieces = "".join(_token_span(t) for t in tokens[claim.start : claim.end])
        row_class = ' class="unsure"' if unsure else ""
        rows.append(
            f"<tr{row_class}><td>{pieces}{flag}</td><td>{claim.end - claim.start}</td>"
            f"<td>{claim.mean_nll:.3f}</td><td>{claim.max_nll:.3f}</td></tr>"
        )
    summary = f"Claims: {len(found)} sentence(s)"
    if worst is not None and len(found) > 1:
        summary += f"; least sure: “{_esc(worst.text[:80])}” (mean NLL {worst.mean_nll:.3f})"
    return (
        f'<details{" open" if len(found) > 1 else ""} class="claims"><summary>{summary}</summary>'
        f"<table><tr><th>claim (tokens coloured by probability)</th><th>tokens</th><th>mean NLL</th>"
        f"<th>max NLL</th></tr>{''.join(rows)}</table></details>"
    )


def _guidelines_html(view: EvidenceView) -> str:
    items = view.guidelines
    if not items:
        return ""
    rows = "".join(
        f"<tr><td>{_esc(g.id)}</td><td>{_esc(g.title)}</td><td>{_esc(g.category)}</td><td>{g.score:.3f}</td></tr>"
        for g in items
    )
    return f"<details open><summary>Guidelines injected ({len(items)})</summary><table><tr><th>id</th><th>title</th><th>category</th><th>score</th></tr>{rows}</table></details>"


def _deferral_html(view: EvidenceView) -> str:
    """The risk-controlled deferral rule the answer was held to: target, delta, n and the certified threshold."""
    rule = view.deferral
    if rule is None:
        return ""
    shown = "nothing certified: every answer deferred" if rule.threshold is None else f"threshold {rule.threshold:.4g}"
    measured = "n/a" if rule.value is None else f"{rule.value:.4g}"
    return (
        f'<p class="meta">Deferral: {_esc(rule.score)} = {measured}; error among allowed answers &le; '
        f"{rule.target_error:g} with probability &ge; {1 - rule.delta:g} (n={rule.n} calibration calls), "
        f"{shown}</p>"
    )


def _retrieval_html(view: EvidenceView) -> str:
    evidence = view.retrieval
    if evidence is None:
        return ""
    rows = "".join(
        f'<tr class="kept"><td>{_esc(d.id)}</td><td>{d.score:.3f}</td><td>kept</td></tr>' for d in evidence.kept
    )
    rows += "".join(
        f'<tr class="dropped"><td>{_esc(d.id)}</td><td>{d.score:.3f}</td><td>dropped</td></tr>'
        for d in evidence.dropped
    )
    shown = "keeps everything" if evidence.threshold is None else f"{evidence.threshold:.4f}"
    alpha = "n/a" if evidence.alpha is None else f"{evidence.alpha:g}"
    return (
        f"<details><summary>Retrieved chunks: {len(evidence.kept)} kept, {len(evidence.dropped)} dropped "
        f"({_esc(evidence.score_kind)} score, alpha {alpha}, threshold {shown})</summary>"
        f"<table><tr><th>chunk</th><th>score</th><th></th></tr>{rows}</table></details>"
    )


def _badge(action: str) -> str:
    return f'<span class="badge" style="background:{_ACTION_COLOURS.get(action, "#555")}">{action.upper()}</span>'


def _request_text(record: RequestRecord) -> str | None:
    for decision in record.decisions:
        if decision.metadata.get("request"):
            return str(decision.metadata["request"])
        user = next((m.content for m in reversed(decision.messages or []) if m.role == "user"), None)
        if user:
            return user[-300:]
    return None


def _request_card(record: RequestRecord, views: dict[int, EvidenceView]) -> str:
    """One card per request: its verdict, then every phase's Decision (input, retrieval, output, choices)."""
    action = record.action
    parts = [
        f'<div class="card {action}">{_badge(action)} <b>{_esc(record.rule_label)}</b> '
        f'<span class="meta">request {_esc(record.request_id[:12])} · {len(record.decisions)} decision(s)</span>'
    ]
    request = _request_text(record)
    if request:
        parts.append(f"<p><b>Request:</b> {_esc(request)}</p>")
    parts += [_phase_section(d, views[id(d)]) for d in record.decisions]
    parts.append("</div>")
    return "".join(parts)


def _phase_section(decision: Decision, view: EvidenceView) -> str:
    action = decision.action.value
    reads = "".join(f"<li><code>{_esc(k)}</code> = {_esc(v)}</li>" for k, v in decision.inputs.items())
    errors = "".join(f"<li>{_esc(e.check)}: {_esc(e.type)}: {_esc(e.error)}</li>" for e in decision.errors)
    parts = [
        f'<details open class="phase"><summary>{_esc(decision.phase)} phase: {_badge(action)} '
        f'<b>{_esc(decision.rule_label)}</b> <span class="meta">{_esc(decision.policy)} · '
        f"{decision.timings_ms.get('total', 0):.1f} ms</span></summary>",
    ]
    if reads:
        parts.append(f'<p class="meta">Values the rule read:</p><ul>{reads}</ul>')
    if decision.message and action != "allow":
        parts.append(f"<p><b>Returned:</b> {_esc(decision.message)}</p>")
    if decision.answer:
        parts.append(f"<p><b>Escalated answer:</b> {_esc(decision.answer)}</p>")
    parts += [_answer_html(decision, view), _claims_html(view), _guidelines_html(view), _retrieval_html(view)]
    parts.append(_deferral_html(view))
    if errors:
        parts.append(f"<p>Errors:</p><ul>{errors}</ul>")
    parts.append("</details>")
    return "".join(parts)


@dataclass
class Skipped:
    """The records a report left out: how many, and why for the first :data:`SHOWN_SKIPS`."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.reasons) < SHOWN_SKIPS:
            self.reasons.append(reason)

    def add_damaged(self, damaged: ReadReport) -> None:
        """The records the log reader could not read (torn, not JSON, not a Decision)."""
        for position in damaged.skipped:
            self.add(f"line (or SQLite row) {position}: damaged (torn, not JSON, or not a Decision)")

    def html(self) -> str:
        if not self.count:
            return ""
        items = "".join(f"<li>{_esc(r)}</li>" for r in self.reasons)
        more = f"<li>... and {self.count - len(self.reasons)} more</li>" if self.count > len(self.reasons) else ""
        return (
            f'<details><summary class="meta">{self.count} record(s) skipped: damaged, or with malformed evidence '
            f"(left out of every count and chart)</summary><ul>{items}{more}</ul></details>"
        )


def _valid(decisions: Iterable[Decision], skipped: Skipped) -> tuple[list[Decision], dict[int, EvidenceView]]:
    """The decisions whose printed evidence is well-formed, with their views (by object identity: an edited log
    can repeat a decision id); the others go to ``skipped``."""
    kept, views = [], {}
    for decision in decisions:
        try:
            views[id(decision)] = evidence_view(decision)
        except MalformedEvidence as exc:
            skipped.add(str(exc))
            continue
        kept.append(decision)
    return kept, views


def render(
    decisions: Iterable[Decision],
    *,
    title: str = "guardrails-uq decisions",
    damaged: ReadReport | None = None,
    skipped: Skipped | None = None,
) -> str:
    """The report as one HTML string. Decisions with malformed evidence are left out and added to ``skipped``,
    then the records the log reader skipped into ``damaged`` (once ``decisions`` is consumed); the page says how
    many and why."""
    skipped = skipped if skipped is not None else Skipped()
    decisions, views = _valid(decisions, skipped)
    if damaged is not None:
        skipped.add_damaged(damaged)
    requests = group_requests(decisions)
    by_action = Counter(r.action for r in requests)
    by_rule = Counter(r.rule_label for r in requests)
    charts = [
        _bar_chart("Actions (requests)", dict(by_action), _ACTION_COLOURS),
        _bar_chart("Deciding rule", dict(by_rule)),
    ]
    for name in _HISTOGRAMS:
        charts.append(_histogram(name, [d.signals.get(name) for d in decisions if name in d.signals]))  # type: ignore[misc]
    cards = "".join(_request_card(r, views) for r in requests)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{CSS}</style></head><body>'
        f'<h1>{_esc(title)}</h1><p class="meta">{len(requests)} requests, {len(decisions)} decisions. Token colours: '
        f'<span class="tok" style="background:{_colour(0.05)}">p≈0</span> <span class="tok" style="background:{_colour(0.5)}">p≈0.5</span> '
        f'<span class="tok" style="background:{_colour(0.99)}">p≈1</span>; <mark>copied spans</mark>.</p>{skipped.html()}'
        f'<h2>Summary</h2><div class="charts">{"".join(charts)}</div><h2>Requests</h2>{cards}</body></html>'
    )


def write_report(
    decisions: Iterable[Decision],
    path: str | Path,
    *,
    title: str = "guardrails-uq decisions",
    damaged: ReadReport | None = None,
    skipped: Skipped | None = None,
) -> Path:
    """Write :func:`render`'s page to ``path`` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(decisions, title=title, damaged=damaged, skipped=skipped), encoding="utf-8")
    return path
