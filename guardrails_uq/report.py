"""``guardrails-uq report``: one self-contained HTML file explaining every decision of an audit log.

One card per request (its Decisions joined by ``request_id``: input, retrieval, output, every choice), with
the request's verdict; for each Decision: action, rule and the values it read; the model's answer with every token coloured by
its probability (green = confident, red = unsure; hover for the value), copied corpus spans highlighted
with their BCI; the claim-level view (each sentence with its tokens' mean and max NLL, the least sure one
marked); each claim's grounding verdict and the evidence sentence it was aligned with; the guidelines
injected; the chunks kept and dropped against the conformal threshold.
Summary charts (actions, rules, score distributions) are inline SVG. No scripts, no external resources.
The log is untrusted: evidence is printed only through the validated views of :mod:`.report_evidence`, every
text escaped; a record that does not fit is skipped and counted on the page. The log is streamed twice in
bounded memory: the summary counts every request, the cards are a sample of at most ``max_requests`` (those
not allowed first) and the page says so.
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .audit import ReadReport, read_audit
from .audit_stats import LogSummary, RequestRow, temp_database
from .decision import Decision
from .report_evidence import EvidenceView, MalformedEvidence, SpanView, TokenView, evidence_view

_ACTION_COLOURS = {"allow": "#2e7d32", "abstain": "#c62828", "escalate": "#ef6c00"}
SHOWN_SKIPS = 10
"""How many skipped records the page lists by name (all are counted)."""
MAX_REQUESTS = 1000
"""How many requests get a card by default (the summary counts them all)."""
REQUEST_CHARS = 2000
"""How much of a request's text a card shows."""
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


def _histogram(title: str, histogram: tuple[float, float, list[int]] | None) -> str:
    """An SVG histogram of (low, high, equal-bin counts), as :meth:`LogSummary.histogram` gives it."""
    if histogram is None:
        return ""
    low, high, counts = histogram
    bins, width, height, top = len(counts), 300, 110, max(counts)
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - (height - 30) * c / top:.1f}" width="{bar - 2:.1f}" '
        f'height="{(height - 30) * c / top:.1f}" fill="#26a69a"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
    )
    axis = f'<text x="0" y="{height - 4}" font-size="11">{low:.3g}</text><text x="{width - 40}" y="{height - 4}" font-size="11">{high:.3g}</text>'
    return f'<div class="chart"><h3>{_esc(title)} (n={sum(counts)})</h3><svg width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">{rects}{axis}</svg></div>'


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


