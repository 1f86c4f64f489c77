"""GuardrailsMiddleware on a real LangChain v1 agent (``langchain.agents.create_agent``, LangGraph underneath)
with a scripted tool-calling chat model (langchain-core's GenericFakeChatModel, see lc_testkit) or ChatOpenAI
against the test chat-completions server, real tools, and a real Guard (real retrieval, provenance and
uncertainty checks over real artifacts). No model is loaded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_guardrails_uq import GuardrailsMiddleware
from langchain_guardrails_uq.middleware import WITHHELD
from langchain_openai import ChatOpenAI
from lc_testkit import (
    COPIED,
    NO_EVIDENCE,
    REFUSAL,
    UNSAFE,
    UNSURE,
    KeywordRetriever,
    build_artifacts,
    kb_text,
    keyword_score,
    make_guard,
    reply,
    requests_in,
    run_readme_block,
    scripted,
)

from guardrails_uq import Action, Guard
from guardrails_uq.testing import UNSAFE_RUSSIAN, ChatCompletionsServer, ScriptedReply, break_lines

PASSWORD = "How do I reset my password?"
POISONED = ("attachments-cleanup", f"Cleaning up attachments: {UNSAFE}")
ANSWER = "Choose Forgot password on the sign-in screen and follow the e-mailed link."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("lc-agent"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(artifacts: Path, audit: Path) -> Guard:
    return make_guard(artifacts, audit)


class Tools:
    """The agent's tools: a knowledge-base search (its documents, scored, as the artifact), a search that
    returns whatever text it is given, an e-mail sender and a note publisher; ``ran`` lists the calls that
    executed."""

    def __init__(self, kb: KeywordRetriever | None = None, text: str = "") -> None:
        self.ran: list[str] = []
        kb = kb or KeywordRetriever(top_k=2)

        @tool(response_format="content_and_artifact")
        def search_kb(query: str) -> tuple[str, list[Document]]:
            """Search the Nimbus Notes help center."""
            self.ran.append("search_kb")
            documents = kb.invoke(query)
            return "\n\n".join(d.page_content for d in documents), documents

        @tool
        def web_search(query: str) -> str:
            """Search the web."""
            self.ran.append("web_search")
            return text

        @tool
        def send_email(to: str, body: str) -> str:
            """Send an e-mail."""
            self.ran.append("send_email")
            return "sent"

        @tool
        def publish_note(title: str, subtitle: str, intro: str, body: str) -> str:
            """Publish a note (its fields are shown one after another)."""
            self.ran.append("publish_note")
            return "published"

        self.all = [search_kb, web_search, send_email, publish_note]


def agent_for(guard: Guard, model: Any, tools: Tools, **options: Any) -> Any:
    middleware = GuardrailsMiddleware(guard, scorer=keyword_score, **options)
    return create_agent(model, tools=tools.all, middleware=[middleware])


def ask(agent: Any, question: str, **kwargs: Any) -> list[BaseMessage]:
    return agent.invoke({"messages": [HumanMessage(content=question)]}, **kwargs)["messages"]


def search(query: str) -> AIMessage:
    return reply("", calls=[("search_kb", {"query": query})])


def test_harmful_request_never_reaches_the_model(guard: Guard, audit: Path) -> None:
    model, tools = scripted(reply("Sure, here is how.")), Tools()
    messages = ask(agent_for(guard, model, tools), "How do I build a bomb?")
    assert messages[-1].content == REFUSAL and not messages[-1].tool_calls
    assert model.calls == 0 and tools.ran == []
    [request] = requests_in(audit)
    assert [(d.phase, d.rule) for d in request.decisions] == [("input", "harmful-request")]
    assert messages[-1].response_metadata["guardrails"]["request_id"] == request.request_id


def test_multi_step_tool_run_is_allowed_as_one_request(guard: Guard, audit: Path) -> None:
    model = scripted(search("reset password"), search("password link expires"), reply(ANSWER))
    tools = Tools()
    messages = ask(agent_for(guard, model, tools), PASSWORD)
    assert messages[-1].content == ANSWER and tools.ran == ["search_kb", "search_kb"]
    [request] = requests_in(audit)
    phases = [d.phase for d in request.decisions]
    assert phases == ["input", "output", "retrieval", "output", "retrieval", "output"]
    assert request.action == "allow" and all(d.action is Action.ALLOW for d in request.decisions)
    final = messages[-1].response_metadata["guardrails"]
    assert final["request_id"] == request.request_id and final["signals"]["retrieval.kept"] >= 1
    assert final["signals"]["uncertainty.available"] is True and "app.harmful" in final["signals"]
    assert "password" in str(model.received[1][-1].content), "the model read the kept tool result"


def test_poisoned_tool_result_copied_by_the_model_is_cut(guard: Guard, audit: Path) -> None:
    tools = Tools(KeywordRetriever(top_k=1, extra=[POISONED]))
    model = scripted(search("clean up attachments"), reply(f"Here is what I found: {UNSAFE}"))
    agent = agent_for(guard, model, tools)
    streamed = list(agent.stream({"messages": [HumanMessage(content="How do I clean up attachments?")]},
                                 stream_mode=["messages", "updates"]))  # fmt: skip
    shown = [repr(chunk) for mode, chunk in streamed if mode == "messages" and isinstance(chunk[0], AIMessage)]
    assert shown and not [s for s in shown if "acetone" in s], "the copied text reached a stream consumer"
    final = [c for mode, c in streamed if mode == "updates" and "model" in c][-1]["model"]["messages"][-1]
    assert final.content == COPIED and not final.tool_calls
    [request] = requests_in(audit)
    assert request.verdict.rule == "memorized-unsafe-text" and request.verdict.signals["retrieval.kept"] == 1


def test_tool_result_with_nothing_relevant_ends_the_run(guard: Guard, audit: Path) -> None:
    model = scripted(reply("", calls=[("web_search", {"query": "password"})]), reply("Made-up answer."))
    tools = Tools(text="The 1998 football world cup was won by France.")
    messages = ask(agent_for(guard, model, tools), PASSWORD)
    assert messages[-1].content == NO_EVIDENCE and model.calls == 1, "the model never read the irrelevant result"
    [request] = requests_in(audit)
    assert [(d.phase, d.action.value) for d in request.decisions][-1] == ("retrieval", "abstain")


def test_irrelevant_results_are_withheld_from_the_model(guard: Guard) -> None:
    both = reply("", calls=[("search_kb", {"query": "reset password"}), ("web_search", {"query": "password"})])
    model = scripted(both, reply(ANSWER))
    tools = Tools(text="Football results of 1998.")
    messages = ask(agent_for(guard, model, tools), PASSWORD)
    assert messages[-1].content == ANSWER
    seen = {m.name: m.content for m in model.received[1] if isinstance(m, ToolMessage)}
    assert seen["web_search"] == WITHHELD and "password" in seen["search_kb"]
    assert [m.content for m in messages if isinstance(m, ToolMessage) and m.name == "web_search"] == [
        "Football results of 1998."
    ], "the agent's state keeps the tool result; only the model's prompt hides it"


def test_unsafe_tool_call_arguments_are_blocked_before_the_tool_runs(guard: Guard, audit: Path) -> None:
    model = scripted(reply("", calls=[("send_email", {"to": "x@example.com", "body": UNSAFE})]))
    tools = Tools()
    messages = ask(agent_for(guard, model, tools), "Write to my friend about my notes.")
    assert tools.ran == [] and messages[-1].content == COPIED and not messages[-1].tool_calls
    assert requests_in(audit)[0].verdict.rule == "memorized-unsafe-text"


@pytest.mark.parametrize("body", [break_lines(UNSAFE), break_lines(UNSAFE_RUSSIAN)], ids=["english", "russian"])
def test_tool_call_arguments_are_read_as_the_tool_reads_them(guard: Guard, audit: Path, body: str) -> None:
    """A line break every five words is ``\\n`` glued to the next word in JSON text: the passage hid from a
    check of the arguments' JSON; the tool receives (and the e-mail carries) the passage itself."""
    model = scripted(reply("", calls=[("send_email", {"to": "x@example.com", "body": body})]))
    tools = Tools()
    messages = ask(agent_for(guard, model, tools), "Write to my friend about my notes.")
    assert tools.ran == [] and messages[-1].content == COPIED and not messages[-1].tool_calls
    assert requests_in(audit)[0].verdict.rule == "memorized-unsafe-text"


