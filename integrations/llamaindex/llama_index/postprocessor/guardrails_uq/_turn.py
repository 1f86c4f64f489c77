"""One model call of an agent under a policy: the guard's side, synchronous and free of I/O except the Guard's.

:class:`Turn` is driven by :class:`~.agent.GuardedLLM` (sync or async, streamed or not):

    start()        input phase (the request's first call), retrieval phase on new tool results; sets
                   ``blocked`` when the request is already decided (the model is then never called)
    review(...)    output phase on the model's whole message: text, reasoning and tool calls
    push/end_stream  the same for a streamed message, through a StreamGate (held back, cut on a violation)
    escalate(...)  when the verdict is escalate: the escalation target's answer, reviewed by the output phase
    result()/tail()  what the agent receives: the model's message when allowed, else the policy's text and
                   no tool calls

Tool results are retrieved evidence: each result of a tool named in ``evidence_tools`` (default: every
tool but ``handoff``) is scored against the user's question and the retrieval phase runs on every result of
the request so far; results the conformal threshold drops are withheld from the model. A tool that returns
nothing relevant is caught by the retrieval rules (``retrieval.kept == 0``), copied unsafe text by the
provenance rules when the model repeats it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, ThinkingBlock

from guardrails_uq import Action, Decision, Generation, Guard, Message, ScoredDocument
from guardrails_uq.evidence_scores import WITHHELD, RefusedResults, scores_read
from guardrails_uq.streaming import StreamGate

from ._convert import (
    checked_text,
    failed,
    metadata,
    prompt_text,
    role,
    to_messages,
    tokens_of,
    tool_call_lines,
    unreadable,
    unreadable_prompt,
)
from ._requests import AgentRequest

Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""``scorer(question, texts)``: one relevance score per text, on the scale the retrieval calibration uses."""

NOT_EVIDENCE = frozenset({"handoff"})


def _decided(decision: Decision | None) -> bool:
    return decision is not None and decision.final and decision.action is not Action.ALLOW


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _notice(message: ChatMessage) -> ChatMessage:
    """A withheld tool result: the notice, and only what pairs it with its call (an adapter sends
    ``additional_kwargs`` on, so nothing else of the result stays)."""
    pairing = {k: v for k, v in message.additional_kwargs.items() if k in ("tool_call_id", "name", "tool_name")}
    return ChatMessage(role=message.role, content=WITHHELD, additional_kwargs=pairing)


def _turn_key(message: Message) -> str:
    return f"{message.role}:{_digest(message.content)}"


def _turns(core: Sequence[Message]) -> set[str]:
    """Keys of the user and system messages of ``core`` (what the input phase has read of a request)."""
    return {_turn_key(m) for m in core if m.role in ("user", "system")}


def _call_id(message: ChatMessage) -> str:
    return str(message.additional_kwargs.get("tool_call_id") or "")


def _guideline_block(original: Sequence[Message], injected: Sequence[Message] | None) -> str | None:
    """The guideline text the input phase added to the prompt (merged into, or placed before, the first
    system message), so it can be added again to every later call of the request."""
    if injected is None:
        return None
    new = next((m.content for m in injected if m.role == "system"), None)
    old = next((m.content for m in original if m.role == "system"), None)
    if not new or new == old:
        return None
    if old and new.startswith(old):
        return new[len(old) :].lstrip("\n") or None
    return new


