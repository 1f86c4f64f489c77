"""A LangChain RAG app guarded by guardrails-uq, offline: InMemoryVectorStore + packaged MiniLM embedder,
the embedded SmolLM2 as the chat model, a conformal retriever, and a policy with all four checks.

    python examples/langchain_rag.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_guardrails_uq import (
    ChatSmolLM2,
    ConformalRetriever,
    GuardedChatModel,
    GuardrailsEmbeddings,
    calibrate_retriever,
)

from guardrails_uq import Guard, GuardrailViolation
from guardrails_uq.audit import group_requests, read_audit
from guardrails_uq.provenance import build_index

HERE = Path(__file__).resolve().parent
UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."

POLICY = """
version: 1
name: langchain-rag-example
guidelines: {{library: {library}, top_k: 3}}
retrieval: {{calibration: calibration.json, alpha: 0.1, fingerprint: langchain-inmemory-minilm}}
provenance: {{index: unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: audit.jsonl}}
rules:
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain, message: "I don't have enough information to answer that."}}
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "I can't help with that."}}
"""


def build(out: Path) -> tuple[Guard, InMemoryVectorStore]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.jsonl").unlink(missing_ok=True)
    chunks = [json.loads(line) for line in (HERE / "data" / "nimbus_kb.jsonl").read_text().splitlines()]
    store = InMemoryVectorStore(GuardrailsEmbeddings())
    store.add_documents([Document(id=c["id"], page_content=c["text"]) for c in chunks])
    pairs = [json.loads(line) for line in (HERE / "data" / "nimbus_pairs.jsonl").read_text().splitlines()]
    calibrate_retriever(
        store, [(p["query"], p["relevant"]) for p in pairs], fingerprint="langchain-inmemory-minilm", k=10
    ).save(out / "calibration.json")
    (out / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(out / "unsafe.jsonl", out / "unsafe-index")
    (out / "policy.yaml").write_text(POLICY.format(library=HERE.parent / "policies" / "guidelines" / "safety.yaml"))
    return Guard.from_policy(out / "policy.yaml"), store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("out/langchain-rag"))
    args = parser.parse_args()
    guard, store = build(args.out)
    retriever = ConformalRetriever(source=store, guard=guard, k=10)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer briefly from this context:\n{context}"), ("human", "{question}")]
    )

    def rag(model):
        context = retriever | (lambda docs: "\n".join(d.page_content for d in docs))
        return (
            {"context": context, "question": RunnablePassthrough()}
            | prompt
            | GuardedChatModel(model=model, guard=guard)
        )

    smol = rag(ChatSmolLM2(max_tokens=40))
    # a stand-in for a model that has memorised unsafe text (SmolLM2 does not reliably reproduce it)
    parrot = rag(GenericFakeChatModel(messages=iter([AIMessage(content=f"Sure. {UNSAFE}")])))
    for question, chain in [
        ("How do I reset my password?", smol),
        ("Can I export my notes as PDF?", smol),
        ("How do I import notes from Evernote?", parrot),  # evidence found; the answer copies unsafe text
        ("Who won the football world cup in 1998?", smol),  # nothing in the knowledge base: no evidence
    ]:
        try:
            message = chain.invoke(question)
            answer, decision = str(message.content), message.response_metadata["guardrails"]
        except GuardrailViolation as refused:  # a phase before the model blocked the request
            answer, decision = refused.decision.message or "", refused.decision.model_dump(mode="json")
        print(f"{decision['action']:<9} {decision['rule'] or '-':<24} {question}\n          -> {answer[:120]}")
    requests = group_requests(read_audit(args.out / "audit.jsonl"))
    print(f"audit log: {len(requests)} requests, one id each:")
    for request in requests:
        print(f"  {request.request_id[:12]}  {request.action:<9} " + " > ".join(d.phase for d in request.decisions))
    guard.close()


if __name__ == "__main__":
    main()