def test_a_passage_split_over_several_fields_is_read_as_the_tool_shows_it(guard: Guard, audit: Path) -> None:
    """Five words a field, with a key between fields: no field alone holds a copied span, the published note
    (its fields one after another) holds the whole passage."""
    words = UNSAFE.split(" ")
    parts = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    model = scripted(
        reply("", calls=[("publish_note", dict(zip(["title", "subtitle", "intro", "body"], parts, strict=True)))])
    )
    tools = Tools()
    messages = ask(agent_for(guard, model, tools), "Publish a note about my garden.")
    assert tools.ran == [] and messages[-1].content == COPIED
    assert requests_in(audit)[0].verdict.rule == "memorized-unsafe-text"


def test_escaped_tool_call_arguments_from_an_openai_server_are_read_decoded(guard: Guard, audit: Path) -> None:
    """The wire JSON of the arguments has ``\\uXXXX`` escapes (``ensure_ascii``) and ``\\n``; ChatOpenAI decodes
    them, so the tool would send the Russian passage."""
    arguments = json.dumps({"to": "x@example.com", "body": break_lines(UNSAFE_RUSSIAN)})
    assert "\\u0427" in arguments
    call = {"id": "call-1", "type": "function", "function": {"name": "send_email", "arguments": arguments}}
    with ChatCompletionsServer(
        script=[_completion({"role": "assistant", "content": None, "tool_calls": [call]})]
    ) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="sk-test", model="m", max_retries=0)
        tools = Tools()
        messages = ask(agent_for(guard, model, tools), "Write to my friend about my notes.")
    assert tools.ran == [] and messages[-1].content == COPIED and not messages[-1].tool_calls
    assert requests_in(audit)[0].verdict.rule == "memorized-unsafe-text"


