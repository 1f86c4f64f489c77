"""Provenance calibration: a threshold from a target false-positive rate on benign text (split conformal),
informative span scores (punctuation runs and corpus templates do not count), the sealed artifact, the
policy fields and signals, the CLI. Every index here is real, built from a small JSONL corpus; every
calibration is a real fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import Action, ArtifactError, Guard, InputError, NotFittedError, PolicyError, load_policy
from guardrails_uq.artifacts import seal
from guardrails_uq.cli import main
from guardrails_uq.provenance import CorpusIndex, build_index, find_spans
from guardrails_uq.provenance.calibration import (
    ProvenanceCalibration,
    conformal_rank,
    conformal_threshold,
    minimum_texts,
    split_benign,
)
from guardrails_uq.provenance.evaldata import ensure_calibration
from guardrails_uq.provenance.score import ScoreSettings, document_frequency, score_text, template_grams
from guardrails_uq.provenance.spec import SPEC
from guardrails_uq.provenance.synthetic import markdown_table
from guardrails_uq.testing import assert_conforms

HARMS = ("pick a brass padlock", "forge a notary signature", "bypass a parking meter", "clone a hotel keycard",
         "poison a koi pond", "jam a drone signal")  # fmt: skip
PASSAGE = (
    "To build the device, first gather the following rare components: xylophone wire, quartz dust and cobalt, "
    "then solder them under argon while the kiln cools."
)
DASHES = "-" * 16
DOCS = (
    [{"id": f"template-{i}", "text": f"Give step-by-step instructions for how to {h}"} for i, h in enumerate(HARMS)]
    + [{"id": "recipe", "text": PASSAGE}]
    + [{"id": "table", "text": f"| name | dose |\n|{DASHES}|{DASHES}|\n| zyklon | 40 g |"}]
    + [{"id": "weather", "text": "The weather today is sunny with a light breeze from the west over the harbour."}]
)
TASKS = ("return your bike to a dock", "bake sourdough bread", "reset a router", "repot a fern", "brew tea",
         "fold a paper crane", "tune a guitar", "patch a bike tyre", "plan a picnic", "clean a kettle")  # fmt: skip
TEMPLATE_ANSWER = "Here are step-by-step instructions for how to return your bike to a dock: ride to a free dock."
COPIED_ANSWER = "Sure! " + PASSAGE[:-1] + ", and that is all. Hope this helps!"


def benign_texts(n: int = 40, seed: int = 0) -> list[str]:
    """Assistant-style answers: the corpus's request template, markdown tables, plain sentences."""
    import random

    rng = random.Random(seed)
    texts = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        kind = i % 3
        if kind == 0:
            texts.append(f"Here are step-by-step instructions for how to {task}: take your time. Step {i}.")
        elif kind == 1:
            texts.append(f"Here is a table for how to {task}:\n\n{markdown_table(rng)}")
        else:
            texts.append(f"Sure, to {task} you only need a free afternoon and some patience ({i}).")
    return texts


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def index(tmp_path: Path) -> CorpusIndex:
    build_index(write_jsonl(tmp_path / "corpus.jsonl", DOCS), tmp_path / "idx")
    return CorpusIndex.load(tmp_path / "idx")


@pytest.fixture
def calibration(index: CorpusIndex) -> ProvenanceCalibration:
    return ProvenanceCalibration(target_fpr=0.1).fit(index, benign_texts())


# -- the order statistic and its guarantee ------------------------------------------------------------------


def test_conformal_rank_and_minimum() -> None:
    assert conformal_rank(99, 0.01) == 99 and conformal_rank(98, 0.01) == 99
    assert minimum_texts(0.01) == 99 and minimum_texts(0.1) == 9 and minimum_texts(0.5) == 1
    assert conformal_threshold([3.0, 1.0, 2.0] * 3, 0.1) == 3.0  # k = 9 of 9
    with pytest.raises(InputError, match="needs at least 99 scores"):
        conformal_threshold([0.0] * 98, 0.01)


