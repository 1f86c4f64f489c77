"""The injection check's cost per tool result, with the shipped calibration and the packaged MiniLM.

Three tool results of growing size (a short API result, an HTML page with hidden parts, an e-mail thread
of ~40 sentences); for each: windows scored, median and p99 of `Guard.retrieve` with one `injection`
section (decoding, windows, embedding, logistic model, rules), median and p99, and the share of it that is decoding and
window cutting alone (no embedding).

    python bench/injection.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_us, machine, median_seconds, percentile_seconds

from guardrails_uq import Guard, ScoredDocument
from guardrails_uq.embeddings import default_embedder
from guardrails_uq.injection.data import FILLER, HOWTO
from guardrails_uq.injection.detector import windows

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [*FILLER, *(h.format(company_domain="example.com") for h in HOWTO)]
RESULTS = {
    "api-json (1 sentence)": '{"order": 1182, "status": "shipped", "note": "Left with the neighbour at number 12."}',
    "html page (8 sentences, hidden parts)": "<html><body><nav><ul style='display:none'><li>Account</li></ul></nav>"
    + "".join(f"<p>{s}</p>" for s in SENTENCES[:6])
    + "<!-- footer links --><img src='a.png' alt='Photo of the team at the Leeds office'></body></html>",
    "e-mail thread (40 sentences)": "Subject: Re: launch\n\n" + " ".join(SENTENCES[:40]),
}


def main() -> None:
    print(machine())
    folder = Path(tempfile.mkdtemp())
    policy = folder / "policy.yaml"
    calibration = ROOT / "policies" / "calibration" / "injection.json"
    policy.write_text(
        f"version: 1\nname: bench\ninjection: {{calibration: {calibration}}}\nrules:\n"
        '  - {name: injected, at: retrieval, when: "injection.flagged", action: abstain}\ndefault: allow\n'
    )
    with Guard.from_policy(policy, embedder=default_embedder(), audit=False) as guard:
        for name, text in RESULTS.items():
            documents = [ScoredDocument(id="r", text=text, score=1.0)]
            p50, p99 = percentile_seconds(lambda d=documents: guard.retrieve("q", d), calls=30)
            cut = median_seconds(lambda t=text: windows(t), repeat=5)
            print(f"{name:<40} windows {len(windows(text)):>3}  retrieve p50 {fmt_us(p50)}  p99 {fmt_us(p99)}"
                  f"  decode+cut {fmt_us(cut)} ({cut / p50:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()