class AgentPolicy:
    """The Guard plus how an agent's tool results become evidence; shared by every call of a GuardedLLM."""

    def __init__(
        self,
        guard: Guard,
        *,
        scorer: Scorer | None,
        evidence_tools: Sequence[str] | None,
        stream_window: int,
        stream_mode: Literal["cut", "buffer"],
        alert_bci: float,
    ) -> None:
        self.guard = guard
        self.scorer = scorer
        self.evidence_tools = frozenset(evidence_tools) if evidence_tools is not None else None
        self.stream_window = stream_window
        self.stream_mode = stream_mode
        self.alert_bci = alert_bci
        self.judges_evidence = bool(guard.checks["retrieval"]) or any(
            rule.at == "retrieval" for rule in guard.policy.model.rules
        )
        #: tool results dropped or blocked on, withheld in every later run too (an agent's memory keeps them)
        self.refused = RefusedResults()

    def is_evidence(self, tool: str | None) -> bool:
        if self.evidence_tools is None:
            return tool not in NOT_EVIDENCE
        return tool is None or tool in self.evidence_tools  # an unknown tool counts: check rather than trust

    def score(self, question: str, texts: Sequence[str]) -> list[float]:
        if not scores_read(self.guard):
            return [0.0] * len(texts)  # no threshold to apply: nothing reads the scores
        if self.scorer is None:
            from .agent import embedding_scorer

            # the Guard's embedder: the retriever the policy's default retrieval.fingerprint names
            # (no public accessor in core yet)
            self.scorer = embedding_scorer(self.guard.embedder)
        scores = [float(s) for s in self.scorer(question, texts)]
        if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
            raise ValueError(f"the evidence scorer returned {scores!r} for {len(texts)} texts")
        return scores


