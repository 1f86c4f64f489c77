"""Labelled answers for the harmful-answer check: step-by-step instructions an assistant must not give and
benign how-to answers of the same form (``guardrails_uq/data/answer_contrast.yaml``), each rendered in every
writing style of :data:`STYLES`; and the rows ``calibrate guidelines`` fits the shipped answer calibration on
(these answers and benign answer-like texts: chatterbot-corpus answers and the Nimbus knowledge base)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_DATA = Path(__file__).resolve().parent.parent / "data" / "answer_contrast.yaml"


def _numbered(title: str, steps: list[str]) -> str:
    return f"Here is how to {title}:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def _sure(title: str, steps: list[str]) -> str:
    return f"Sure! To {title}, follow these steps:\n" + "\n".join(f"- {s}" for s in steps) + "\nHope this helps!"


def _prose(title: str, steps: list[str]) -> str:
    links = ["First,", "Then,", "After that,", "Finally,"]
    said = [
        f"{links[min(i, 3)] if i < len(steps) - 1 else 'Finally,'} {s[0].lower()}{s[1:]}" for i, s in enumerate(steps)
    ]
    return f"If you want to {title}, it is simple. " + " ".join(said)


def _terse(title: str, steps: list[str]) -> str:
    return "\n".join(s.rstrip(".") for s in steps)


def _markdown(title: str, steps: list[str]) -> str:
    return f"## How to {title}\n\n" + "\n".join(f"**Step {i}.** {s}" for i, s in enumerate(steps, 1))


#: Writing styles an answer is rendered in (held out one at a time when measuring).
STYLES: dict[str, Callable[[str, list[str]], str]] = {
    "numbered": _numbered,
    "sure_bullets": _sure,
    "prose": _prose,
    "terse": _terse,
    "markdown": _markdown,
}


@cache
def answer_pairs() -> tuple[dict[str, Any], ...]:
    """The contrast pairs: ``{"category", "harmful": [title, *steps], "benign": [title, *steps]}``."""
    data = yaml.safe_load(_DATA.read_text(encoding="utf-8"))
    return tuple(
        {"category": category, "harmful": list(pair["harmful"]), "benign": list(pair["benign"])}
        for category, pairs in data["pairs"].items()
        for pair in pairs
    )


def answer(item: list[str], style: str) -> str:
    """One pair side (title, steps) written in ``style``."""
    return STYLES[style](item[0], list(item[1:]))


def contrast_answers() -> dict[str, list[dict[str, Any]]]:
    """Every pair in every style: ``{"harmful": [...], "benign": [...]}`` of ``{"text", "source", "category",
    "style"}`` (source ``answers:<category>:<style>``: calibrated as the group ``answers``)."""
    out: dict[str, list[dict[str, Any]]] = {"harmful": [], "benign": []}
    for pair in answer_pairs():
        for style in STYLES:
            for label in ("harmful", "benign"):
                out[label].append(
                    {
                        "text": answer(pair[label], style),
                        "source": f"answers:{pair['category']}:{style}",
                        "category": pair["category"],
                        "style": style,
                    }
                )
    return out


def benign_answer_texts() -> list[dict[str, Any]]:
    """Benign texts in the form of answers besides the contrast set: chatterbot-corpus answers and (in a source
    checkout) the Nimbus knowledge base chunks the demo answers from."""
    from .. import datasets
    from ..jsonl import read_jsonl

    rows = [
        {"text": r["answer"], "source": f"chatterbot-answers:{r['category']}"}
        for r in datasets.chatterbot()
        if len(r["answer"].split()) >= 3
    ]
    kb = Path(__file__).resolve().parents[2] / "examples" / "data" / "nimbus_kb.jsonl"
    if kb.exists():
        rows += [{"text": str(r["text"]), "source": "nimbus-kb"} for _, r in read_jsonl(kb)]
    return rows


def calibration_rows() -> dict[str, list[dict[str, Any]]]:
    """The rows of the shipped answer calibration: the contrast answers and the benign answer-like texts.
    Requests are left out: held out by category (bench/answer_harm.py), a detector fitted on answers alone
    ranks answers better than one fitted on the request rows as well."""
    answers = contrast_answers()
    return {"harmful": answers["harmful"], "benign": answers["benign"] + benign_answer_texts()}


def write_calibration_data(out: str | Path) -> tuple[Path, Path]:
    """harmful.jsonl and benign.jsonl (:func:`calibration_rows`) for ``calibrate guidelines``."""
    from ..guidelines.evaluate import write_calibration_data as write_rows

    return write_rows(out, calibration_rows())
