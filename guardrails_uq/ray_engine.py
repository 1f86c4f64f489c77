"""Ray Data pipelines for `replay --engine ray` and `calibrate conformal --engine ray`.

The same per-record functions the local engine uses run in Ray workers over ``ray.data`` datasets, in
batches; each worker loads the policy (or the embedder) once and reuses it for every batch it sees. A
local Ray is started when none is running (``ray.init(address=...)`` beforehand to use a cluster).
Requires the ``ray`` extra: ``pip install 'guardrails-uq[ray]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import GuardrailsError

_BATCH = 512


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise GuardrailsError("--engine ray needs Ray: pip install 'guardrails-uq[ray]'") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    return ray


class _Redecider:
    """A Ray Data callable class: one policy load per worker, then batches of records."""

    def __init__(self, policy_path: str, shadow: bool = False) -> None:
        from .policy import load_policy
        from .replay import recompute_checks

        self.policy = load_policy(policy_path)
        self.checks = recompute_checks(self.policy)  # the provenance index loads here, once per actor
        self.shadow = shadow

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from .replay import redecide

        out: dict[str, list[Any]] = {"id": [], "old": [], "new": [], "error": []}
        rows = zip(
            batch["id"],
            batch["phase"],
            batch["signals"],
            batch["action"],
            batch["rule"],
            batch["generated"],
            strict=True,
        )
        for record_id, phase, signals, action, rule, generated in rows:
            record = {
                "id": record_id,
                "phase": phase,
                "signals": json.loads(signals),
                "action": action,
                "rule": rule,
                "generated": generated or None,
            }
            result = redecide(self.policy, record, self.checks, shadow=self.shadow)
            out["id"].append(result["id"])
            out["old"].append(json.dumps(result["old"]))
            out["new"].append(json.dumps(result["new"]))
            out["error"].append(result["error"] or "")
        return out


def redecide_with_ray(policy_path: Path, records: list[dict[str, Any]], shadow: bool = False) -> list[dict[str, Any]]:
    """``replay.redecide`` over every record (``shadow``: every rule read as enforced), as a Ray Data pipeline
    (signals travel as JSON strings)."""
    ray = _ray()
    rows = [{**r, "signals": json.dumps(r["signals"]), "generated": r.get("generated") or ""} for r in records]
    dataset = ray.data.from_items(rows).map_batches(
        _Redecider,
        fn_constructor_args=(str(policy_path), shadow),
        batch_size=_BATCH,
        batch_format="numpy",
        concurrency=1,
    )
    return [
        {"id": row["id"], "old": json.loads(row["old"]), "new": json.loads(row["new"]), "error": row["error"] or None}
        for row in dataset.take_all()
    ]


class _Scorer:
    """Embeds calibration queries and scores them against every chunk (one index build per worker)."""

    def __init__(self, chunks: dict[str, str]) -> None:
        from .conformal.retriever import EmbeddingRetriever
        from .embeddings import default_embedder

        self.retriever = EmbeddingRetriever(default_embedder(), chunks)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        scores, positions = self.retriever.search_many(list(batch["query"]))
        ids = [json.dumps([self.retriever.ids[p] for p in row]) for row in positions]
        return {
            "query": batch["query"],
            "relevant": batch["relevant"],
            "scores": [json.dumps(s.tolist()) for s in scores],
            "ids": ids,
        }


def scored_lists_with_ray(
    chunks: dict[str, str], pairs: list[Any]
) -> list[tuple[list[tuple[str, float]], frozenset[str]]]:
    """(retrieved [(id, score)], relevant ids) per calibration pair, scored in Ray workers."""
    ray = _ray()
    rows = [{"query": p.query, "relevant": json.dumps(sorted(p.relevant))} for p in pairs]
    dataset = ray.data.from_items(rows).map_batches(
        _Scorer, fn_constructor_args=(chunks,), batch_size=_BATCH, batch_format="numpy", concurrency=1
    )
    out = []
    for row in dataset.take_all():
        ranked = list(zip(json.loads(row["ids"]), json.loads(row["scores"]), strict=True))
        out.append((ranked, frozenset(json.loads(row["relevant"]))))
    return out
