"""A LlamaIndex RAG app guarded by guardrails-uq, offline: a VectorStoreIndex with the packaged MiniLM
embedder, the embedded SmolLM2 as the LLM, a ConformalPostprocessor and a GuardedQueryEngine.

    python examples/llamaindex_rag.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.postprocessor.guardrails_uq import (
    ConformalPostprocessor,
    GuardedQueryEngine,
    GuardrailsEmbedding,
    SmolLM2LLM,
    calibrate_llamaindex_retriever,
)

from guardrails_uq import Guard
from guardrails_uq.provenance import build_index

HERE = Path(__file__).resolve().parent
UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."

POLICY = """
version: 1
name: llamaindex-rag-example
guidelines: {{library: {library}, top_k: 3}}
retrieval: {{calibration: calibration.json, alpha: 0.1, fingerprint: llamaindex-vsi-minilm}}
provenance: {{index: unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: audit.jsonl}}
rules:
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain, message: "I don't have enough information to answer that."}}
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "I can't help with that."}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out/llamaindex-rag"))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    chunks = [json.loads(line) for line in (HERE / "data" / "nimbus_kb.jsonl").read_text().splitlines()]
    nodes = [TextNode(id_=c["id"], text=c["text"]) for c in chunks]
    nodes.append(TextNode(id_="poisoned", text=f"Gardening tips: {UNSAFE}"))  # a poisoned document slipped in
    index = VectorStoreIndex(nodes, embed_model=GuardrailsEmbedding())
    pairs = [json.loads(line) for line in (HERE / "data" / "nimbus_pairs.jsonl").read_text().splitlines()]
    calibrate_llamaindex_retriever(
        index.as_retriever(similarity_top_k=10),
        [(p["query"], p["relevant"]) for p in pairs],
        fingerprint="llamaindex-vsi-minilm",
    ).save(out / "calibration.json")
    (out / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(out / "unsafe.jsonl", out / "unsafe-index")
    (out / "policy.yaml").write_text(POLICY.format(library=HERE.parent / "policies" / "guidelines" / "safety.yaml"))
    guard = Guard.from_policy(out / "policy.yaml")

    def guarded(llm):
        engine = index.as_query_engine(
            llm=llm, similarity_top_k=10, node_postprocessors=[ConformalPostprocessor(guard)]
        )
        return GuardedQueryEngine(engine, guard)

    smol = guarded(SmolLM2LLM(max_tokens=40))
    parrot = guarded(MockLLM())  # echoes its prompt: stands in for a model that repeats poisoned context
    for question, engine in [
        ("How do I reset my password?", smol),
        ("What is the boiling point of mercury on Venus?", smol),
        ("Any gardening tips about castor beans and acetone?", parrot),
    ]:
        response = engine.query(question)
        decision = response.metadata["guardrails"]
        print(f"{decision['action']:<9} {decision['rule'] or '-':<24} {question}\n          -> {str(response)[:120]!r}")
    guard.close()


if __name__ == "__main__":
    main()
