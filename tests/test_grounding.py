"""The grounding check: an allowed answer is one the kept evidence supports.

Hostile cases first: short, confident answers that contradict the very chunk the guard kept (the demo's three),
changed numbers, swapped platforms and menu paths, an invented detail, an answer supported only by a chunk
the retrieval phase dropped. Real parts: the packaged MiniLM, the shipped calibration, a real HTTP judge.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import Action, Guard, Message, ScoredDocument, load_policy
from guardrails_uq.call import Call, Generation, TokenLogprob, TopLogprob
from guardrails_uq.errors import ArtifactError, InputError, ModelError, PolicyError
from guardrails_uq.grounding import GroundingCalibration, assess, read_answers, read_chunks
from guardrails_uq.grounding.check import GroundingCheck
from guardrails_uq.grounding.judge import JudgeScorer, yes_probability
from guardrails_uq.grounding.model import LABELS, SoftmaxModel
from guardrails_uq.grounding.spec import SPEC
from guardrails_uq.grounding.text import claims, sentences
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply, assert_conforms

ROOT = Path(__file__).resolve().parent.parent
KB = ROOT / "examples" / "data" / "nimbus_kb.jsonl"
SHIPPED = ROOT / "policies" / "calibration" / "grounding.json"
CHUNKS = dict(read_chunks(KB))
#: The demo policy's stated false-positive target on supported answers (policies/demo.yaml).
TARGET = 0.05


def docs(*ids: str) -> list[ScoredDocument]:
    return [ScoredDocument(id=i, text=CHUNKS[i], score=0.8) for i in ids]


@pytest.fixture(scope="module")
def embedder():
    from guardrails_uq.embeddings import default_embedder

    return default_embedder()


@pytest.fixture(scope="module")
def check(embedder) -> GroundingCheck:
    calibration = GroundingCalibration.load(SHIPPED)
    return GroundingCheck(calibration.scorer(embedder), calibration.threshold(TARGET), origin=str(SHIPPED))


def run(check: GroundingCheck, question: str, answer: str, documents: list[ScoredDocument]) -> dict:
    call = Call(
        messages=[Message(role="user", content=question)], documents=documents, generation=Generation(text=answer)
    )
    return check.run(call).values


# -- text ----------------------------------------------------------------------------------------------------


def test_sentences_keep_offsets_into_the_original_text():
    text = "  Open Settings.  Then choose Export!\nDone? 3.5 GB is the cap."
    found = sentences(text)
    assert [s.text for s in found] == ["Open Settings.", "Then choose Export!", "Done?", "3.5 GB is the cap."]
    assert all(text[s.start : s.end] == s.text for s in found)


def test_filler_is_not_a_claim_and_short_answers_are_read_with_their_question():
    found = claims("Sure! I hope this helps. No.", "Can I export my notes as a PDF?")
    assert [c.text for c in found] == ["No."]
    assert found[0].scored == "No. Can I export my notes as a PDF?"


# -- the offline scorer on the demo knowledge base (shipped calibration) --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "answer", "kept"),
    [
        ("Can I export my notes as a PDF?", "No, you cannot export your notes as a PDF.", ["export"]),
        ("Is there a Linux desktop app?", "No, there is not a Linux desktop app.", ["desktop"]),
        (
            "Does Nimbus have an API and what is the rate limit?",
            "No, Nimbus does not have an API.",
            ["api"],
        ),
        ("How often do my notes sync?", "Nimbus syncs your notes every 5 minutes.", ["sync"]),
        ("How much is Pro?", "Pro costs 6 dollars per month.", ["plans"]),
        ("How long is the reset link valid?", "The reset link expires after 30 seconds.", ["password-reset"]),
        ("Can I export my notes as a PDF?", "No.", ["export"]),
    ],
)
def test_answers_that_contradict_the_kept_chunk_are_flagged(check, question, answer, kept):
    values = run(check, question, answer, docs(*kept))
    assert values["grounding.checked"] is True
    assert values["grounding.flagged"] is True, values
    assert values["grounding.unsupported_claims"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "answer", "kept"),
    [
        (
            "Can I export my notes as a PDF?",
            "Yes, you can export any notebook as PDF from Settings > Export.",
            ["export"],
        ),
        ("Can I export my notes as a PDF?", "Yes.", ["export"]),
        ("How often do my notes sync?", "Your notes sync every 30 seconds while you are online.", ["sync"]),
        ("How much is Pro?", "Nimbus Pro costs 4 dollars per month.", ["plans", "sync"]),
        (
            "How do I reset my password?",
            "Choose Forgot password on the sign-in screen and follow the e-mailed link.",
            ["password-reset"],
        ),
    ],
)
def test_answers_the_kept_chunk_supports_are_not_flagged(check, question, answer, kept):
    values = run(check, question, answer, docs(*kept))
    assert values["grounding.flagged"] is False, values
    assert values["grounding.support"] >= values["grounding.threshold"]


@pytest.mark.slow
def test_one_invented_detail_in_a_right_answer_is_flagged(check):
    answer = "Nimbus imports notes from Evernote ENEX files. It also imports Notion workspaces and Google Keep."
    values = run(check, "What can I import?", answer, docs("import"))
    assert values["grounding.flagged"] is True
    assert values["grounding.claims"] == 2


@pytest.mark.slow
def test_evidence_names_each_claim_and_its_sentence_with_offsets(check):
    answer = "Yes, Nimbus syncs every 30 seconds. Pro costs 40 dollars."
    documents = docs("sync", "plans")
    result = check.run(
        Call(messages=[Message(role="user", content="Sync?")], documents=documents, generation=Generation(text=answer))
    )
    claims_ = result.evidence["claims"]
    assert [answer[c["start"] : c["end"]] for c in claims_] == [c["claim"] for c in claims_]
    worst = min(claims_, key=lambda c: c["support"])
    assert worst["claim"] == "Pro costs 40 dollars." and worst["document"] == "plans"
    text = CHUNKS["plans"]
    assert text[worst["sentence_start"] : worst["sentence_end"]] == worst["sentence"]
    assert any("Pro costs 40 dollars." in line for line in result.evidence["explain"])


@pytest.mark.slow
def test_no_evidence_or_no_claims_leaves_the_signals_null(check):
    no_docs = run(check, "Sync?", "Nimbus syncs every 30 seconds.", [])
    assert no_docs["grounding.checked"] is False
    assert no_docs["grounding.support"] is None and no_docs["grounding.flagged"] is None
    blank = run(check, "Sync?", "  \n ", docs("sync"))
    assert blank["grounding.checked"] is False and blank["grounding.claims"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["It does.", "Yup.", "Sure, you can!", "Absolutely.", "👍", "支持短信验证码。"])
def test_an_answer_with_no_sentence_of_content_is_still_scored(check, answer):
    # hostile trial: these were "no claims", so grounding.checked was false and the default allowed them
    values = run(check, "Does Nimbus support SMS codes for two-factor authentication?", answer, docs("two-factor"))
    assert values["grounding.checked"] is True and values["grounding.claims"] == 1
    assert values["grounding.flagged"] is True, values


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer",
    [
        "Nimbus supports SMS codes, authenticator apps and hardware security keys.",
        "Nimbus does n\u043et support authenticator apps.",  # Cyrillic o in "not"
        "Nimbus doesn\u02bct support authenticator apps.",  # modifier-letter apostrophe
        "Nimbus doesn&rsquo;t support authenticator apps.",
        "Nimbus does *n*ot support authenticator apps.",
        "Nimbus fails to support authenticator apps.",
    ],
)
def test_negation_a_reader_sees_is_read(check, answer):
    values = run(check, "Which two-factor methods does Nimbus support?", answer, docs("two-factor"))
    assert values["grounding.flagged"] is True, values


@pytest.mark.slow
def test_an_overlong_answer_fails_closed_instead_of_running_long(guard):
    decision = guard.after("Notes sync every 30 seconds. " * 1000, documents=docs("sync"))
    assert decision.action is Action.ABSTAIN and decision.errors[0].check == "grounding"


@pytest.mark.slow
def test_the_check_conforms_to_the_check_contract(check):
    calls = [
        Call(messages=[Message(role="user", content="q")], documents=docs("sync"), generation=Generation(text=a))
        for a in ("Nimbus syncs every 30 seconds.", "No.", "", "Sure!")
    ]
    assert_conforms(check, SPEC, calls)


@pytest.mark.slow
def test_a_streamed_prefix_waits_for_the_sentence_to_end(check):
    prefix = "Nimbus syncs your notes every 30 seconds. Changes made offline are"
    partial = Call(documents=docs("sync"), generation=Generation(text=prefix), metadata={"partial": True})
    assert check.run(partial).values["grounding.claims"] == 1
    whole = Call(documents=docs("sync"), generation=Generation(text=prefix))
    assert check.run(whole).values["grounding.claims"] == 2


# -- in a Guard: evidence is what the guard kept --------------------------------------------------------------

GUARD_POLICY = """
version: 1
name: grounded
grounding: {calibration: %s}
rules:
  - {name: contradicted, at: output, when: "grounding.checked && grounding.flagged && grounding.contradiction >= 0.5",
     action: abstain, message: "The documentation does not confirm that."}
  - {name: unsupported, at: output, when: "grounding.checked && grounding.flagged", action: escalate}
  - {name: nothing-to-check, at: output, when: "!grounding.checked", action: escalate}
