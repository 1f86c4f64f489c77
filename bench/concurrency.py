"""Concurrent checks: the demo policy's output phase with its checks at once (async path) vs one after the other.

The demo policy's Guard (real MiniLM, suffix-array provenance index, uncertainty with deferral, grounding on
the kept chunks) decides the output phase of demo answers in three ways, in interleaved rounds so that all see
the same load: ``Guard.after`` (sync, sequential, the caller's thread), ``asyncio.to_thread(Guard.after)``
(sequential in one worker) and ``Guard.aafter`` (the async path: the checks that wait on an endpoint run in
workers while the others compute in the phase's thread). Three set-ups: the demo policy as shipped (no check
waits: the async path stays sequential, since its checks hold the GIL), grounding by a judge endpoint on
127.0.0.1 (20 ms a reply), and that judge plus an app's own moderation check calling an endpoint (20 ms).
Reported: p50 latency of each, the gain (sequential async / concurrent async), and whether every Decision was
the same.

    python bench/concurrency.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

ROOT = Path(__file__).resolve().parents[1]


JUDGE_DELAY_S = 0.02


def measure(guard, context, answers, rounds: int) -> None:  # type: ignore[no-untyped-def]
    """p50 of the three paths on ``answers`` (interleaved), the gain, and whether all Decisions agreed."""
    loop = asyncio.new_event_loop()
    paths = {
        "sync (sequential)": lambda g: guard.after(g, context=context),
        "async, sequential": lambda g: loop.run_until_complete(asyncio.to_thread(guard.after, g, context=context)),
        "async (Guard.aafter)": lambda g: loop.run_until_complete(guard.aafter(g, context=context)),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    same = True
    for _ in range(2):  # warm up every path (lazy model loads, worker threads)
        for fn in paths.values():
            for generation in answers:
                fn(generation)
    for _ in range(rounds):
        for generation in answers:
            decisions = []
            for name, fn in paths.items():
                t0 = time.perf_counter()
                decision = fn(generation)
                times[name].append(time.perf_counter() - t0)
                decisions.append((decision.action, decision.rule, decision.signals))
            same &= all(d == decisions[0] for d in decisions)
    loop.close()
    checks = guard.after(answers[0], context=context).timings_ms
    print("  per check (sync, one call): " + ", ".join(f"{k} {v:.2f} ms" for k, v in checks.items() if k != "total"))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"  {name:<28} p50 {value * 1e3:8.2f} ms  ({len(times[name])} calls)")
    gain = medians["async, sequential"] / medians["async (Guard.aafter)"]
    print(f"  gain (async sequential / Guard.aafter): {gain:.2f}x; same Decisions on every call: {same}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    from guardrails_uq import Generation, Guard, Message, ScoredDocument, TokenLogprob, TopLogprob, loads_policy
    from guardrails_uq.call import Call
    from guardrails_uq.models.openai_compat import OpenAIChatModel
    from guardrails_uq.testing import ChatCompletionsServer, StaticCheck

    policy_path = ROOT / "policies" / "demo.yaml"
    guard = Guard.from_policy(policy_path, audit=False)
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "nimbus_kb.jsonl").read_text().splitlines()]
    chunks = [ScoredDocument(id=r["id"], text=r["text"], score=0.8 - 0.01 * i) for i, r in enumerate(rows[:6])]
    question = "How do I reset my password?"
    before = guard.before([Message(role="user", content=question)])
    context = guard.retrieve(question, chunks, context=before)
    answers = []
    for text in (chunks[0].text, "Nimbus Pro costs 3 dollars a year and runs only on typewriters."):
        tokens = [TokenLogprob(token=w + " ", logprob=-0.2) for w in text.split(" ")]
        answers.append(Generation(text=text, tokens=tokens))
    print(f"machine: {machine()}")
    print(
        f"demo policy as shipped (no check waits on an endpoint); output checks {[c.name for c in guard.checks['output']]}:"
    )
    measure(guard, context, answers, args.rounds)

    def judge(request: dict) -> Generation:
        time.sleep(JUDGE_DELAY_S)  # a remote judge model's latency
        return Generation(
            text="yes", tokens=[TokenLogprob(token="yes", logprob=-0.1, top=[TopLogprob(token="no", logprob=-2.4)])]
        )

    with ChatCompletionsServer(judge) as server:
        text = policy_path.read_text(encoding="utf-8").replace(
            "grounding: {calibration: calibration/grounding.json}",
            f'grounding: {{judge: {{url: "{server.base_url}", model: judge}}}}',
        )
        judged_policy = loads_policy(text, file=str(policy_path), base_dir=policy_path.parent)
        judged = Guard(judged_policy, audit=False)
        print(f"demo policy with grounding by a judge endpoint on 127.0.0.1 ({JUDGE_DELAY_S * 1e3:.0f} ms a reply):")
        measure(judged, context, answers, max(5, args.rounds // 3))
        moderation = OpenAIChatModel(server.base_url, "moderation")

        def moderate(call: Call) -> dict:
            moderation.generate([Message(role="user", content=call.generation.text)])
            return {}

        app_check = StaticCheck("moderation", "output", compute=moderate)
        both = Guard(judged_policy, checks=[*judged.checks["output"], app_check], audit=False)
        print(
            f"the same plus the app's own moderation check calling an endpoint ({JUDGE_DELAY_S * 1e3:.0f} ms a reply):"
        )
        measure(both, context, answers, max(5, args.rounds // 3))


if __name__ == "__main__":
    main()
