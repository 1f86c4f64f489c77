"""Conformal efficiency: the hybrid lexical+dense score, choosing the score kind on the calibration data
(``auto``), its artifact record, the set-size signals, and the CLI round trip."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import Action, ArtifactError, Guard, ScoredDocument
from guardrails_uq.artifacts import seal
from guardrails_uq.call import Call
from guardrails_uq.conformal import (
    HYBRID_WEIGHT,
    KEEPS_TOP_KINDS,
    SCORE_KINDS,
    ConformalCalibrator,
    ConformalCheck,
    bm25_scores,
    calibrate,
    conformity,
    keep_mask,
    nonconformity,
)
from guardrails_uq.conformal.evaluate import RetrievedSet, evaluate
from guardrails_uq.conformal.selection import KindTable, select_kind
from guardrails_uq.conformal.spec import SPEC
from guardrails_uq.errors import InputError
from guardrails_uq.testing import assert_conforms

# -- the hybrid score -------------------------------------------------------------------------------------

TEXTS = ["cat purr", "cat bark loud dog", ""]


def lucene_bm25_by_hand() -> list[float]:
    """BM25 (Lucene: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part tf / (tf + k1 (1 - b + b dl / avgdl)),
    k1 = 1.5, b = 0.75) of "cat purr" against TEXTS: N = 3, avgdl = 2, df(cat) = 2, df(purr) = 1."""
    idf_cat, idf_purr = math.log(1 + 1.5 / 2.5), math.log(1 + 2.5 / 1.5)
    first = (idf_cat + idf_purr) / (1 + 1.5 * (0.25 + 0.75 * 2 / 2))
    second = idf_cat / (1 + 1.5 * (0.25 + 0.75 * 4 / 2))
    return [first, second, 0.0]


def test_bm25_matches_the_lucene_formula_by_hand() -> None:
    assert bm25_scores("Cat purr?", TEXTS).tolist() == pytest.approx(lucene_bm25_by_hand(), rel=1e-5)
    reordered = bm25_scores("cat purr", [TEXTS[2], TEXTS[0], TEXTS[1]])
    assert reordered.tolist() == pytest.approx([0.0, *lucene_bm25_by_hand()[:2]], rel=1e-5)  # order-free
    assert bm25_scores("the of and", TEXTS).tolist() == [0.0, 0.0, 0.0]  # stop words only
    assert bm25_scores("anything", []).tolist() == []


def test_hybrid_conformity_fuses_dense_and_normalised_bm25() -> None:
    dense = [0.5, 0.6, 0.1]
    b = lucene_bm25_by_hand()
    expected = [dense[i] + HYBRID_WEIGHT * b[i] / b[0] for i in range(3)]
    assert conformity(dense, "hybrid", query="cat purr", texts=TEXTS).tolist() == pytest.approx(expected)
    relative = conformity(dense, "hybrid-relative", query="cat purr", texts=TEXTS)
    assert relative.tolist() == pytest.approx([e - max(expected) for e in expected])
    # the lexical match lifts "cat purr" (0.7) over the denser "cat bark loud dog" (0.6 + 0.2 * 0.146)
    assert keep_mask(dense, -0.65, "hybrid", "similarity", query="cat purr", texts=TEXTS).tolist() == [
        True,
        False,
        False,
    ]
    distance = conformity([0.5, 0.4, 0.9], "hybrid", "distance", query="cat purr", texts=TEXTS)
    assert distance[0] == pytest.approx(-0.5 + HYBRID_WEIGHT)
    with pytest.raises(InputError, match="needs the query"):
        conformity(dense, "hybrid")


@pytest.mark.parametrize("kind", ["similarity", "relative", "rank"])
def test_conformity_reproduces_the_dense_kinds(kind) -> None:
    scores, relevant = [0.9, 0.7, 0.6, 0.2], [False, False, True, True]
    c = conformity(scores, kind)
    assert -c[2] == nonconformity(scores, relevant, kind)
    for threshold in (-0.65, 0.25, 1.0, math.inf):
        assert keep_mask(scores, threshold, kind, "similarity").tolist() == (c >= -threshold).tolist() or (
            math.isinf(threshold)
        )


# -- choosing the kind ------------------------------------------------------------------------------------


def offset_lists(n: int, rng: np.random.Generator, *, spread: int = 2) -> tuple[list[list[float]], list[list[bool]]]:
    """Queries whose whole score scale shifts (a per-query offset): the relevant chunk is among the top
    ``spread``, so the gap to the top says more than the raw score (relative keeps fewer)."""
    scores, flags = [], []
    for _ in range(n):
        row = rng.uniform(0, 0.5, 30) + rng.uniform(0, 1)
        relevant = np.zeros(30, dtype=bool)
        relevant[int(np.argsort(-row)[rng.integers(0, spread)])] = True
        scores.append(row.tolist())
        flags.append(relevant.tolist())
    return scores, flags


def distractor_lists(n: int, rng: np.random.Generator) -> tuple[list[list[float]], list[list[bool]]]:
    """The relevant chunk always scores 0.8, others below 0.7, but half the queries have a distractor at
    1.0: the raw score separates well, the gap to the top does not (similarity keeps fewer)."""
    scores, flags = [], []
    for i in range(n):
        row = [0.8, *rng.uniform(0, 0.7, 20).tolist()] + ([1.0] if i % 2 else [])
        scores.append(row)
        flags.append([True] + [False] * (len(row) - 1))
    return scores, flags


def tables_of(scores, flags, kinds=("similarity", "relative", "rank")) -> dict:
    return {k: KindTable.from_lists([conformity(row, k) for row in scores], flags) for k in kinds}


def test_auto_picks_the_kind_that_keeps_fewer_chunks() -> None:
    rng = np.random.default_rng(0)
    shifted_lists = offset_lists(200, rng)
    shifted = select_kind(tables_of(*shifted_lists))
    kept = {(r["score_kind"], r["alpha"]): r["kept_mean"] for r in shifted.table}
    assert shifted.chosen == min(("relative", "rank"), key=lambda k: kept[(k, 0.1)])  # both keep ~2 of 30
    assert kept[(shifted.chosen, 0.1)] < kept[("similarity", 0.1)] / 3
    assert select_kind(tables_of(*shifted_lists, kinds=("similarity", "relative"))).chosen == "relative"
    distracted = select_kind(tables_of(*distractor_lists(200, rng)))
    assert distracted.chosen == "similarity"
    assert "fewest chunks kept" in distracted.reason


def test_auto_skips_kinds_that_do_not_cover() -> None:
    table = tables_of(*offset_lists(100, np.random.default_rng(1)), kinds=("similarity",))["similarity"]
    starved = KindTable(table.conformity, np.full(100, np.inf), table.best_position, table.lengths)
    selection = select_kind({"similarity": table, "relative": starved})  # type: ignore[dict-item]
    assert selection.chosen == "similarity"  # "relative" keeps no relevant chunk, whatever it keeps


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_auto_covers_on_held_out_queries_averaged_over_splits(alpha: float) -> None:
    """The whole procedure (choose by cross-validation, calibrate) on one half, coverage on the other."""
    rng = np.random.default_rng(2)
    s1, f1 = offset_lists(150, rng)
    s2, f2 = distractor_lists(150, rng)
    splits = 100
    report = evaluate(RetrievedSet.from_lists(s1 + s2, f1 + f2), [alpha], splits=splits, kinds=["auto"])
    (row,) = report["results"]
    assert row["coverage_mean"] >= 1 - alpha - 3 * row["coverage_std"] / math.sqrt(splits), row
    assert sum(row["picks"].values()) == splits
    assert report["selection"]["chosen"] in SCORE_KINDS


# -- the artifact ------------------------------------------------------------------------------------------


def fitted_auto(tmp_path: Path) -> tuple[ConformalCalibrator, Path]:
    scores, flags = offset_lists(60, np.random.default_rng(3), spread=1)  # relative and rank tie: relative
    lists = [[ScoredDocument(id=f"d{j}", score=s) for j, s in enumerate(row)] for row in scores]
    relevant = [{f"d{j}" for j, f in enumerate(row) if f} for row in flags]
    calibrator = ConformalCalibrator(fingerprint="toy").fit(lists, relevant)
    return calibrator, calibrator.save(tmp_path / "auto.json")


def test_the_artifact_records_the_choice_and_its_table(tmp_path: Path) -> None:
    calibrator, path = fitted_auto(tmp_path)
    data = json.loads(path.read_text())
    assert data["score_kind"] == calibrator.kind == "relative"
    assert data["selection"]["requested"] == "auto" and data["selection"]["chosen"] == "relative"
    assert {r["score_kind"] for r in data["selection"]["table"]} == {"similarity", "relative", "rank"}
    assert "lexical kinds not tried" in data["selection"]["reason"]  # documents without text
    loaded = ConformalCalibrator.load(path)
    assert loaded.score_kind == "auto" and loaded.kind == "relative"
    assert loaded.selection_ == calibrator.selection_
    assert loaded.threshold(0.1) == calibrator.threshold(0.1)
    origin = loaded.origin(0.1)
    assert origin["chosen_by"] == "auto" and origin["n"] == 60 and origin["target_coverage"] == pytest.approx(0.9)
    assert origin["cv_coverage"] >= 0.8 and origin["loo_coverage"] >= 0.8


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["selection"].update(chosen="similarity"),
        lambda d: d["selection"]["table"][0].update(kept_mean=0.0),
        lambda d: d.update(score_kind="similarity"),
        lambda d: d.update(hybrid_weight=0.5),
        lambda d: d.update(selection=None),
    ],
)
def test_an_edited_choice_is_refused(tmp_path: Path, edit) -> None:
    _, path = fitted_auto(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum"):
        ConformalCalibrator.load(path)


def test_a_resealed_but_inconsistent_choice_is_refused(tmp_path: Path) -> None:
    _, path = fitted_auto(tmp_path)
    data = json.loads(path.read_text())
    data["selection"]["chosen"] = "similarity"
    path.write_text(json.dumps(seal({k: v for k, v in data.items() if k != "sha256"})))
    with pytest.raises(ArtifactError, match="selection chose 'similarity' but the scores are 'relative'"):
        ConformalCalibrator.load(path)
    data.update(score_kind="hybrid", lexical="bm25-other")
    data["selection"]["chosen"] = "hybrid"
    path.write_text(json.dumps(seal({k: v for k, v in data.items() if k != "sha256"})))
    with pytest.raises(ArtifactError, match="lexical scorer"):
        ConformalCalibrator.load(path)


def test_loo_coverage_by_hand() -> None:
    calibrator = ConformalCalibrator(score_kind="similarity")
    calibrator.scores_, calibrator.n_calibration_ = np.array([1.0, 2.0, 3.0, 4.0, math.inf]), 5
    # alpha 0.2, n - 1 = 4: k = ceil(5 * 0.8) = 4 -> the largest of the other four: covers 1, 2, 3, 4 (not inf)
    assert calibrator.loo_coverage(0.2) == pytest.approx(0.8)
    # alpha 0.45: k = ceil(5 * 0.55) = 3: query 3.0 sees {1, 2, 4, inf} -> 4 >= 3 covered; 4.0 sees 3 -> missed
    assert calibrator.loo_coverage(0.45) == pytest.approx(0.6)


# -- the check at request time ----------------------------------------------------------------------------


KB = {
    "sync": "Notes sync across devices every few minutes.",
    "export": "Export notes to PDF or Markdown from the File menu.",
    "price": "Nimbus Pro costs five dollars a month.",
    "trash": "Deleted notes stay in the trash for thirty days.",
}


def kb_documents(dense: list[float]) -> list[ScoredDocument]:
    return [ScoredDocument(id=k, text=t, score=s) for (k, t), s in zip(KB.items(), dense, strict=True)]


def hybrid_calibrator() -> ConformalCalibrator:
    pairs = [("how do I export to PDF", "export"), ("what does Pro cost", "price"), ("trash days", "trash")] * 7
    lists = {q: kb_documents([0.4, 0.45, 0.42, 0.41]) for q, _ in pairs}
    return calibrate(lists.__getitem__, [(q, [r]) for q, r in pairs], score_kind="hybrid", fingerprint="kb")


def test_hybrid_check_scores_the_call_and_publishes_set_size() -> None:
    check = ConformalCheck(hybrid_calibrator(), alpha=0.2, max_kept=1)
    call = Call(query="How long do deleted notes stay in the trash?", documents=kb_documents([0.4, 0.45, 0.42, 0.41]))
    result = check.run(call)
    assert [d.id for d in result.documents or []] == ["trash"]  # the lexical match wins the cap
    values = result.values
    assert values["retrieval.kept"] == 1 and values["retrieval.total"] == 4
    assert values["retrieval.set_size"] >= 1
    assert values["retrieval.capped"] is (values["retrieval.set_size"] > 1)
    assert values["retrieval.kept_fraction"] == values["retrieval.set_size"] / 4
    assert result.evidence["score_kind"] == "hybrid"
    origin = check.origin()
    assert origin["alpha"] == 0.2 and origin["score_kind"] == "hybrid" and origin["chosen_by"] == "fixed"
    assert_conforms(
        check, SPEC, [call, Call(query="x", documents=[]), Call(query="q", documents=kb_documents([0.1] * 4))]
    )


def test_hybrid_check_without_texts_fails_closed(tmp_path: Path) -> None:
    hybrid_calibrator().save(tmp_path / "calib.json")
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: kb\nretrieval: {calibration: calib.json, alpha: 0.2, fingerprint: kb}\n"
    )
    guard = Guard.from_policy(tmp_path / "p.yaml", audit=False)
    ok = guard.retrieve("export to pdf", kb_documents([0.4, 0.45, 0.42, 0.41]))
    assert ok.action is Action.ALLOW and "export" in [d.id for d in ok.documents or []]
    bare = guard.retrieve("export to pdf", [ScoredDocument(id="export", score=0.45)])
    assert bare.action is Action.ABSTAIN
    assert "needs every document's text" in json.dumps(bare.model_dump(mode="json"))


def test_kinds_that_keep_the_top_chunk_never_report_no_evidence() -> None:
    scores, flags = offset_lists(50, np.random.default_rng(4))
    lists = [[ScoredDocument(id=f"d{j}", score=s) for j, s in enumerate(row)] for row in scores]
    relevant = [{f"d{j}" for j, f in enumerate(row) if f} for row in flags]
    for kind in sorted(KEEPS_TOP_KINDS - {"hybrid-relative"}):
        calibrator = ConformalCalibrator(score_kind=kind).fit(lists, relevant)  # type: ignore[arg-type]
        assert calibrator.keep([ScoredDocument(id="x", score=-5.0)], 0.1).tolist() == [True]
    only_absolute = ConformalCalibrator(candidates=("similarity", "hybrid")).fit(lists, relevant)
    assert only_absolute.kind == "similarity"
    assert only_absolute.keep([ScoredDocument(id="x", score=-5.0)], 0.1).tolist() == [False]


# -- the CLI ----------------------------------------------------------------------------------------------


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic toy embedder: hashed word counts (so shared words mean higher similarity)."""
    out = np.full((len(texts), 64), 0.01, dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace("?", " ").split():
            out[i, zlib.crc32(word.encode()) % 64] += 1.0
    return out


def test_cli_auto_round_trip_and_eval_prints_the_chosen_kind(tmp_path: Path, monkeypatch, capsys) -> None:
    from guardrails_uq import embeddings
    from guardrails_uq.cli import main

    monkeypatch.setattr(embeddings, "default_embedder", lambda: embeddings.CallableEmbedder(bag_of_words, "bow"))
    data = Path(__file__).resolve().parent.parent / "examples" / "data"
    common = ["--corpus", str(data / "nimbus_kb.jsonl"), "--pairs", str(data / "nimbus_pairs.jsonl")]
    out = tmp_path / "calib.json"
    assert main(["calibrate", "conformal", *common, "--top-k", "10", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    calibrator = ConformalCalibrator.load(out)
    assert calibrator.score_kind == "auto" and calibrator.kind in SCORE_KINDS
    assert calibrator.fingerprint == "bow+faiss-ip" and calibrator.depth_ == 10
    assert f"score kind {calibrator.kind} (auto: 5-fold CV x3" in printed
    assert {r["score_kind"] for r in calibrator.selection_.table} == set(SCORE_KINDS)  # type: ignore[union-attr]

    assert main(["eval", "conformal", *common, "--top-k", "10", "--calibration", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"score kind {calibrator.kind} (auto:" in printed and "a held-out rate only if" in printed

    assert main(["eval", "conformal", *common, "--splits", "10", "--score-kind", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["score_kind"] for r in report["results"]} == {*SCORE_KINDS, "auto"}
    assert report["selection"]["chosen"] in SCORE_KINDS

    assert main(["eval", "conformal", *common, "--splits", "10", "--score-kind", "auto"]) == 0
    assert "auto picks " in capsys.readouterr().out


@pytest.mark.slow
def test_auto_covers_on_the_demo_kb_with_minilm() -> None:
    """Real questions and the packaged embedder, lexical kinds included, top-10 lists as the demo retrieves."""
    from guardrails_uq.conformal.data import read_chunks, read_pairs
    from guardrails_uq.conformal.retriever import EmbeddingRetriever
    from guardrails_uq.embeddings import default_embedder

    data = Path(__file__).resolve().parent.parent / "examples" / "data"
    chunks = read_chunks(data / "nimbus_kb.jsonl")
    pairs = read_pairs(data / "nimbus_pairs.jsonl", chunks)
    retriever = EmbeddingRetriever(default_embedder(), chunks)
    scores, positions = retriever.search_many([p.query for p in pairs], 10)
    flags = [[retriever.ids[c] in p.relevant for c in row] for p, row in zip(pairs, positions, strict=True)]
    texts = [[retriever.texts[c] for c in row] for row in positions]
    data_set = RetrievedSet.from_lists(scores.tolist(), flags, queries=[p.query for p in pairs], texts=texts)
    splits = 100
    report = evaluate(data_set, [0.05, 0.1, 0.2], splits=splits)
    by = {(r["score_kind"], r["alpha"]): r for r in report["results"]}
    for alpha in (0.05, 0.1, 0.2):
        row = by[("auto", alpha)]
        assert row["coverage_mean"] >= 1 - alpha - 3 * row["coverage_std"] / math.sqrt(splits), row
    assert by[("auto", 0.1)]["kept_mean"] < by[("similarity", 0.1)]["kept_mean"]


def test_the_shipped_demo_calibration_is_auto_among_absolute_kinds() -> None:
    path = Path(__file__).resolve().parent.parent / "policies" / "calibration" / "nimbus.json"
    calibrator = ConformalCalibrator.load(path)
    assert calibrator.selection_ is not None and calibrator.kind not in KEEPS_TOP_KINDS
    assert calibrator.depth_ == 10  # the demo retrieves the top 10