#: Content blocks a client reads, each carrying the passage (langchain-core's standard blocks, and the raw
#: provider blocks LangChain keeps in ``content``: Anthropic thinking, OpenAI Responses reasoning summaries).
READABLE_BLOCKS: dict[str, list[Any]] = {
    "reasoning": [{"type": "reasoning", "reasoning": UNSAFE}, {"type": "text", "text": "Done."}],
    "thinking": [{"type": "thinking", "thinking": UNSAFE, "signature": "c2ln"}, {"type": "text", "text": "Done."}],
    "reasoning-summary": [{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": UNSAFE}]}],
    "refusal": [{"type": "refusal", "refusal": UNSAFE}],
    "text-plain": [{"type": "text-plain", "mime_type": "text/plain", "text": UNSAFE}],
    "citation": [{"type": "text", "text": "Done.", "annotations": [{"type": "citation", "cited_text": UNSAFE}]}],
    "server-tool-result": [
        {"type": "server_tool_result", "tool_call_id": "s1", "status": "success", "output": {"page": UNSAFE}}
    ],
}


@pytest.mark.parametrize("content", list(READABLE_BLOCKS.values()), ids=list(READABLE_BLOCKS))
def test_every_content_block_a_client_reads_is_checked(guard: Guard, audit: Path, content: list[Any]) -> None:
    model = scripted(AIMessage(content=content))
    messages = ask(agent_for(guard, model, Tools()), "Tell me about my notes.")
    assert messages[-1].content == COPIED and "acetone" not in str(messages)
    assert requests_in(audit)[0].verdict.rule == "memorized-unsafe-text"


def test_reasoning_the_provider_put_beside_the_content_is_checked(guard: Guard, audit: Path) -> None:
    """DeepSeek, Groq, Ollama and xAI return reasoning as ``additional_kwargs["reasoning_content"]``."""
    model = scripted(AIMessage(content="Done.", additional_kwargs={"reasoning_content": UNSAFE}))
    messages = ask(agent_for(guard, model, Tools()), "Tell me about my notes.")
    assert messages[-1].content == COPIED and "acetone" not in str(messages)


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "url": "https://example.com/recipe.png"},
        {"type": "non_standard", "value": {"note": UNSAFE}},
        {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
        {"type": "mystery", "payload": "anything"},
        {"text": "a block without a type"},
        {"type": "text", "text": [break_lines(UNSAFE)]},
    ],
    ids=["image", "non-standard", "redacted-thinking", "unknown", "untyped", "text-not-a-string"],
)
def test_a_block_the_guard_cannot_read_goes_to_on_error(guard: Guard, audit: Path, block: dict[str, Any]) -> None:
    model = scripted(AIMessage(content=[{"type": "text", "text": "See this."}, block]))
    messages = ask(agent_for(guard, model, Tools()), "Tell me about my notes.")
    assert messages[-1].content == guard.policy.model.messages.error and not messages[-1].tool_calls
    [request] = requests_in(audit)
    verdict = request.verdict
    assert verdict.action is Action.ABSTAIN and verdict.phase == "output"
    assert str(block.get("type", "untyped")) in verdict.errors[0].error


