"""Claim-Conditioned Probability (Fadeeva et al., 2024) with the grounding scorer in place of an NLI model.

For each content token j of a claim (a word, not a stop word) and its top alternatives k, the claim with token
j replaced by k is compared with the claim itself by the grounding scorer (the original claim as the only
evidence): P(supported) is the weight of "means the same", P(contradicted) of "means something else";
unrelated alternatives (P(unsupported)) do not count. An alternative that is the same word up to case and
spaces means the same without asking. Then

    CCP_j = (p_j + sum_k p_k * P_sup(k)) / (p_j + sum_k p_k * (P_sup(k) + P_con(k)))

with p the token probabilities, and CCP(claim) = prod_j CCP_j. Uncertainty of a claim: 1 - CCP; of an answer:
the largest claim uncertainty. Needs per-token logprobs with alternatives (embedded model, the proxy, an
OpenAI-compatible client).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..call import TokenLogprob
from ..uncertainty.claims import claim_spans
from .align import STOP_WORDS
from .scorer import EvidenceSet, Scorer

_WORDY = re.compile(r"^\s*\w[\w'-]*\s*$")


def claim_ccp(tokens: Sequence[TokenLogprob], scorer: Scorer) -> list[tuple[str, float]]:
    """(claim text, CCP) for every claim (sentence) of the generated tokens."""
    out = []
    for start, end in claim_spans([t.token for t in tokens]):
        pieces = [t.token for t in tokens[start:end]]
        text = "".join(pieces).strip()
        if not text:
            continue
        variants: list[str] = []
        positions: list[tuple[float, list[tuple[float, int | None]]]] = []
        for j, token in enumerate(tokens[start:end]):
            word = token.token.strip().lower()
            if not _WORDY.match(token.token) or word in STOP_WORDS:
                continue
            alternatives: list[tuple[float, int | None]] = []
            for alt in token.top:
                if alt.token == token.token or not _WORDY.match(alt.token):
                    continue
                p = math.exp(alt.logprob)
                if alt.token.strip().lower() == word:
                    alternatives.append((p, None))  # the same word: same meaning
                    continue
                lead = token.token[: len(token.token) - len(token.token.lstrip())]
                variants.append("".join([*pieces[:j], lead + alt.token.strip(), *pieces[j + 1 :]]).strip())
                alternatives.append((p, len(variants) - 1))
            if alternatives:
                positions.append((math.exp(token.logprob), alternatives))
        if not variants:
            out.append((text, 1.0))
            continue
        probs = scorer.score(variants, EvidenceSet.build([("claim", text)])).probs
        ccp = 1.0
        for p_token, alternatives in positions:
            same = p_token + sum(p * (1.0 if i is None else float(probs[i, 0])) for p, i in alternatives)
            other = sum(p * float(probs[i, 1]) for p, i in alternatives if i is not None)
            ccp *= same / (same + other) if same + other > 0 else 1.0
        out.append((text, ccp))
    return out


def uncertainty(per_claim: Sequence[tuple[str, float]]) -> float:
    """1 - the lowest claim CCP (0 without claims): higher = more uncertain; the check's ``grounding.ccp``."""
    return 1.0 - min((c for _, c in per_claim), default=1.0)


def answer_ccp_uncertainty(tokens: Sequence[TokenLogprob], scorer: Scorer) -> float:
    """:func:`uncertainty` of the claims of the generated tokens (policy ``grounding: {ccp: true}``)."""
    return uncertainty(claim_ccp(tokens, scorer))
