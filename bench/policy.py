"""Policy evaluation and Guard overhead.

Measures: the median time to evaluate a 20-rule policy for one call (fused CEL, the shipped path) against
two baselines run in the same process: the same 20 rules evaluated one CEL call each, and the same 20
conditions as hand-written Python. Then the Guard's overhead for a call with no checks configured, and the
peak RSS of the process. Target: < 50 µs for the 20 rules.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mb, fmt_us, machine, median_seconds, peak_rss_mb

from guardrails_uq import Guard, loads_policy
from guardrails_uq.policy.rules import nest

N_RULES = 20


def build_policy():
    rules = "\n".join(
        f'  - {{name: r{i}, at: output, when: "app.s{i % 5} > {100 + i}.0 && app.tier != \\"t{i}\\"", action: abstain}}'
        for i in range(N_RULES)
    )
    signals = "{" + ", ".join(f"app.s{i}: number" for i in range(5)) + ", app.tier: string}"
    return loads_policy(f"version: 1\nname: bench\nsignals: {signals}\nrules:\n{rules}\n")


def main() -> dict[str, float]:
    policy = build_policy()
    signals = {**{f"app.s{i}": float(i) for i in range(5)}, "app.tier": "free"}  # no rule matches: worst case
    phase = policy.phases["output"]
    assert phase.first_match(signals, None) is None

    fused = median_seconds(lambda: phase.first_match(signals, None))

    def one_by_one() -> None:
        context = nest(signals)
        for rule in phase.rules:
            rule.program.execute(context)

    per_rule = median_seconds(one_by_one)

    def python_rules() -> None:
        for i in range(N_RULES):
            if signals[f"app.s{i % 5}"] > 100 + i and signals["app.tier"] != f"t{i}":
                return

    python = median_seconds(python_rules)

    guard = Guard(policy, audit=False)
    overhead = median_seconds(lambda: guard.after("an answer", signals=signals))
    empty_guard = Guard(loads_policy("version: 1\nname: empty\n"), audit=False)
    bare = median_seconds(lambda: empty_guard.after("an answer"))

    print(f"machine: {machine()}")
    print(f"20-rule policy, fused CEL (shipped)       median {fmt_us(fused)}   target < 50 µs")
    print(
        f"  baseline: one CEL call per rule         median {fmt_us(per_rule)}   ratio fused/baseline {fused / per_rule:.2f}"
    )
    print(
        f"  baseline: hand-written Python           median {fmt_us(python)}   ratio fused/python {fused / python:.1f}"
    )
    print(f"Guard.after, no checks, 20 rules          median {fmt_us(overhead)}")
    print(f"Guard.after, no checks, no rules          median {fmt_us(bare)}")
    print(f"peak RSS: {fmt_mb(peak_rss_mb())} (one process for every row above)")
    return {"fused_s": fused, "per_rule_s": per_rule, "python_s": python, "guard_s": overhead, "bare_s": bare}


if __name__ == "__main__":
    main()
