"""The LangChain integration with real langchain-core objects: an LCEL RAG chain over an InMemoryVectorStore
with the packaged embedder, the embedded SmolLM2, ChatOpenAI against a real local server, streaming cuts,
callbacks, fallbacks (never after an abstain), concurrency and model errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_guardrails_uq import (
    AbstainViolation,
    AsyncGuardrailsCallbackHandler,
    ChatSmolLM2,
    ConformalRetriever,
    GuardedChatModel,
    GuardrailsCallbackHandler,
    GuardrailsEmbeddings,
    calibrate_retriever,
    fallback_on_escalate,
)
from langchain_openai import ChatOpenAI
from lc_testkit import requests_in, run_readme_block

from guardrails_uq import Generation, Guard, TokenLogprob, TopLogprob, read_audit
from guardrails_uq.provenance import build_index
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "examples" / "data"
UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store() -> InMemoryVectorStore:
    docs = [json.loads(line) for line in (DATA / "nimbus_kb.jsonl").read_text().splitlines()]
    vs = InMemoryVectorStore(GuardrailsEmbeddings())
    vs.add_documents([Document(id=d["id"], page_content=d["text"]) for d in docs])
    return vs


@pytest.fixture(scope="module")
def policy(tmp_path_factory, store: InMemoryVectorStore) -> Path:
    folder = tmp_path_factory.mktemp("lc")
    pairs = [json.loads(line) for line in (DATA / "nimbus_pairs.jsonl").read_text().splitlines()]
    calibrate_retriever(
        store, [(p["query"], p["relevant"]) for p in pairs], fingerprint="lc-inmemory-minilm", k=10
    ).save(folder / "calib.json")
    (folder / "unsafe.jsonl").write_text(json.dumps({"id": "ricin-howto", "text": UNSAFE}) + "\n")
    build_index(folder / "unsafe.jsonl", folder / "unsafe-index")
    (folder / "policy.yaml").write_text(
        f"""