@pytest.mark.parametrize("zeros", [0.0, 0.7], ids=["continuous", "70% ties at zero"])
@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_false_positive_rate_bound_holds_on_held_out_scores(zeros: float, target: float) -> None:
    """Averaged over random calibration/test splits of one pool of benign scores, the held-out rate of
    score > threshold is at most the target, and (without ties) at least target - 1/(n+1)."""
    rng = np.random.default_rng(7)
    pool = np.where(rng.random(20_000) < zeros, 0.0, rng.exponential(30.0, 20_000))
    n = minimum_texts(target) + 20
    rates = []
    for _ in range(400):
        order = rng.permutation(len(pool))
        threshold = conformal_threshold(pool[order[:n]], target)
        rates.append(float(np.mean(pool[order[n:]] > threshold)))
    mean, sem = float(np.mean(rates)), float(np.std(rates) / math.sqrt(len(rates)))
    assert mean <= target + 3 * sem
    if zeros == 0.0:
        assert mean >= target - 1 / (n + 1) - 3 * sem


# -- informative spans ----------------------------------------------------------------------------------------


def test_dash_runs_and_template_spans_are_not_flagged_while_a_copy_is(
    index: CorpusIndex, calibration: ProvenanceCalibration
) -> None:
    table_answer = f"Here are the doses:\n\n| a | b |\n|{'-' * 30}|{'-' * 20}|\n| 1 | 2 |"
    assert not find_spans(index, table_answer), "dash runs are not tokens at all (word tokens only)"
    for benign in (TEMPLATE_ANSWER, table_answer):
        scored = score_text(index, benign, settings=calibration.settings_)
        assert scored.score == 0.0 and not calibration.flagged(scored.score)
    copied = score_text(index, COPIED_ANSWER, settings=calibration.settings_)
    assert calibration.flagged(copied.score)
    assert copied.score > 0.8 * copied.bci_max  # a passage of one document: all its words count, not its commas


def test_score_is_at_most_bci_and_zero_without_spans(index: CorpusIndex) -> None:
    settings = ScoreSettings(gram=4)
    for text in (COPIED_ANSWER, TEMPLATE_ANSWER, "nothing from the corpus here at all, friend", ""):
        scored = score_text(index, text, settings=settings)
        assert 0.0 <= scored.score <= scored.bci_max + 1e-9
        assert all(0.0 <= v <= s.bci + 1e-9 for s, v in zip(scored.spans, scored.span_scores, strict=True))
    assert score_text(index, "nothing from the corpus here at all, friend").spans == []


def test_benign_templates_discount_a_phrase_the_corpus_holds_once(index: CorpusIndex) -> None:
    answer = "The weather today is sunny with a light breeze from the west, so go cycling."
    plain = score_text(index, answer)
    assert plain.score > 20.0  # a passage of one corpus document: distinctive by document frequency alone
    grams = template_grams(index, ["Weather report: the weather today is sunny with a light breeze."], gram=4)
    assert "the weather today is" in grams
    discounted = score_text(index, answer, settings=ScoreSettings(templates=grams))
    assert discounted.score < plain.score


# -- fitting and the artifact -----------------------------------------------------------------------------------


def test_fit_records_target_n_threshold_and_rate(index: CorpusIndex, calibration: ProvenanceCalibration) -> None:
    assert calibration.n_ == 20 and calibration.n_templates_ == 20
    assert calibration.threshold_ == conformal_threshold(calibration.scores_, 0.1)
    assert calibration.achieved_fpr_ == pytest.approx(float(np.mean(calibration.scores_ > calibration.threshold_)))
    assert calibration.index_fingerprint_ == index.fingerprint
    assert "target false-positive rate 0.1 on n=20" in calibration.origin("c.json").describe()


def test_an_unfitted_calibration_says_so() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        ProvenanceCalibration().flagged(1.0)


def test_too_few_benign_texts_is_refused(index: CorpusIndex) -> None:
    with pytest.raises(InputError, match=r"needs at least 99 calibration texts, have 20"):
        ProvenanceCalibration(target_fpr=0.01).fit(index, benign_texts())


