"""Which language a request is written in, well enough to know whether the embedder can read it.

The packaged embedder (MiniLM) was trained on English: a request in French or Russian embeds near nothing it
knows, so its harm score means little. :func:`language_of` tells the input check which texts it cannot read,
so that a policy can escalate them (``guidelines.unreadable``) instead of letting them pass on a meaningless
score. Heuristic, on purpose small and fast (~10 us for a request):

* letters of a non-Latin script making up 30% or more of the letters: the script's name (``cyrillic``,
  ``greek``, ``arabic``, ``hebrew``, ``cjk``, ``hangul``, ``devanagari``, ``thai``, ...);
* Latin letters: the language whose distinctive function words occur most (``en``, ``fr``, ``es``, ``de``,
  ``it``, ``pt``, ``nl``), English on a tie; with none at all, ``en`` unless 10% or more of the letters carry
  diacritics (``und``: some other Latin-script language).

Run it on text read as the model reads it (:func:`guardrails_uq.textnorm.read_as_model`), so that look-alike
letters count as the Latin letters they imitate.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Final


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Distinctive function words (English words left out of the others; English wins ties).
FUNCTION_WORDS: Final[dict[str, frozenset[str]]] = {
    "en": _words(
        "the and of to is are was were you your how what why when where which who can could would should "
        "this that with for from have has do does did my me i it not will about there their they"
    ),
    "fr": _words(
        "le la les des une est et du je tu vous nous pour avec dans sur pas qui que comment quoi faire mon ma "
        "mes ce cette sont être"
    ),
    "es": _words("el los las una es y del yo tú usted para por cómo qué hacer mi mis este esta estar puedo quiero sin"),
    "de": _words(
        "der das und ist ein eine ich du sie wir nicht mit für auf wie machen mein meine kann zu den dem sind"
    ),
    "it": _words("il lo gli della di è e un una io voi per come cosa fare mio mia questo questa sono posso voglio non"),
    "pt": _words("o os um uma é e da eu você para com por como que fazer meu minha este esta são posso quero não"),
    "nl": _words("de het een en ik jij je wij niet met voor op hoe wat maken mijn kan zijn van"),
}

_WORDS: Final = re.compile(r"[^\W\d_]+")
_SCRIPT_ALIASES: Final = {"HIRAGANA": "cjk", "KATAKANA": "cjk", "CJK": "cjk", "HANGUL": "hangul"}


@lru_cache(maxsize=4096)
def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    head = name.split(" ", 1)[0] if name else "unknown"
    return _SCRIPT_ALIASES.get(head, head.lower())


def language_of(text: str) -> str:
    """The language code (``en``, ``fr`` ...), script name (``cyrillic`` ...), or ``und`` of ``text``; ``en``
    for text without letters (numbers, code, blanks). See the module docstring for the rules."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"
    scripts = Counter("latin" if c.isascii() else _script(c) for c in letters)
    script, count = max(((s, n) for s, n in scripts.items() if s != "latin"), key=lambda x: x[1], default=("", 0))
    if count >= 0.3 * len(letters):
        return script
    words = [w.lower() for w in _WORDS.findall(text)]
    hits = {code: sum(w in vocabulary for w in words) for code, vocabulary in FUNCTION_WORDS.items()}
    best = max(hits, key=lambda code: (hits[code], code == "en"))
    if hits[best] == 0:
        marked = sum(not c.isascii() for c in letters)
        return "und" if marked >= 0.1 * len(letters) else "en"
    return "en" if hits["en"] >= hits[best] else best
