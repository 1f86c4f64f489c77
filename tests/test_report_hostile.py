"""The HTML report against edited audit logs: markup or script in every field it prints, strings where numbers
belong, impossible token log-probabilities. The page must never carry executable markup from the data, and a
malformed record is skipped and counted, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_report import decisions

from guardrails_uq import Action, Decision, Shadow
from guardrails_uq.audit import encode_record
from guardrails_uq.cli import main

PAYLOADS = ('<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "' onmouseover='alert(2)")

# Every tag and attribute the report's own template writes; anything else came from data.
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "div", "span", "b", "code", "ul",
        "li", "details", "summary", "table", "tr", "th", "td", "mark", "svg", "rect", "text"}  # fmt: skip
ATTRIBUTES = {"lang", "charset", "class", "style", "title", "open", "width", "height", "role", "aria-label", "x", "y",
              "fill", "font-size"}  # fmt: skip


class _Markup(HTMLParser):
    """Every start tag with its attributes, and the text content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _assert_no_markup_from_data(page: str) -> _Markup:
    parser = _Markup()
    parser.feed(page)
    parser.close()
    stray = [(tag, attrs) for tag, attrs in parser.tags if tag not in TAGS]
    assert stray == [], f"tags the template never writes: {stray[:3]}"
    for tag, attrs in parser.tags:
        names = {name for name, _ in attrs}
        assert names <= ATTRIBUTES, f"<{tag}> has attributes the template never writes: {names - ATTRIBUTES}"
        for name, value in attrs:
            assert "javascript:" not in (value or "").lower() and "url(" not in (value or "").lower(), (tag, name)
            if name == "style":
                assert "<" not in (value or "") and "alert" not in (value or ""), f"data in a style: {value}"
    return parser


def _hostile_full_record() -> Decision:
    """One Decision that prints every section: deferral, errors, escalated answer, inputs, shadow outcome."""
    return Decision(
        policy="demo", phase="output", action=Action.ESCALATE, rule="unsure", message="Escalated.", answer="A bigger model says hi",
        generated="Paris is big", inputs={"uncertainty.g_nll": 4.2}, signals={"uncertainty.g_nll": 4.2},
        evidence={"uncertainty": {"tokens": [{"token": "Paris", "logprob": -0.1}, {"token": " is big", "logprob": -2.0}],
                                  "deferral": {"score": "max_nll", "value": 2.0, "threshold": 1.5, "target_error": 0.1, "delta": 0.1, "n": 400}}},
        timings_ms={"total": 3.5}, metadata={"request": "hello"},
        shadow=Shadow(action=Action.ABSTAIN, rule="trial", inputs={"uncertainty.g_nll": 4.2}, error="rule 'x': failed"),
    )  # fmt: skip


def _markup_span_record() -> Decision:
    """An answer that holds markup, copied from the corpus: the span is marked inside the answer's own text."""
    spans = [{"text": payload, "bci": 30.0, "count": 1, "length": 5, "sources": [{"doc": "d", "offset": 0}]}
             for payload in PAYLOADS]  # fmt: skip
    return Decision(
        policy="demo", phase="output", action=Action.ABSTAIN, rule="copied",
        generated="Sure: " + " then ".join(PAYLOADS), evidence={"provenance": {"spans": spans}},
    )  # fmt: skip


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every leaf (and, for dicts, of every key, marked with a trailing None) of plain JSON data."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key, None)
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path


def _replaced(record: dict[str, Any], path: tuple[Any, ...], payload: str) -> dict[str, Any]:
    record = json.loads(json.dumps(record))
    if path and path[-1] is None:  # rename a key
        *parents, key, _ = path
        holder = record
        for part in parents:
            holder = holder[part]
        holder[payload] = holder.pop(key)
        return record
    holder = record
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = payload
    return record


def _hostile_log(path: Path) -> int:
    """A log holding, for every field of every record and every payload, a copy of the record with that field (or
    key) replaced by the payload; each copy is its own request. Returns how many records it holds."""
    records = [json.loads(encode_record(d)) for d in [*decisions(), _hostile_full_record(), _markup_span_record()]]
    variants = []
    for record in records:
        for where in _leaves(record):
            for payload in PAYLOADS:
                variant = _replaced(record, where, payload)
                if where[:1] != ("request_id",):
                    variant["request_id"] = f"{variant['request_id']}-{len(variants)}"
                variants.append(variant)
    path.write_bytes(b"".join(b"\x1e" + json.dumps(v).encode() + b"\n" for v in [*records, *variants]))
    return len(records) + len(variants)


def test_markup_in_every_printed_field_never_becomes_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, out = tmp_path / "audit.jsonl", tmp_path / "report.html"
    total = _hostile_log(log)
    assert main(["report", str(log), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    parsed = _assert_no_markup_from_data(page)
    text = "".join(parsed.text)
    for payload in PAYLOADS:
        assert payload in text, "the hostile values are shown, as text"
    assert "<script" not in page.lower() and "<img" not in page.lower()
    printed = capsys.readouterr().out
    skipped = int(printed.split("skipped ")[1].split()[0])
    assert 0 < skipped < total, "records with strings where numbers belong are skipped, the rest shown"
    assert f"{skipped} record(s) skipped" in page, "the page says how many records it left out"


@pytest.mark.parametrize("logprob", [1000.0, 5.0, "NaN", "-Infinity", "<b>x</b>", None])
def test_a_bad_token_logprob_is_skipped_and_counted(tmp_path: Path, logprob: object, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    good = [json.loads(encode_record(d)) for d in decisions()]
    bad = json.loads(encode_record(decisions()[1]))
    bad["id"], bad["request_id"] = "bad-record", "bad-request"
    bad["evidence"]["uncertainty"]["tokens"][1]["logprob"] = logprob
    log, out = tmp_path / "audit.jsonl", tmp_path / "report.html"
    log.write_bytes(b"".join(b"\x1e" + json.dumps(r).encode() + b"\n" for r in [*good, bad]))
    assert main(["report", str(log), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    _assert_no_markup_from_data(page)
    assert "1 record(s) skipped" in page and "bad-record" in page, "the page names the skipped record"
    assert page.count('class="card ') == 2, "the good requests are all shown"
    assert "skipped 1" in capsys.readouterr().out


def test_a_torn_record_is_counted_on_the_page(tmp_path: Path) -> None:
    log, out = tmp_path / "audit.jsonl", tmp_path / "report.html"
    good = b"".join(b"\x1e" + encode_record(d) + b"\n" for d in decisions())
    log.write_bytes(good + b'\x1e{"id": "torn' + b"\n" + good)
    assert main(["report", str(log), "-o", str(out)]) == 0
    assert "1 record(s) skipped" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize("values", [[-1e308, 1e308], [1.7e308, -1.7e308, 0.0], [5e-324, 0.0, -5e-324]])
def test_extreme_signal_values_are_charted(values: list[float]) -> None:
    from guardrails_uq.report import render

    page = render([_decision_with(v) for v in values])
    assert page.count('fill="#26a69a"') == 12 and f"(n={len(values)})" in page


def _decision_with(value: float) -> Decision:
    return Decision(policy="p", phase="output", action=Action.ALLOW, signals={"provenance.bci_max": value})