def _grounding_html(view: EvidenceView) -> str:
    """Grounding: each claim of the answer with its verdict, support and contradiction, and the evidence
    sentence it was aligned with (document id); claims below the threshold are marked."""
    grounding = view.grounding
    if grounding is None or not grounding.claims:
        return ""
    rows, failing = [], 0
    for claim in grounding.claims:
        weak = claim.support < grounding.threshold
        failing += weak
        verdict = _esc(claim.verdict)
        marked = f'<span class="flag">{verdict}</span>' if weak else verdict
        row_class = ' class="unsure"' if weak else ""
        rows.append(
            f"<tr{row_class}><td>{_esc(claim.claim)}</td><td>{marked}</td>"
            f"<td>{claim.support:.3f}</td><td>{claim.contradiction:.3f}</td>"
            f"<td><code>{_esc(claim.document)}</code>: {_esc(claim.sentence)}</td></tr>"
        )
    summary = f"Grounding: {len(rows)} claim(s), {failing} below the threshold {grounding.threshold:.4f}"
    return (
        f'<details{" open" if failing else ""} class="claims grounding"><summary>{summary}</summary>'
        f"<table><tr><th>claim</th><th>verdict</th><th>support</th><th>contradiction</th>"
        f"<th>aligned evidence sentence</th></tr>{''.join(rows)}</table></details>"
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
    return f'<span class="badge" style="background:{_ACTION_COLOURS.get(action, "#555")}">{_esc(action.upper())}</span>'


def _request_text(decision: Decision) -> str | None:
    """The request a Decision shows (its metadata's, else its last user message), at most
    :data:`REQUEST_CHARS` characters."""
    if decision.metadata.get("request"):
        return str(decision.metadata["request"])[:REQUEST_CHARS]
    user = next((m.content for m in reversed(decision.messages or []) if m.role == "user"), None)
    return user[-REQUEST_CHARS:] if user else None


def _card_head(row: RequestRow, request: str | None) -> str:
    """The top of a request's card: its verdict, then (the sections follow) every phase's Decision."""
    head = (
        f'<div class="card {_esc(row.action)}">{_badge(row.action)} <b>{_esc(row.rule_label)}</b> '
        f'<span class="meta">request {_esc(row.request_id[:12])} · {row.decisions} decision(s)</span>'
    )
    return head + (f"<p><b>Request:</b> {_esc(request)}</p>" if request else "")


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
    if decision.shadow is not None:
        shadow = decision.shadow
        read = "; ".join([*(f"{k} = {v}" for k, v in shadow.inputs.items()), *([shadow.error] if shadow.error else [])])
        note = f' <span class="meta">{_esc(read)}</span>' if read else ""
        parts.append(
            f"<p><b>Shadow:</b> would {_esc(shadow.action.value.upper())} ({_esc(shadow.label)}), "
            f"not enforced{note}</p>"
        )
    parts += [_answer_html(decision, view), _claims_html(view), _grounding_html(view)]
    parts += [_guidelines_html(view), _retrieval_html(view)]
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
        self.count += damaged.torn - len(damaged.skipped)  # counted by the reader beyond the positions it lists

    def html(self) -> str:
        if not self.count:
            return ""
        items = "".join(f"<li>{_esc(r)}</li>" for r in self.reasons)
        more = f"<li>... and {self.count - len(self.reasons)} more</li>" if self.count > len(self.reasons) else ""
        return (
            f'<details><summary class="meta">{self.count} record(s) skipped: damaged, or with malformed evidence '
            f"(left out of every count and chart)</summary><ul>{items}{more}</ul></details>"
        )


def _choose(rows: Iterable[RequestRow], limit: int) -> tuple[dict[str, RequestRow], Counter[str], Counter[str]]:
    """The requests that get a card (at most ``limit``: those not allowed first, then allowed ones, each in log
    order), and every request counted by verdict action and rule. Holds at most 2 x ``limit`` rows."""
    blocked: list[RequestRow] = []
    allowed: list[RequestRow] = []
    actions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for row in rows:
        actions[row.action] += 1
        rules[row.rule_label] += 1
        kept = allowed if row.action == "allow" else blocked
        if len(kept) < limit:
            kept.append(row)
    chosen = blocked + allowed[: limit - len(blocked)]
    return {row.request_id: row for row in chosen}, actions, rules


class _Cards:
    """The cards' sections, kept in a temporary database (not in memory) until the page is written."""

    def __init__(self) -> None:
        self.db = temp_database()
        self.db.execute("CREATE TABLE sections (seq INTEGER, html TEXT)")
        self.db.execute("CREATE TABLE requests (seq INTEGER PRIMARY KEY, text TEXT)")

    def add(self, row: RequestRow, decision: Decision, view: EvidenceView) -> None:
        self.db.execute("INSERT INTO sections VALUES (?, ?)", (row.seq, _phase_section(decision, view)))
        text = _request_text(decision)
        if text:
            self.db.execute("INSERT OR IGNORE INTO requests VALUES (?, ?)", (row.seq, text))

    def write(self, rows: Iterable[RequestRow], out: TextIO) -> None:
        self.db.execute("CREATE INDEX section_order ON sections (seq)")
        for row in sorted(rows, key=lambda r: r.seq):
            text = self.db.execute("SELECT text FROM requests WHERE seq = ?", (row.seq,)).fetchone()
            out.write(_card_head(row, text[0] if text else None))
            for (section,) in self.db.execute("SELECT html FROM sections WHERE seq = ? ORDER BY rowid", (row.seq,)):
                out.write(section)
            out.write("</div>")

    def close(self) -> None:
        self.db.close()


@dataclass
class ReportOutcome:
    """What a written report holds: decisions and requests summarised, cards shown, records skipped."""

    decisions: int
    requests: int
    shown: int
    skipped: Skipped


def _valid(decisions: Iterable[Decision], skipped: Skipped | None) -> Iterator[tuple[Decision, EvidenceView]]:
    """Each Decision whose printed evidence is well-formed, with its view; the others go to ``skipped``."""
    for decision in decisions:
        try:
            view = evidence_view(decision)
        except MalformedEvidence as exc:
            if skipped is not None:
                skipped.add(str(exc))
            continue
        yield decision, view


def build_report(
    passes: Callable[[int], Iterable[Decision]],
    out: TextIO,
    *,
    title: str = "guardrails-uq decisions",
    max_requests: int = MAX_REQUESTS,
    damaged: ReadReport | None = None,
    skipped: Skipped | None = None,
) -> ReportOutcome:
    """Write the report page to ``out`` in two streamed passes over the same Decisions (``passes(0)``, then
    ``passes(1)``, each a fresh iterable): the first summarises every request in bounded memory
    (:class:`~guardrails_uq.audit_stats.LogSummary`), the second renders cards for at most ``max_requests``
    requests (those not allowed first), spooled to a temporary database. Decisions with malformed evidence
    are left out and added to ``skipped``, then the records the log reader skipped into ``damaged`` during
    the first pass; the page says how many, why, and how many requests it shows."""
    skipped = skipped if skipped is not None else Skipped()
    with LogSummary() as summary:
        for decision, _ in _valid(passes(0), skipped):
            summary.add(decision)
        if damaged is not None:
            skipped.add_damaged(damaged)
        chosen, by_action, by_rule = _choose(summary.requests(), max_requests)
        cards = _Cards()
        try:
            for decision, view in _valid(passes(1), None):
                row = chosen.get(decision.request_id)
                if row is not None:
                    cards.add(row, decision, view)
            charts = [
                _bar_chart("Actions (requests)", dict(by_action), _ACTION_COLOURS),
                _bar_chart("Deciding rule", dict(by_rule)),
                _bar_chart(
                    "Shadow outcomes (decisions, not enforced)",
                    {
                        f"{rule} → {action}": count
                        for rule, actions in summary.shadow_by_rule.items()
                        for action, count in actions.items()
                    },
                ),
                *(_histogram(name, summary.histogram(name, 12)) for name in _HISTOGRAMS),
            ]
            total = summary.request_count
            sample = (
                f'<p class="meta">Showing {len(chosen):,} of {total:,} requests (at most {max_requests:,}: those not '
                "allowed first, then allowed ones, each in log order); the summary counts every request.</p>"
                if len(chosen) < total
                else ""
            )
            out.write(
                f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title><style>{CSS}</style></head><body>'
                f'<h1>{_esc(title)}</h1><p class="meta">{total} requests, {summary.total} decisions. Token colours: '
                f'<span class="tok" style="background:{_colour(0.05)}">p≈0</span> <span class="tok" style="background:{_colour(0.5)}">p≈0.5</span> '
                f'<span class="tok" style="background:{_colour(0.99)}">p≈1</span>; <mark>copied spans</mark>.</p>{skipped.html()}'
                f'<h2>Summary</h2><div class="charts">{"".join(charts)}</div><h2>Requests</h2>{sample}'
            )
            cards.write(chosen.values(), out)
            out.write("</body></html>")
        finally:
            cards.close()
        return ReportOutcome(summary.total, total, len(chosen), skipped)


def render(
    decisions: Iterable[Decision],
    *,
    title: str = "guardrails-uq decisions",
    max_requests: int = MAX_REQUESTS,
    skipped: Skipped | None = None,
) -> str:
    """The report of in-memory Decisions as one HTML string (see :func:`build_report`)."""
    decisions = list(decisions)
    page = io.StringIO()
    build_report(lambda _: decisions, page, title=title, max_requests=max_requests, skipped=skipped)
    return page.getvalue()


def write_report(
    log: str | Path,
    path: str | Path,
    *,
    title: str = "guardrails-uq decisions",
    max_requests: int = MAX_REQUESTS,
    progress: bool = False,
    select: Callable[[Iterable[Decision]], Iterable[Decision]] | None = None,
) -> ReportOutcome:
    """Write the report of the audit log at ``log`` to ``path`` (creating its folder), streaming the log twice
    (bounded memory whatever its size); with ``progress``, long passes report on stderr. ``select`` keeps some
    of the Decisions (e.g. :class:`~guardrails_uq.audit.PolicyFilter`: one tenant's policy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = ReadReport()

    def passes(number: int) -> Iterable[Decision]:
        label = f"report, pass {number + 1} of 2" if progress else None
        decisions = read_audit(log, first if number == 0 else ReadReport(), progress=label)
        return select(decisions) if select is not None else decisions

    with open(path, "w", encoding="utf-8") as out:
        return build_report(passes, out, title=title, max_requests=max_requests, damaged=first)