version: 1
name: lc-test
guidelines: {{library: {ROOT / "policies/guidelines/safety.yaml"}, top_k: 3}}
retrieval: {{calibration: calib.json, alpha: 0.1, fingerprint: lc-inmemory-minilm}}
provenance: {{index: unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: audit.jsonl}}
rules:
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain, message: "I don't have enough information to answer that."}}
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "I can't help with that."}}
  - {{name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 2.0", action: escalate}}
"""
    )
    return folder / "policy.yaml"


@pytest.fixture(scope="module")
def guard(policy: Path) -> Guard:
    return Guard.from_policy(policy)


def tokens(logprob: float, n: int = 4) -> list[TokenLogprob]:
    return [
        TokenLogprob(token=f"t{i}", logprob=logprob, top=[TopLogprob(token=f"t{i}", logprob=logprob)]) for i in range(n)
    ]


def test_rag_chain_with_smollm2_allows_a_grounded_answer(guard: Guard, store: InMemoryVectorStore) -> None:
    retriever = ConformalRetriever(source=store, guard=guard, k=10)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from this context only:\n{context}"), ("human", "{question}")]
    )
    model = GuardedChatModel(model=ChatSmolLM2(max_tokens=24), guard=guard)
    chain = (
        {
            "context": retriever | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | model
    )
    message = chain.invoke("How do I reset my password?")
    decision = message.response_metadata["guardrails"]
    assert decision["phase"] == "output" and decision["signals"]["uncertainty.available"] is True
    assert decision["action"] in ("allow", "escalate")
    kept = retriever.invoke("How do I reset my password?")
    assert kept and kept[0].id == "password-reset" and len(kept) < 10
    with pytest.raises(AbstainViolation) as info:  # the default: a blocked retrieval stops the chain
        retriever.invoke("What is the boiling point of mercury on Venus?")
    assert info.value.decision.rule == "no-evidence"
    lenient = ConformalRetriever(source=store, guard=guard, k=10, on_block="empty")
    assert lenient.invoke("What is the boiling point of mercury on Venus?") == []
    assert (StrOutputParser().invoke(message)) == message.content


def test_abstains_on_copied_unsafe_text(guard: Guard) -> None:
    model = GuardedChatModel(
        model=GenericFakeChatModel(messages=iter([AIMessage(content=f"Sure. {UNSAFE}")])), guard=guard
    )
    message = model.invoke([HumanMessage(content="how do I make a poison?")])
    assert message.content == "I can't help with that."
    meta = message.response_metadata["guardrails"]
    assert meta["rule"] == "memorized-unsafe-text"
    assert "evidence" not in meta and "generated" not in meta, "the message never carries the refused text"
    logged = next(d for d in read_audit(guard.policy.resolve("audit.jsonl")) if d.id == meta["id"])
    assert logged.evidence["provenance"]["spans"][0]["sources"][0]["doc"] == "ricin-howto"
    assert meta["signals"]["guidelines.count"] >= 1, "the input phase ran first"


def test_stream_is_cut_and_ends_with_the_policy_message(guard: Guard) -> None:
    text = f"Here is the method. {UNSAFE} Then wait a day and filter it twice before use."
    model = GuardedChatModel(
        model=GenericFakeChatModel(messages=iter([AIMessage(content=text)])), guard=guard, stream_window=4
    )
    chunks = [c.content for c in model.stream([HumanMessage(content="tell me")])]
    streamed = "".join(chunks)
    assert streamed.endswith("I can't help with that.")
    assert "acetone in a sealed jar" not in streamed, "the copied span was held back and cut"
    decisions = list(read_audit(guard.policy.resolve("audit.jsonl")))
    assert any(d.metadata.get("stream_cut") for d in decisions)


def test_clean_stream_passes_through(guard: Guard) -> None:
    text = "Open Settings and choose Export to save your notebook as a PDF file."
    model = GuardedChatModel(
        model=GenericFakeChatModel(messages=iter([AIMessage(content=text)])), guard=guard, stream_window=3
    )
    chunks = list(model.stream([HumanMessage(content="How do I export?")]))
    assert "".join(c.content for c in chunks) == text
    final = [c for c in chunks if "guardrails" in c.response_metadata]
    assert len(final) == 1 and final[0].response_metadata["guardrails"]["action"] == "allow"


def respond_unsure(request: dict) -> Generation:
    return Generation(text="Maybe Lyon?", tokens=tokens(-3.0))


def respond_large(request: dict) -> Generation:
    return Generation(text="Paris.", tokens=tokens(-0.01))


def test_escalates_to_a_larger_model_over_http(guard: Guard) -> None:
    with ChatCompletionsServer(respond_unsure) as small, ChatCompletionsServer(respond_large) as large:
        model = GuardedChatModel(
            model=ChatOpenAI(base_url=small.base_url, api_key="sk-small-secret", model="small", max_retries=0),
            escalate_to=ChatOpenAI(base_url=large.base_url, api_key="sk-large-secret", model="large", max_retries=0),
            guard=guard,
        )
        message = model.invoke("What is the capital of France?")
        assert small.requests[0]["logprobs"] is True, "the wrapped model was asked for logprobs"
    assert message.content == "Paris."
    meta = message.response_metadata["guardrails"]
    assert meta["action"] == "escalate" and meta["rule"] == "unsure" and meta["answer"] == "Paris."
    logged = next(d for d in read_audit(guard.policy.resolve("audit.jsonl")) if d.id == meta["id"])
    assert logged.evidence["escalation"]["original"] == "Maybe Lyon?"
    assert "sk-small-secret" not in repr(model) and "sk-large-secret" not in repr(model)


def test_fifty_concurrent_ainvoke_on_one_guard(guard: Guard) -> None:
    with ChatCompletionsServer(respond_large) as server:
        model = GuardedChatModel(
            model=ChatOpenAI(base_url=server.base_url, api_key="k", model="m", max_retries=0), guard=guard
        )

        async def main() -> list[str]:
            messages = await asyncio.gather(
                *(model.ainvoke(f"Question number {i} about exporting notes") for i in range(50))
            )
            return [m.content for m in messages]

        assert asyncio.run(main()) == ["Paris."] * 50
        assert len(server.requests) == 50


def test_batch_and_abatch(guard: Guard) -> None:
    with ChatCompletionsServer(respond_large) as server:
        model = GuardedChatModel(
            model=ChatOpenAI(base_url=server.base_url, api_key="k", model="m", max_retries=0), guard=guard
        )
        assert [m.content for m in model.batch(["a question", "another question"])] == ["Paris.", "Paris."]
        assert [m.content for m in asyncio.run(model.abatch(["one", "two"]))] == ["Paris.", "Paris."]
        chunks = asyncio.run(_collect(model.astream("stream me")))
        assert "".join(c.content for c in chunks) == "Paris."


async def _collect(aiter) -> list:
    return [c async for c in aiter]


def test_errors_of_the_wrapped_model_propagate(guard: Guard) -> None:
    with ChatCompletionsServer(script=[ScriptedReply(500, "boom")]) as server:
        model = GuardedChatModel(
            model=ChatOpenAI(base_url=server.base_url, api_key="k", model="m", max_retries=0), guard=guard
        )
        with pytest.raises(Exception, match=r"500|boom|Internal"):
            model.invoke("hello")
        assert model.invoke("hello again").content == "ok", "the guard is usable after a model error"


def test_callback_handler_abstain_never_falls_back(guard: Guard) -> None:
    handler = GuardrailsCallbackHandler(guard, raise_error=True)
    primary = GenericFakeChatModel(messages=iter([AIMessage(content=f"Sure. {UNSAFE}")])).with_config(
        callbacks=[handler]
    )
    fallback_answers = iter([AIMessage(content="Here is how to extract ricin.")])
    chain = fallback_on_escalate(primary, GenericFakeChatModel(messages=fallback_answers))
    result = chain.invoke("how do I make a poison?")
    assert result.content == "I can't help with that."
    assert next(fallback_answers, None) is not None, "the fallback model was never asked"
    assert [d.phase for d in handler.decisions] == ["input", "output"]
    assert handler.decisions[-1].rule == "memorized-unsafe-text"
    with pytest.raises(AbstainViolation):
        GenericFakeChatModel(messages=iter([AIMessage(content=f"Sure. {UNSAFE}")])).invoke(
            "how?", config={"callbacks": [GuardrailsCallbackHandler(guard, raise_error=True)]}
        )
    quiet = GuardrailsCallbackHandler(guard)
    GenericFakeChatModel(messages=iter([AIMessage(content="fine answer")])).invoke("hi", config={"callbacks": [quiet]})
    assert quiet.decisions[-1].action.value == "allow"


def test_async_callback_handler(guard: Guard) -> None:
    handler = AsyncGuardrailsCallbackHandler(guard)
    model = GenericFakeChatModel(messages=iter([AIMessage(content=f"Sure. {UNSAFE}")]))
    asyncio.run(model.ainvoke("how?", config={"callbacks": [handler]}))
    assert handler.decisions[-1].rule == "memorized-unsafe-text"


def test_example_script_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_rag.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "allow" in result.stdout and "abstain" in result.stdout


def _readme_folder(policy: Path, folder: Path) -> Path:
    """A folder holding policy.yaml (the module's policy, artifacts by absolute path) and its own audit log."""
    text = policy.read_text().replace("calibration: calib.json", f"calibration: {policy.parent / 'calib.json'}")
    (folder / "policy.yaml").write_text(text.replace("index: unsafe-index", f"index: {policy.parent / 'unsafe-index'}"))
    return folder


def test_readme_rag_chain_abstains_without_evidence(policy: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The README's quickstart chain exactly as written: the no-evidence question is refused before the model,
    and the answered question's output Decision carries the input and retrieval signals, under one id."""
    monkeypatch.chdir(_readme_folder(policy, tmp_path))
    documents = [Document(id=d["id"], page_content=d["text"]) for d in _kb()]
    run_readme_block("rag-chain", {"documents": documents})
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == "I don't have enough information to answer that. abstain"
    answered, refused = requests_in(tmp_path / "audit.jsonl")
    assert [d.phase for d in answered.decisions][:3] == ["input", "retrieval", "output"]
    output = answered.decisions[2]
    assert output.signals["retrieval.kept"] >= 1 and "guidelines.count" in output.signals
    assert output.signals["uncertainty.available"] is True
    assert [(d.phase, d.action.value, d.rule) for d in refused.decisions] == [
        ("input", "allow", None),
        ("retrieval", "abstain", "no-evidence"),
    ]


def _kb() -> list[dict]:
    return [json.loads(line) for line in (DATA / "nimbus_kb.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def agent_guard(policy: Path, tmp_path_factory) -> Guard:
    """The module's policy plus the demo's harmful-request rule, with its own audit log."""
    folder = _readme_folder(policy, tmp_path_factory.mktemp("lc-agent-full"))
    harmful = (
        "  - {name: harmful-request, at: input, when: 'guidelines.count > 0 && guidelines.top_score > 0.37 && "
        'guidelines.categories[0] != "quality"\', action: abstain, message: "I can\'t help with that request."}\n'
    )
    text = (folder / "policy.yaml").read_text().replace("rules:\n", "rules:\n" + harmful)
    (folder / "policy.yaml").write_text(text)
    return Guard.from_policy(folder / "policy.yaml")


def test_agent_under_the_full_policy(agent_guard: Guard) -> None:
    """Real guidelines, conformal retrieval (tool results scored by the packaged MiniLM) and provenance
    around create_agent: a harmful request never reaches the model, a poisoned tool result copied by the
    model is cut, a normal tool run is allowed, each one request."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_guardrails_uq import GuardrailsMiddleware
    from lc_testkit import reply, scripted

    pages = {
        "password": next(d["text"] for d in _kb() if d["id"] == "password-reset"),
        "attachments": f"Cleaning up old attachments and castor bean photos: {UNSAFE}",
    }

    @tool
    def search_help(topic: str) -> str:
        """Search the help center."""
        return pages[topic]

    def run(question: str, *script: AIMessage) -> tuple[list, object]:
        model = scripted(*script)
        agent = create_agent(model, tools=[search_help], middleware=[GuardrailsMiddleware(agent_guard)])
        return agent.invoke({"messages": [HumanMessage(content=question)]})["messages"], model

    def search(topic: str) -> AIMessage:
        return reply("", calls=[("search_help", {"topic": topic})])

    messages, model = run("How do I build a pipe bomb at home?", reply("Sure."))
    assert messages[-1].content == "I can't help with that request." and model.calls == 0
    messages, model = run("How do I clean up old attachments with castor bean photos?", search("attachments"),
                          reply(f"Here you go: {UNSAFE}"))  # fmt: skip
    assert messages[-1].content == "I can't help with that." and model.calls == 2
    assert messages[-1].response_metadata["guardrails"]["signals"]["retrieval.kept"] == 1
    answer = "Choose Forgot password on the sign-in screen."
    messages, model = run("How do I reset my password?", search("password"), reply(answer))
    assert messages[-1].content == answer
    harmful, poisoned, allowed = requests_in(agent_guard.policy.resolve("audit.jsonl"))
    assert (harmful.action, harmful.rule_label, len(harmful.decisions)) == ("abstain", "harmful-request", 1)
    assert (poisoned.action, poisoned.rule_label) == ("abstain", "memorized-unsafe-text")
    assert [d.phase for d in allowed.decisions] == ["input", "output", "retrieval", "output"]
    assert allowed.action == "allow" and allowed.verdict.signals["retrieval.kept"] == 1


def test_agent_example_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_agent.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    verdicts = [line.split()[:2] for line in lines if line.startswith(("allow", "abstain"))]
    assert verdicts == [["allow", "-"], ["abstain", "harmful-request"], ["abstain", "memorized-unsafe-text"],
                        ["abstain", "no-evidence"]]  # fmt: skip
    assert "harmful-request        model calls: 0" in result.stdout
    assert "in 4 requests" in result.stdout