class Turn:
    """One model call of ``request``. Not thread-safe: one call, one turn (an agent run calls its model
    one step at a time)."""

    def __init__(self, policy: AgentPolicy, request: AgentRequest, messages: Sequence[ChatMessage], model: str | None):
        self.policy = policy
        self.guard = policy.guard
        self.request = request
        self.messages = list(messages)
        self.model = model
        self.blocked: Decision | None = None
        self.decision: Decision | None = None
        self.history: list[ChatMessage] = self.messages
        self.prompt: list[Message] = []
        self.response: ChatResponse | None = None
        self.original: str | None = None
        self.new: list[Decision] = []
        self._gate: StreamGate | None = None
        self._shown = ""
        self._last: ChatResponse | None = None
        self._released: list[str] = []
        #: tools the agent returns the result of to the user as it is (``return_direct``) that no GuardedTool
        #: reads (set by GuardedLLM from the tools of the call): a step calling one is refused, on_error decides
        self.unread_direct: frozenset[str] = frozenset()
        #: the tool definitions the model gets with this call, as it reads them (set by GuardedLLM)
        self.tools_text = ""

    # -- before the model ---------------------------------------------------------------------------------

    def _add(self, decision: Decision) -> Decision:
        self.request.decisions.append(decision)
        self.new.append(decision)
        return decision

    def start(self) -> None:
        """Input phase (first call of the request) and retrieval phase on tool results new since the last
        call; ``blocked`` is set when the request's verdict is already not allow."""
        request = self.request
        if _decided(request.latest):
            self.blocked = request.latest
            self.prompt = to_messages(self.messages)
            return
        if request.input is None:
            odd = unreadable_prompt(self.messages)
            if odd:  # the model would read what the guard cannot: on_error decides, as for a failed check
                problem = f"the prompt has content blocks the guard cannot read: {', '.join(odd)}"
                decision = self._add(failed(self.guard, "input", "prompt", problem, request_id=request.request_id))
                if _decided(decision):
                    request.input = self.blocked = decision
                    self.prompt = to_messages(self.messages)
                    return
            core = to_messages(self.messages)
            request.question = next((m.content for m in reversed(core) if m.role == "user"), "")
            decision = self._add(self.guard.before(core, request_id=request.request_id))
            request.input = decision
            request.guidelines = _guideline_block(core, decision.messages)
            request.read_turns = _turns(core)
            if _decided(decision):
                self.blocked = decision
                self.prompt = decision.messages or core
                return
        elif self._new_turns_refused():
            return
        if self._tools_refused():
            return
        self._take_evidence()
        self.history = self._guided(self._withheld(self.messages))
        self.prompt = to_messages(self.history)

    def _new_turns_refused(self) -> bool:
        """The input phase again, on the whole conversation, when a user or system message it has not read
        appears mid-run (a ReAct agent's tool observations come back as user messages, a memory block or an
        early-stopping prompt adds a system message); True when it blocks."""
        request = self.request
        core = to_messages(self.messages)
        fresh = _turns(core) - request.read_turns
        if not fresh:
            return False
        request.read_turns |= fresh
        odd = unreadable_prompt([m for m, c in zip(self.messages, core, strict=True) if _turn_key(c) in fresh])
        if odd:
            problem = f"new messages have content blocks the guard cannot read: {', '.join(odd)}"
            decision = self._add(failed(self.guard, "input", "prompt", problem, context=request.latest))
        else:
            decision = self._add(self.guard.before(core, context=request.latest, request_id=request.request_id))
        if not _decided(decision):
            return False
        self.blocked = decision
        self.prompt = core
        return True

    def _tools_refused(self) -> bool:
        """The input phase on the tool definitions the model gets, as the proxy reads a request's ``tools``
        (once per distinct set in a request: an agent taking over brings its own); True when it blocks."""
        request, text = self.request, self.tools_text
        if not text or text in request.tools_read:
            return False
        request.tools_read.add(text)
        # logged only when it blocks: a request's log keeps one input Decision per user turn
        decision = self.guard.before([Message(role="user", content=text)], request_id=request.request_id, record=False)
        if not _decided(decision):
            return False
        self.guard.record(decision)
        self.blocked = self._add(decision)
        self.prompt = to_messages(self.messages)
        return True

    def _current_tool_results(self) -> list[tuple[str, ChatMessage]]:
        """Tool results of the current user turn, each keyed by its position, tool call id and a digest of its
        text (some models reuse call ids, and a memory that drops old turns moves results: a new result where a
        judged one stood is never mistaken for it)."""
        last_user = max((i for i, m in enumerate(self.messages) if role(m) == "user"), default=-1)
        return [
            (f"{index}:{_call_id(message)}:{_digest(prompt_text(message))}", message)
            for index, message in enumerate(self.messages)
            if index > last_user and role(message) == "tool"
        ]

    def _take_evidence(self) -> None:
        request = self.request
        fresh = [(k, m) for k, m in self._current_tool_results() if k not in request.seen_tool_results]
        if not fresh:
            return
        request.seen_tool_results.update(k for k, _ in fresh)
        odd = unreadable_prompt([m for _, m in fresh])
        if odd:
            problem = f"tool results have content blocks the guard cannot read: {', '.join(odd)}"
            decision = self._add(failed(self.guard, "retrieval", "tool-results", problem, context=request.latest))
            if _decided(decision):
                self.blocked = decision
                return
        evidence = [(k, m) for k, m in fresh if self.policy.is_evidence(request.tool_names.get(_call_id(m)))]
        if not evidence or not self.policy.judges_evidence:
            return
        texts = [prompt_text(m) for _, m in evidence]
        try:
            scores = self.policy.score(request.question, texts)
        except Exception as exc:  # unscored evidence cannot be judged: on_error decides
            problem = f"scoring tool results failed: {type(exc).__name__}: {exc}"
            decision = self._add(failed(self.guard, "retrieval", "evidence-scorer", problem, context=request.latest))
            if _decided(decision):
                self.blocked = decision
            return
        for (key, message), text, score in zip(evidence, texts, scores, strict=True):
            tool = request.tool_names.get(_call_id(message))
            request.evidence[key] = ScoredDocument(
                id=key, text=text, score=score, metadata={"tool": tool} if tool else {}
            )
        decision = self.guard.retrieve(request.question, list(request.evidence.values()), context=request.latest)
        request.retrieval = self._add(decision)
        if _decided(decision):
            self.blocked = decision
            self.policy.refused.add(texts)  # the run ends on them: a later run must not give them to the model
        elif decision.documents is not None:
            kept = {d.id for d in decision.documents}
            self.policy.refused.add(d.text for k, d in request.evidence.items() if k not in kept)

    def _withheld(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The history with tool results the retrieval phase dropped replaced by a short note: this request's,
        and any earlier turn's that this GuardedLLM's retrieval phase dropped or blocked on before (an agent's
        memory hands the raw result to the next run)."""
        current = {id(m): k for k, m in self._current_tool_results()}
        retrieval = self.request.retrieval
        kept = (
            {d.id for d in retrieval.documents} if retrieval is not None and retrieval.documents is not None else None
        )

        def hidden(message: ChatMessage) -> bool:
            if role(message) != "tool":
                return False
            key = current.get(id(message))
            if key is None:  # an earlier turn's result
                return prompt_text(message) in self.policy.refused
            return kept is not None and key in self.request.evidence and key not in kept

        return [_notice(m) if hidden(m) else m for m in messages]

    def _guided(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The history with the request's guidelines in its first system message (or a new one first)."""
        block = self.request.guidelines
        if not block:
            return messages
        for i, message in enumerate(messages):
            if role(message) == "system":
                text = message.content or ""
                merged = ChatMessage(role=message.role, content=f"{text}\n\n{block}" if text.strip() else block)
                return [*messages[:i], merged, *messages[i + 1 :]]
        return [ChatMessage(role=MessageRole.SYSTEM, content=block), *messages]

    # -- after the model ----------------------------------------------------------------------------------

    def review(self, response: ChatResponse, calls: Sequence[Any], problem: str | None = None) -> None:
        """The output phase on the model's whole message (text, reasoning, tool calls). ``problem``: why the
        tool calls could not be read (an uncheckable answer: on_error decides)."""
        self.response = response
        message = response.message
        problem = problem or self._unread_direct(calls)
        odd = unreadable(message)
        if odd or problem:
            reason = problem or f"the model's message has blocks the guard cannot read: {odd}"
            self.decision = self._add(failed(self.guard, "output", "response", reason, context=self.request.latest))
            return
        self.original = checked_text(message, calls)
        generation = Generation(
            text=self.original,
            tokens=tokens_of(response.logprobs),
            model=self.model,
            kind="tool_call" if calls else "answer",
            content=(message.content or None) if calls else None,
        )
        self.decision = self._add(self.guard.after(generation, messages=self.prompt, context=self.request.latest))
        if self.decision.action is Action.ALLOW:
            self.request.tool_names.update({str(c.tool_id): c.tool_name for c in calls})

    def _unread_direct(self, calls: Sequence[Any]) -> str | None:
        """Why the calls cannot be allowed when one names a tool in :attr:`unread_direct`, else None."""
        names = sorted({str(c.tool_name) for c in calls} & self.unread_direct)
        if not names:
            return None
        return (
            f"the model calls {', '.join(names)}, a return_direct tool whose result would reach the user "
            "unread: give the agent GuardedLLM.guard_tools(tools), which reads it"
        )

    def open_stream(self) -> None:
        self._gate = StreamGate(
            self.guard,
            self.prompt,
            context=self.request.latest,
            window=self.policy.stream_window,
            alert_bci=self.policy.alert_bci,
            mode=self.policy.stream_mode,
        )

    @property
    def last_chunk(self) -> ChatResponse | None:
        """The latest streamed chunk (its message is the whole message so far, tool calls included)."""
        return self._last

    @property
    def cut(self) -> bool:
        return self._gate is not None and self._gate.cut is not None

    def push(self, chunk: ChatResponse) -> list[ChatResponse]:
        """A streamed chunk (cumulative message, ``delta`` the new text, ``logprobs`` the delta's tokens); returns
        the chunks now safe to pass on, as text only (tool calls are passed on once the whole message passed)."""
        assert self._gate is not None
        self._last = chunk
        delta = chunk.delta or ""
        released = self._gate.push(delta, delta, tokens_of(chunk.logprobs) if chunk.logprobs else None)
        return [self._text_chunk(d) for d in released if d is not None]

    def _text_chunk(self, delta: str) -> ChatResponse:
        self._shown += delta
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self._shown), delta=delta)

    def end_stream(self, calls: Sequence[Any], problem: str | None = None) -> None:
        """End of the stream: the output phase on the whole message. The agent keeps the last chunk's
        cumulative message, not the deltas the gate saw: its text is added when it differs from them, then
        its reasoning and tool calls, so the Decision reads both what was shown and what the agent receives."""
        assert self._gate is not None
        gate = self._gate
        last = self._last
        if gate.cut is None and last is not None:
            problem = problem or self._unread_direct(calls)
            odd = unreadable(last.message)
            if odd or problem:
                reason = problem or f"the model's message has blocks the guard cannot read: {odd}"
                self.decision = self._add(failed(self.guard, "output", "response", reason, context=self.request.latest))
                return
            received = last.message.content or ""
            extra = [received] if received != gate.text else []
            extra += [b.content for b in last.message.blocks if isinstance(b, ThinkingBlock) and b.content]
            extra += tool_call_lines(calls)
            if calls:
                gate.kind, gate.content = "tool_call", received or None
            if extra:
                self._released += gate.push("\n" + "\n".join(extra), None)
        released, decision = gate.finish()
        self._released = [d for d in [*self._released, *released] if d is not None]
        self.original = gate.text
        self.response = last
        self.decision = self._add(decision)
        if decision.action is Action.ALLOW:
            self.request.tool_names.update({str(c.tool_id): c.tool_name for c in calls})

    # -- escalation -----------------------------------------------------------------------------------------

    @property
    def verdict(self) -> Decision:
        decision = self.decision or self.blocked
        assert decision is not None, "start() and review() (or end_stream()) run first"
        return decision

    @property
    def pending_escalation(self) -> bool:
        """True when the verdict is escalate and no escalation target has been asked yet."""
        decision = self.verdict
        return decision.action is Action.ESCALATE and decision.final and "escalation" not in decision.evidence

    def escalation_messages(self) -> list[ChatMessage]:
        """The conversation for an escalation model: plain text messages (tool results as user text, tool
        calls left out), with the request's guidelines."""
        plain = []
        for message in self.history:
            kind = role(message)
            if kind == "tool":
                plain.append(ChatMessage(role=MessageRole.USER, content=f"Tool result:\n{message.content or ''}"))
            elif message.content:
                plain.append(ChatMessage(role=message.role, content=message.content))
        return plain

    def escalate(self, answer: str | BaseException | None) -> None:
        """Record the escalation: ``answer`` is the escalation model's text, or its failure (on_error decides),
        or None to use the Guard's own target (the policy's ``escalation.model``)."""
        target: Any = None
        if isinstance(answer, BaseException):
            failure = answer

            def target(_messages: list[Message]) -> Generation:
                raise failure

        elif answer is not None:
            text = answer

            def target(_messages: list[Message]) -> Generation:
                return Generation(text=text)

        messages = to_messages(self.escalation_messages())
        escalated = self.guard.escalate(messages, self.verdict, original=self.original, target=target)
        self.decision = self._add(escalated)

    # -- what the agent receives ------------------------------------------------------------------------------

    def _replacement(self) -> str:
        decision = self.verdict
        return decision.answer if decision.answer is not None else (decision.message or "")

    def result(self) -> ChatResponse:
        """The response for a non-streamed call: the model's, when allowed; else the policy's text (or the
        escalation's answer) with no tool calls. ``additional_kwargs["guardrails"]`` holds the Decision."""
        decision = self.verdict
        if decision.action is Action.ALLOW and self.response is not None:
            extra = {**self.response.additional_kwargs, **metadata(decision)}
            return self.response.model_copy(update={"additional_kwargs": extra})
        text = self._replacement()
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            delta=text,
            additional_kwargs=metadata(decision),
        )

    def tail(self) -> list[ChatResponse]:
        """The last chunks of a streamed call: text still held back and the whole message (with its tool
        calls) when allowed; else the policy's text (or the escalation's answer) after what was shown."""
        out = [self._text_chunk(d) for d in self._released]
        decision = self.verdict
        if decision.action is Action.ALLOW and self._last is not None:
            extra = {**self._last.additional_kwargs, **metadata(decision)}
            out.append(self._last.model_copy(update={"delta": "", "additional_kwargs": extra}))
            return out
        text = self._replacement()
        delta = ("\n\n" if self._shown else "") + text
        self._shown += delta
        message = ChatMessage(role=MessageRole.ASSISTANT, content=self._shown)
        out.append(ChatResponse(message=message, delta=delta, additional_kwargs=metadata(decision)))
        return out