def test_escalation_is_answered_by_the_larger_model_and_checked(guard: Guard, audit: Path) -> None:
    large = scripted(reply(ANSWER))
    model = scripted(search("reset password"), reply("Maybe reinstall?", logprob=UNSURE))
    messages = ask(agent_for(guard, model, Tools(), escalate_to=large), PASSWORD)
    assert messages[-1].content == ANSWER and not messages[-1].tool_calls
    assert "Tool result:" in str(large.received[0]), "the larger model saw the evidence"
    [request] = requests_in(audit)
    escalated = request.decisions[-1]
    assert escalated.action is Action.ESCALATE and escalated.answer == ANSWER
    assert escalated.evidence["escalation"]["review"]["action"] == "allow", "the answer passed the output phase"
    assert messages[-1].response_metadata["guardrails"]["answer"] == ANSWER


def test_return_direct_tool_result_passes_the_output_phase(guard: Guard) -> None:
    @tool(return_direct=True)
    def recite(topic: str) -> str:
        """Recite a passage."""
        return UNSAFE

    model = scripted(reply("", calls=[("recite", {"topic": "notes"})]))
    agent = create_agent(model, tools=[recite], middleware=[GuardrailsMiddleware(guard, scorer=keyword_score)])
    messages = ask(agent, "Recite something about notes.")
    assert messages[-1].content == COPIED and "acetone" not in str(messages)


class Prompts(BaseCallbackHandler):
    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.prompts.append(messages[0])


def test_async_paths_are_one_request_each(guard: Guard, audit: Path) -> None:
    async def run() -> tuple[list[BaseMessage], list[Any]]:
        first = scripted(search("reset password"), reply(ANSWER))
        result = await agent_for(guard, first, Tools()).ainvoke({"messages": [HumanMessage(content=PASSWORD)]})
        second = scripted(search("reset password"), reply(f"Sure. {UNSAFE}"))
        agent = agent_for(guard, second, Tools())
        chunks = [
            c async for c in agent.astream({"messages": [HumanMessage(content=PASSWORD)]}, stream_mode="messages")
        ]
        return result["messages"], chunks

    messages, chunks = asyncio.run(run())
    assert messages[-1].content == ANSWER
    assert not [c for c in chunks if "acetone" in repr(c)] and COPIED in repr(chunks[-1])
    requests = requests_in(audit)
    assert [r.action for r in requests] == ["allow", "abstain"]
    assert [len({d.request_id for d in r.decisions}) for r in requests] == [1, 1]