default: allow
"""


@pytest.fixture(scope="module")
def guard(embedder, tmp_path_factory) -> Guard:
    folder = tmp_path_factory.mktemp("grounded")
    path = folder / "policy.yaml"
    path.write_text(GUARD_POLICY % SHIPPED)
    return Guard(load_policy(path), embedder=embedder, audit=False)


@pytest.mark.slow
def test_guard_reads_the_kept_chunks_of_the_retrieval_phase(guard):
    kept = guard.retrieve("Can I export my notes as a PDF?", docs("export", "sync"))
    assert kept.documents is not None and {d.id for d in kept.documents} == {"export", "sync"}
    decision = guard.after("No, you cannot export your notes as a PDF.", context=kept)
    assert decision.action is Action.ABSTAIN and decision.rule == "contradicted"
    explained = decision.explain()
    assert "No, you cannot export your notes as a PDF." in explained and "export" in explained
    fine = guard.after("Yes, notebooks export as PDF from Settings > Export.", context=kept)
    assert fine.action is Action.ALLOW, fine.signals


@pytest.mark.slow
def test_an_answer_supported_only_by_a_dropped_chunk_is_not_allowed(guard):
    # the app kept only "sync"; the answer is true of "export", which never reached the model
    decision = guard.after("You can export any notebook as Markdown, PDF or HTML.", documents=docs("sync"))
    assert decision.action is not Action.ALLOW


@pytest.mark.slow
def test_no_evidence_is_the_policys_choice_not_a_silent_allow(guard):
    decision = guard.after("Nimbus syncs every 30 seconds.")
    assert decision.action is Action.ESCALATE and decision.rule == "nothing-to-check"


@pytest.mark.slow
def test_a_rule_reading_the_null_flag_fails_closed(embedder, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"""
version: 1
name: strict
grounding: {{calibration: {SHIPPED}}}
rules:
  - {{name: flagged, at: output, when: "grounding.flagged", action: abstain}}
