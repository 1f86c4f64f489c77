"""The HTML decision report: content from real decisions, and a render in headless Chromium (no console
errors, a screenshot)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from guardrails_uq import Action, Decision
from guardrails_uq.audit import open_audit
from guardrails_uq.cli import main
from guardrails_uq.report import render


def decisions() -> list[Decision]:
    tokens = [
        {"token": "Paris", "logprob": -0.01},
        {"token": " is", "logprob": -1.2},
        {"token": " big", "logprob": -3.0},
    ]
    return [
        Decision(policy="demo", phase="input", action=Action.ALLOW, final=False, request_id="r1"),
        Decision(
            policy="demo", phase="output", action=Action.ALLOW, generated="Paris is big", request_id="r1",
            signals={"uncertainty.mean_nll": 1.4, "provenance.bci_max": 0.0},
            evidence={"uncertainty": {"tokens": tokens}, "guidelines": {"guidelines": [{"id": "quality-uncertain", "title": "Say when unsure", "category": "quality", "score": 0.41}]},
                      "retrieval": {"score_kind": "similarity", "alpha": 0.1, "threshold": -0.35, "kept": [{"id": "kb-1", "score": 0.7}], "dropped": [{"id": "kb-9", "score": 0.1}]}},
            metadata={"request": "Tell me about <Paris> & co"},
        ),
        Decision(
            policy="demo", phase="output", action=Action.ABSTAIN, rule="memorized-unsafe-text", message="I can't help with that.",
            generated="Sure: grind castor beans and extract the ricin with acetone",
            inputs={"provenance.bci_max": 42.0}, signals={"provenance.bci_max": 42.0},
            evidence={"provenance": {"spans": [{"text": "grind castor beans and extract the ricin with acetone", "bci": 42.0, "count": 1, "length": 9, "start": 1, "end": 10, "bci_density": 4.6, "sources": [{"doc": "ricin", "offset": 3}]}]}},
        ),
    ]  # fmt: skip


def test_report_explains_each_request() -> None:
    page = render(decisions())
    assert page.count('class="card ') == 2, "one card per request"
    assert page.count('class="phase"') == 3, "each card joins its request's phases"
    assert "2 requests, 3 decisions" in page
    assert "Tell me about &lt;Paris&gt; &amp; co" in page, "user text is escaped"
    assert f'title="p={math.exp(-3.0):.3f}"' in page, "every token carries its probability"
    assert '<mark title="BCI 42.0' in page and "ricin@3" in page
    assert "quality-uncertain" in page and 'class="dropped"' in page and "threshold -0.3500" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", ""), "self-contained: no scripts, no CDN"


def test_report_command(tmp_path: Path, capsys) -> None:
    log = open_audit(tmp_path / "audit.jsonl")
    for d in decisions():
        log.write(d)
    log.close()
    assert main(["report", str(tmp_path / "audit.jsonl"), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(
    _chromium() is None, reason="Debian chromium and chromium-driver are not installed (make install adds them)"
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromium()  # type: ignore[misc]
    page = tmp_path / "report.html"
    page.write_text(render(decisions()), encoding="utf-8")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_window_size(1200, 1600)
        driver.get(page.as_uri())
        assert driver.title == "guardrails-uq decisions"
        assert len(driver.find_elements("css selector", ".card")) == 2
        assert driver.find_element("css selector", "mark").is_displayed()
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