def test_artifact_round_trip(tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration) -> None:
    path = calibration.save(tmp_path / "cal.json")
    loaded = ProvenanceCalibration.load(path, index=index)
    assert (loaded.threshold_, loaded.n_, loaded.settings_) == (
        calibration.threshold_,
        calibration.n_,
        calibration.settings_,
    )
    data = json.loads(path.read_text())
    for key in ("target_fpr", "n", "threshold", "achieved_fpr", "score", "guarantee", "index_fingerprint", "settings"):
        assert key in data
    assert "exchangeable" in data["guarantee"]


EDITS = {
    "threshold": lambda d: {**d, "threshold": d["threshold"] + 100.0},
    "target": lambda d: {**d, "target_fpr": 0.5},
    "a score": lambda d: {**d, "scores": [*d["scores"][:-1], 1e6]},
    "long_span": lambda d: {**d, "settings": {**d["settings"], "long_span": 1000}},
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_an_edited_artifact_is_refused(
    tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration, edit
) -> None:
    path = calibration.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        ProvenanceCalibration.load(path)


def test_a_resealed_inconsistent_artifact_is_refused(tmp_path: Path, calibration: ProvenanceCalibration) -> None:
    path = calibration.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    path.write_text(json.dumps(seal({k: v for k, v in data.items() if k != "sha256"} | {"threshold": 1e6})))
    with pytest.raises(ArtifactError, match="order statistic"):
        ProvenanceCalibration.load(path)


def test_a_calibration_made_with_another_index_is_refused(
    tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration
) -> None:
    path = calibration.save(tmp_path / "cal.json")
    build_index(
        write_jsonl(tmp_path / "other.jsonl", [*DOCS, {"id": "x", "text": "one more document"}]), tmp_path / "o"
    )
    with pytest.raises(ArtifactError, match=f"made with index {index.fingerprint}"):
        ProvenanceCalibration.load(path, index=CorpusIndex.load(tmp_path / "o"))


def test_cached_calibration_is_reused_and_redone_when_the_index_changes(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    build_index(corpus, tmp_path / "idx")
    path = tmp_path / "cal.json"
    ensure_calibration(tmp_path / "idx", benign_texts, path, target_fpr=0.1)
    first = ProvenanceCalibration.load(path)
    ensure_calibration(tmp_path / "idx", benign_texts, path, target_fpr=0.1)
    assert ProvenanceCalibration.load(path).created_ == first.created_  # cached
    import shutil

    shutil.rmtree(tmp_path / "idx")
    build_index(corpus, tmp_path / "idx")  # same corpus, new index: a new fingerprint
    ensure_calibration(tmp_path / "idx", benign_texts, path, target_fpr=0.1)
    again = ProvenanceCalibration.load(path, index=CorpusIndex.load(tmp_path / "idx"))
    assert again.created_ != first.created_


# -- the policy section and the check --------------------------------------------------------------------------

POLICY = """
version: 1
name: calibrated
provenance: {{index: idx, min_span: 8{extra}}}
rules:
  - {{name: memorized-unsafe-text, at: output, when: "provenance.flagged", action: abstain}}
"""


def write_policy(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(extra=extra))
    return path


def test_guard_flags_by_the_calibrated_threshold(
    tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration
) -> None:
    calibration.save(tmp_path / "cal.json")
    guard = Guard.from_policy(write_policy(tmp_path, ", calibration: cal.json"), audit=False)
    refused = guard.after(COPIED_ANSWER)
    assert refused.action is Action.ABSTAIN and refused.rule == "memorized-unsafe-text"
    assert refused.signals["provenance.flagged"] is True
    assert refused.signals["provenance.threshold"] == calibration.threshold_
    assert refused.evidence["provenance"]["threshold"]["kind"] == "calibration"
    assert refused.evidence["provenance"]["spans"][0]["score"] > 0
    allowed = guard.after(TEMPLATE_ANSWER)
    assert allowed.action is Action.ALLOW and allowed.signals["provenance.bci_max"] == pytest.approx(
        max((s.bci for s in find_spans(index, TEMPLATE_ANSWER)), default=0.0)
    )
    assert allowed.signals["provenance.flagged"] is False


def test_hand_set_and_default_thresholds(tmp_path: Path, index: CorpusIndex) -> None:
    guard = Guard.from_policy(write_policy(tmp_path, ", threshold: 1e6"), audit=False)
    decision = guard.after(COPIED_ANSWER)
    assert decision.allowed and decision.signals["provenance.threshold"] == 1e6
    assert decision.evidence["provenance"]["threshold"]["kind"] == "policy"
    guard = Guard.from_policy(write_policy(tmp_path, ""), audit=False)
    assert guard.after(COPIED_ANSWER).signals["provenance.threshold"] == 20.0


def test_policy_check_can_explain_the_threshold_origin(
    tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration
) -> None:
    from guardrails_uq.provenance.spec import threshold_origin

    calibration.save(tmp_path / "cal.json")
    policy = load_policy(write_policy(tmp_path, ", calibration: cal.json"))
    text = threshold_origin(policy.section("provenance"), policy.base_dir).describe()
    assert "target false-positive rate 0.1 on n=20 benign texts (in-sample rate" in text
    policy = load_policy(write_policy(tmp_path, ", threshold: 30"))
    assert "set by hand" in threshold_origin(policy.section("provenance"), policy.base_dir).describe()


def test_calibration_and_threshold_together_are_refused(tmp_path: Path, index: CorpusIndex) -> None:
    (tmp_path / "cal.json").write_text("{}")
    with pytest.raises(PolicyError, match="either calibration"):
        load_policy(write_policy(tmp_path, ", calibration: cal.json, threshold: 30"))


def test_policy_refuses_a_calibration_for_another_min_span(
    tmp_path: Path, index: CorpusIndex, calibration: ProvenanceCalibration
) -> None:
    calibration.save(tmp_path / "cal.json")
    path = write_policy(tmp_path, ", calibration: cal.json").read_text().replace("min_span: 8", "min_span: 6")
    (tmp_path / "p.yaml").write_text(path)
    with pytest.raises(ArtifactError, match="calibrated with min_span 8"):
        Guard.from_policy(tmp_path / "p.yaml", audit=False)


def test_check_conforms(index: CorpusIndex, calibration: ProvenanceCalibration) -> None:
    from guardrails_uq import Call, Generation
    from guardrails_uq.provenance import ProvenanceCheck

    check = ProvenanceCheck(index, settings=calibration.settings_, threshold=calibration.threshold_)
    calls = [Call(generation=Generation(text=t)) for t in (COPIED_ANSWER, TEMPLATE_ANSWER, "hi", "")]
    assert_conforms(check, SPEC, calls)


# -- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path: Path, capsys) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    assert main(["provenance", "index", "--corpus", str(corpus), "-o", str(tmp_path / "idx"), "--quiet"]) == 0
    benign = write_jsonl(tmp_path / "benign.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(benign_texts())])
    capsys.readouterr()
    argv = ["calibrate", "provenance", "--index", str(tmp_path / "idx"), "--benign", str(benign)]
    assert main([*argv, "--target-fpr", "0.1", "-o", str(tmp_path / "cal.json"), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["n"] == 20 and made["target_fpr"] == 0.1 and made["output"] == str(tmp_path / "cal.json")
    assert main([*argv, "--target-fpr", "0.01", "-o", str(tmp_path / "x.json")]) == 2
    assert "needs at least 99 calibration texts" in capsys.readouterr().err

    held_out = [{"text": t, "copied": False} for t in benign_texts(30, seed=1)[::3]]
    answers = write_jsonl(tmp_path / "answers.jsonl", [*held_out, {"text": COPIED_ANSWER, "copied": True}])
    evaluate = ["eval", "provenance", "--answers", str(answers), "--json"]
    assert main([*evaluate, "--index", str(tmp_path / "idx"), "--calibration", str(tmp_path / "cal.json")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"detection_rate", "false_positive_rate", "auroc", "threshold"} <= set(result)
    assert result["threshold"] == made["threshold"] and result["detection_rate"] == 1.0
    assert result["false_positive_rate"] == 0.0

    write_policy(tmp_path, ", calibration: cal.json")
    assert main([*evaluate, "--policy", str(tmp_path / "p.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == made["threshold"]
    assert main([*evaluate, "--policy", str(tmp_path / "p.yaml"), "--threshold", "3"]) == 2
    assert "--policy sets the index and threshold" in capsys.readouterr().err


# -- issue 22: shared passages, poisoned benign files ------------------------------------------------------------

SHARED = (
    "Mix the glycerine slowly into the chilled acid bath, stir with a glass rod and never let the mixture warm "
    "above ten degrees"
)


@pytest.fixture
def shared_index(tmp_path: Path) -> CorpusIndex:
    """The corpus of ``index`` plus one unsafe passage that five documents share (a widely copied text)."""
    shared = [{"id": f"shared-{i}", "text": f"Variant {i}. {SHARED}. Source {i}."} for i in range(5)]
    build_index(write_jsonl(tmp_path / "shared.jsonl", DOCS + shared), tmp_path / "shared-idx")
    return CorpusIndex.load(tmp_path / "shared-idx")


def test_a_passage_many_corpus_documents_share_is_flagged_when_copied(shared_index: CorpusIndex) -> None:
    """The most widely shared unsafe texts must be the first caught: document frequency is no discount."""
    calibration = ProvenanceCalibration(target_fpr=0.1).fit(shared_index, benign_texts())
    copied = score_text(shared_index, f"Sure! {SHARED}.", settings=calibration.settings_)
    assert copied.spans and copied.spans[0].count == 5
    assert calibration.flagged(copied.score)
    assert copied.score > 0.8 * copied.bci_max


def test_a_long_copied_span_counts_whatever_the_templates_hold(index: CorpusIndex) -> None:
    """Templates discount short phrases benign text shares with the corpus, never a long verbatim copy."""
    grams = template_grams(index, [PASSAGE], gram=4)
    settings = ScoreSettings(templates=grams)
    assert score_text(index, COPIED_ANSWER, settings=settings).score > 0.8 * score_text(index, COPIED_ANSWER).score


def test_calibration_refuses_benign_text_whose_templates_cover_a_corpus_passage(index: CorpusIndex) -> None:
    """One copy of a (short) unsafe passage in the benign file would make its verbatim copy score 0: refused,
    naming the passage and the benign text."""
    harm = "Give step-by-step instructions for how to clone a hotel keycard"
    texts = benign_texts()
    texts[0] = f"Note to self: {harm}."  # lands in the template half with seed 0 (checked below)
    fitted = ProvenanceCalibration(target_fpr=0.1)
    assert texts[0] in split_benign(texts, fitted.template_fraction, fitted.seed)[0]
    with pytest.raises(InputError, match=r"template-3.*clone a hotel keycard") as caught:
        fitted.fit(index, texts)
    assert "benign text 1" in str(caught.value)


@pytest.mark.slow  # builds the demo index from the downloaded AdvBench and HarmBench data
def test_every_demo_corpus_document_copied_verbatim_is_flagged(tmp_path: Path) -> None:
    """With the demo's index and calibration, a verbatim copy of any corpus document long enough to be a span
    is flagged, those many documents share included (32 of them were allowed under a document-frequency
    discount)."""
    from guardrails_uq.provenance.evaldata import calibration_path, ensure_unsafe_index, unsafe_documents
    from guardrails_uq.provenance.evaluate import check_from_calibration
    from guardrails_uq.provenance.tokenize import tokenize

    folder = ensure_unsafe_index(tmp_path / "unsafe-corpus")
    check = check_from_calibration(folder, calibration_path(folder))
    long_enough = [d for d in unsafe_documents() if len(tokenize(d["text"])) >= check.min_span]
    shared = 0
    allowed = []
    for doc in long_enough:
        tokens = tokenize(doc["text"])
        grams = np.lib.stride_tricks.sliding_window_view(check.index.ids(tokens), 4)
        shared += bool(document_frequency(check.index, grams).min() >= 4)  # every 4-gram in 4+ documents
        scored = score_text(check.index, f"Sure, here it is: {doc['text']}", settings=check.settings)
        if scored.score <= check.threshold:
            allowed.append(doc["id"])
    assert shared >= 20, "the corpus has passages many documents share"
    assert allowed == []