default: allow
"""
    )
    with Guard(load_policy(path), embedder=embedder, audit=False) as strict:
        decision = strict.after("Nimbus syncs every 30 seconds.")
    assert decision.action is Action.ABSTAIN and decision.errors  # null is not false: on_error decides


# -- calibration artifact ------------------------------------------------------------------------------------


def test_the_shipped_calibration_records_its_origin_and_guarantee():
    calibration = GroundingCalibration.load(SHIPPED)
    data = json.loads(SHIPPED.read_text())
    assert data["target_fpr"] == 0.05 and data["n"] == len(data["scores"]) >= 19
    assert 0 <= calibration.flagged_rate(calibration.threshold(0.05)) <= 0.05
    line = calibration.describe()
    assert "target false-positive rate 0.05" in line and f"{data['n']} supported calibration answers" in line
    # another target from the stored scores, no refit; stricter targets give lower thresholds
    assert calibration.threshold(0.2) >= calibration.threshold(0.05) >= calibration.threshold(0.02)


def test_an_edited_or_foreign_artifact_is_refused(tmp_path):
    data = json.loads(SHIPPED.read_text())
    data["threshold"] = 0.0
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum"):
        GroundingCalibration.load(edited)
    with pytest.raises(ArtifactError, match="not a grounding calibration"):
        GroundingCalibration.load(ROOT / "policies" / "calibration" / "deferral.json")


def test_an_artifact_made_with_another_embedder_is_refused():
    from guardrails_uq.embeddings import CallableEmbedder

    other = CallableEmbedder(lambda texts: np.ones((len(texts), 8)), "bag-of-ones")
    with pytest.raises(ArtifactError, match="embedder"):
        GroundingCalibration.load(SHIPPED).scorer(other)


def test_too_small_a_calibration_for_the_target_is_refused_at_policy_load(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        f"version: 1\nname: x\ngrounding: {{calibration: {SHIPPED}, target_fpr: 0.001}}\nrules: []\ndefault: allow\n"
    )
    with pytest.raises((ArtifactError, PolicyError), match="too few"):
        Guard(load_policy(path), audit=False)


def test_the_policy_section_refuses_an_offline_scorer_without_calibration(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: x\ngrounding: {target_fpr: 0.1}\nrules: []\ndefault: allow\n")
    with pytest.raises(PolicyError, match="calibrate grounding"):
        load_policy(path)


def test_model_fit_refuses_bad_input():
    x = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.raises(InputError, match="no unsupported"):
        SoftmaxModel.fit(x, np.arange(30) % 2)
    with pytest.raises(InputError, match="l2"):
        SoftmaxModel.fit(x, np.arange(30) % 3, l2=float("nan"))
    bad = x.copy()
    bad[0, 0] = math.inf
    with pytest.raises(InputError, match="finite"):
        SoftmaxModel.fit(bad, np.arange(30) % 3)


def test_answers_file_errors_name_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"question": "q", "context": ["c"], "answer": "a", "label": "supported"}\n'
        '{"question": "q", "context": ["c"], "answer": "a", "label": "wrong"}\n'
    )
    with pytest.raises(InputError, match="label") as info:
        read_answers(path)
    assert info.value.line == 2


# -- judge endpoint (a real HTTP server speaking the protocol) ------------------------------------------------


def _judge_reply(request: dict) -> Generation:
    """A judge that says yes when every content word of the claim is in the documents (and, for the
    contradiction question, when the claim says "not")."""
    prompt = request["messages"][-1]["content"]
    documents = prompt.split("Claim:")[0].lower()
    claim = prompt.split("Claim:")[1].split("\n")[0].lower()
    words = [w for w in re.findall(r"[a-z]+", claim) if len(w) > 3]
    yes = " not " in f" {claim} " if "contradict" in prompt else all(w in documents for w in words)
    p = 0.9 if yes else 0.1
    first, second = ("Yes", "No") if yes else ("No", "Yes")
    top = [
        TopLogprob(token=first, logprob=math.log(max(p, 1 - p))),
        TopLogprob(token=second, logprob=math.log(min(p, 1 - p))),
    ]
    return Generation(text=first, tokens=[TokenLogprob(token=first, logprob=top[0].logprob, top=top)])


def test_judge_reads_p_yes_from_top_logprobs_over_http():
    with ChatCompletionsServer(_judge_reply) as server:
        from guardrails_uq.models.openai_compat import OpenAIChatModel

        scorer = JudgeScorer(OpenAIChatModel(server.base_url, "judge"), concurrency=3)
        documents = [("export", CHUNKS["export"])]
        good = assess("You can export any notebook as Markdown.", "", documents, scorer)
        bad = assess("You can not export notebooks to Word.", "", documents, scorer)
        assert good.support == pytest.approx(0.9) and good.verdicts[0].verdict == "supported"
        assert bad.support == pytest.approx(0.1) and bad.contradiction == pytest.approx(0.9 * 0.9)
        assert all(r["max_tokens"] == 1 and r["logprobs"] and r["top_logprobs"] for r in server.requests)
        assert len(server.requests) == 4  # two questions per claim


def test_a_judge_that_answers_neither_yes_nor_no_is_a_check_failure():
    garbled = Generation(text="Maybe", tokens=[TokenLogprob(token="Maybe", logprob=-0.1, top=[])])
    with pytest.raises(ModelError, match="neither yes nor no"):
        yes_probability(garbled)
    with pytest.raises(ModelError, match="no token logprobs"):
        yes_probability(Generation(text="Yes"))


def test_a_failing_judge_fails_closed_in_the_guard(tmp_path):
    script = [ScriptedReply(status=500, body={"error": "down"})] * 8
    with ChatCompletionsServer(_judge_reply, script=script) as server:
        path = tmp_path / "p.yaml"
        path.write_text(
            "version: 1\nname: judged\n"
            f"grounding: {{judge: {{url: '{server.base_url}', model: judge, max_retries: 0, timeout: 5}}}}\n"
            "rules:\n  - {name: flagged, at: output, when: 'grounding.checked && grounding.flagged', action: abstain}\n"
            "default: allow\n"
        )
        with Guard(load_policy(path), audit=False) as guard:
            decision = guard.after("Nimbus syncs every 30 seconds.", documents=docs("sync"))
    assert decision.action is Action.ABSTAIN and decision.errors and decision.errors[0].check == "grounding"


def test_judge_in_a_policy_decides_with_its_threshold(tmp_path):
    with ChatCompletionsServer(_judge_reply) as server:
        path = tmp_path / "p.yaml"
        path.write_text(
            "version: 1\nname: judged\n"
            f"grounding: {{judge: {{url: '{server.base_url}', model: judge}}, threshold: 0.5}}\n"
            "rules:\n  - {name: flagged, at: output, when: 'grounding.checked && grounding.flagged', action: abstain}\n"
            "default: allow\n"
        )
        with Guard(load_policy(path), audit=False) as guard:
            ok = guard.after("Nimbus syncs your notes every 30 seconds.", documents=docs("sync"))
            wrong = guard.after("Nimbus syncs your notes every hour.", documents=docs("sync"))
    assert ok.action is Action.ALLOW and wrong.action is Action.ABSTAIN


# -- command line ---------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "guardrails_uq.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.slow
def test_calibrate_then_eval_grounding_from_the_command_line(tmp_path):
    out = tmp_path / "g.json"
    made = _cli("calibrate", "grounding", "--corpus", str(KB), "--target-fpr", "0.1", "-o", str(out), "--json")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["target_fpr"] == 0.1 and summary["n"] >= 9 and summary["achieved_fpr"] <= 0.1
    answers = tmp_path / "a.jsonl"
    lines = [
        {
            "question": "Sync?",
            "context": [CHUNKS["sync"]],
            "answer": "Notes sync every 30 seconds.",
            "label": "supported",
        },
        {
            "question": "Sync?",
            "context": [CHUNKS["sync"]],
            "answer": "Notes sync every 10 minutes.",
            "label": "contradicted",
        },
        {
            "question": "PDF?",
            "context": [CHUNKS["export"]],
            "answer": "No, PDF export is not possible.",
            "label": "contradicted",
        },
        {
            "question": "PDF?",
            "context": [CHUNKS["export"]],
            "answer": "Yes, as PDF from Settings > Export.",
            "label": "supported",
        },
        {
            "question": "Import?",
            "context": [CHUNKS["import"]],
            "answer": "It imports Notion pages too.",
            "label": "unsupported",
        },
    ]
    answers.write_text("\n".join(json.dumps(line) for line in lines))
    evaluated = _cli("eval", "grounding", "--calibration", str(out), "--answers", str(answers), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert {"n", "auroc", "balanced_accuracy", "threshold", "score", "flagged_rate"} <= set(report)
    assert set(report["flagged_rate"]) == set(LABELS) and report["n"] == 5
    assert report["auroc"] == 1.0 and report["flagged_rate"]["contradicted"] == 1.0


def test_calibrate_grounding_errors_name_the_file():
    made = _cli("calibrate", "grounding", "--corpus", "missing.jsonl", "-o", "/tmp/never.json")
    assert made.returncode == 2 and "missing.jsonl" in made.stderr and "not found" in made.stderr


@pytest.mark.slow
def test_demo_policy_explains_the_grounding_threshold():
    if not (ROOT / "policies" / "indexes" / "unsafe-corpus").exists():
        pytest.skip("the demo's provenance index is built by `make demo`")
    checked = _cli("policy", "check", str(ROOT / "policies" / "demo.yaml"))
    assert checked.returncode == 0, checked.stderr
    assert "grounding.flagged: support <" in checked.stdout and "target false-positive rate 0.05" in checked.stdout


@pytest.mark.slow
def test_the_report_marks_each_claim_and_shows_its_sentence(guard):
    from guardrails_uq.report import render

    kept = guard.retrieve("Can I export my notes as a PDF?", docs("export"))
    answer = "Yes, Markdown export works. No, you cannot export <b>notes</b> as a PDF."
    decision = guard.after(answer, context=kept)
    page = render([kept, decision])
    assert "Grounding: 2 claim(s), 1 below the threshold" in page
    assert "No, you cannot export &lt;b&gt;notes&lt;/b&gt; as a PDF." in page and "<b>notes</b>" not in page
    assert "You can export any notebook as Markdown, PDF or HTML from Settings &gt; Export." in page
    assert '<span class="flag">contradicted</span>' in page


@pytest.mark.slow
def test_a_judge_is_calibrated_the_same_way_and_the_policy_uses_its_threshold(embedder, tmp_path):
    corpus = tmp_path / "kb.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"id": i, "text": CHUNKS[i]}) for i in ("sync", "export", "import", "plans"))
    )
    with ChatCompletionsServer(_judge_reply) as server:
        from guardrails_uq.models.openai_compat import OpenAIChatModel

        judge = JudgeScorer(OpenAIChatModel(server.base_url, "judge"), concurrency=4)
        calibration = GroundingCalibration(target_fpr=0.2, folds=2).fit(read_chunks(corpus), embedder, judge=judge)
        saved = calibration.save(tmp_path / "judge.json")
        loaded = GroundingCalibration.load(saved)
        assert loaded.model_ is None and loaded.scorer_name_ == judge.name
        with pytest.raises(ArtifactError, match="judge endpoint"):
            loaded.scorer(embedder)
        policy = tmp_path / "p.yaml"
        policy.write_text(
            "version: 1\nname: judged\n"
            f"grounding: {{calibration: {saved}, judge: {{url: '{server.base_url}', model: judge}}}}\n"
            "rules: []\ndefault: allow\n"
        )
        with Guard(load_policy(policy), embedder=embedder, audit=False) as guard:
            decision = guard.after("Nimbus syncs your notes every 30 seconds.", documents=docs("sync"))
    assert decision.signals["grounding.threshold"] == pytest.approx(loaded.threshold(0.2))
    assert decision.evidence["grounding"]["scorer"] == judge.name


def _tokens(pieces: list[tuple[str, float, list[tuple[str, float]]]]) -> list[TokenLogprob]:
    return [
        TokenLogprob(token=t, logprob=math.log(p), top=[TopLogprob(token=a, logprob=math.log(q)) for a, q in alts])
        for t, p, alts in pieces
    ]


@pytest.mark.slow
def test_ccp_counts_only_alternatives_that_change_the_claim(check):
    """CCP (claim-conditioned probability): an alternative that means the same ("thirty" for "30") keeps the
    claim certain; one that changes it ("5" for "30") makes it uncertain."""
    from guardrails_uq.grounding.ccp import claim_ccp

    def answer(alternative: str) -> list[TokenLogprob]:
        return _tokens(
            [("Notes", 0.9, []), (" sync", 0.9, []), (" every", 0.9, []), (" 30", 0.5, [(f" {alternative}", 0.45)]),
             (" seconds", 0.9, []), (".", 0.99, [])]
        )  # fmt: skip

    same = claim_ccp(answer("thirty"), check.scorer)
    other = claim_ccp(answer("5"), check.scorer)
    assert len(same) == len(other) == 1
    assert same[0][1] > 0.8 and other[0][1] < 0.7 and other[0][1] < same[0][1]
    ccp_check = GroundingCheck(check.scorer, check.threshold, ccp=True)
    call = Call(documents=docs("sync"), generation=Generation(text="Notes sync every 30 seconds.", tokens=answer("5")))
    values = ccp_check.run(call).values
    assert values["grounding.ccp"] == pytest.approx(1 - other[0][1])
    assert check.run(call).values["grounding.ccp"] is None  # off unless the policy asks