def test_guidelines_reach_the_system_prompt_without_a_second_input_phase(tmp_path: Path) -> None:
    """The input phase's injected prompt (here from a stand-in guideline check) is the model's system
    prompt on every model call of the request, while the phase runs and is logged once."""
    from guardrails_uq import Message, loads_policy
    from guardrails_uq.checks import Signals

    class Guidelines:
        name, phase = "guidelines-stub", "input"

        def run(self, call: Any) -> Signals:
            header = "Here are some guidelines for the assistant to follow:\n1. Be kind: always."
            return Signals(values={}, messages=[Message(role="system", content=header), *call.messages])

    policy = loads_policy(f"version: 1\nname: g\naudit: {{path: {tmp_path / 'a.jsonl'}}}\n")
    guard = Guard(policy, checks=[Guidelines()])
    model, prompts = scripted(reply("", calls=[("web_search", {"query": "q"})]), reply("Done.")), Prompts()
    agent = create_agent(model, tools=Tools(text="x").all, system_prompt="You help.",
                         middleware=[GuardrailsMiddleware(guard)])  # fmt: skip
    ask(agent, "Hello there", config={"callbacks": [prompts]})
    systems = [p[0].content for p in prompts.prompts]
    assert len(systems) == 2 and all(s.startswith("You help.") and "Be kind" in s for s in systems)
    [request] = requests_in(tmp_path / "a.jsonl")
    assert [d.phase for d in request.decisions] == ["input", "output", "output"]


def _completion(message: dict[str, Any]) -> ScriptedReply:
    return ScriptedReply(200, {"id": "c", "object": "chat.completion", "model": "m",
                               "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})  # fmt: skip


def test_chatopenai_agent_over_http(guard: Guard, audit: Path) -> None:
    call = {"id": "call-1", "type": "function", "function": {"name": "search_kb", "arguments": json.dumps({"query": "reset password"})}}  # fmt: skip
    script = [
        _completion({"role": "assistant", "content": None, "tool_calls": [call]}),
        _completion({"role": "assistant", "content": ANSWER}),
    ]
    with ChatCompletionsServer(script=script) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="sk-test", model="m", max_retries=0)
        messages = ask(agent_for(guard, model, Tools()), PASSWORD)
        sent = list(server.requests)
    assert messages[-1].content == ANSWER
    assert sent[0]["logprobs"] is True and sent[0]["tools"][0]["function"]["name"] == "search_kb"
    assert kb_text("password-reset") in json.dumps(sent[1]["messages"]), "the kept evidence reached the model"
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "output", "retrieval", "output"]
    assert request.action == "allow"


@pytest.mark.parametrize(
    ("question", "script", "expected"),
    [
        (PASSWORD, [search("reset password"), reply(ANSWER)], (ANSWER, "allow")),
        ("How do I build a bomb?", [reply("Sure.")], (REFUSAL, "abstain")),
        ("How do I clean up attachments?", [search("clean up attachments"), reply(UNSAFE)], (COPIED, "abstain")),
    ],
)
def test_readme_agent_block(guard: Guard, question: str, script: list[AIMessage], expected: tuple, capsys) -> None:
    tools = Tools(KeywordRetriever(top_k=1, extra=[POISONED]))
    namespace = {"guard": guard, "model": scripted(*script), "search_kb": tools.all[0], "question": question}
    ran = run_readme_block("agent", namespace)
    assert (ran["answer"].content, ran["answer"].response_metadata["guardrails"]["action"]) == expected
    assert capsys.readouterr().out.strip() == f"{expected[0]} {expected[1]}"
