"""Text normalisation for matching, with a map back to the original text.

Every caller that compares text by content (provenance indexing and lookup, streaming, anything that
matches an answer against stored text) normalises it with :func:`normalize` or :func:`normalize_with_map`,
so that text which *looks* the same *matches* the same. Scheme ``nfkc-cf-ws-v2``, in this order:

1. Lone surrogates (U+D800..U+DFFF, e.g. from a JSON ``"\\ud83d"`` or ``surrogateescape``) become U+FFFD:
   normalising never raises.
2. Removed: format characters (category Cf: zero-width space, joiners, bidi marks and overrides, soft
   hyphen, BOM, tags), the other default-ignorable code points (variation selectors, the combining
   grapheme joiner, Mongolian selectors) and control characters (Cc), except that whitespace controls and
   characters drawn as a blank become a space (below): only what renders as nothing is removed.
3. Whitespace (``str.isspace``: tab, CR, LF, VT, FF, U+001C..U+001F, U+0085, no-break and ideographic
   spaces, line and paragraph separators) and the characters fonts draw as a blank (:func:`renders_blank`:
   Hangul fillers U+115F, U+1160, U+3164, U+FFA0, braille blank U+2800, null notehead U+1D159; and the
   format characters that are drawn, such as U+06DD ARABIC END OF AYAH) become one space; runs collapse to a
   single space.
4. NFKC, applied per *cluster*: a base character together with the combining marks that follow it
   (removed characters in between are skipped, so ``e`` U+200B U+0301 becomes ``é``). Fullwidth letters,
   ligatures (``ﬁ`` -> ``fi``), mathematical alphanumerics and circled letters become plain letters.
5. Optional, ``fold_confusables=True``: a small table of Cyrillic, Greek and Armenian letters that look
   like Latin ones (Cyrillic ``а`` -> ``a``) become those Latin letters (:data:`CONFUSABLES`).

Why per cluster: each output character must know which original characters it came from, so evidence
(span offsets, highlights) points at the text the user saw. NFKC of the whole string equals the
concatenation of NFKC of its clusters whenever no cluster composes with the one before it; a cluster
here absorbs everything that can compose backwards or reorder (category M, conjoining Hangul vowels and
finals, halfwidth kana voiced marks: computed from the Unicode data at import), so for every input the
result equals whole-string NFKC followed by steps 2-3 (tests check it on random text). The scheme
depends on Python's Unicode database version (``unicodedata.unidata_version``), recorded beside it.

Not covered: confusables outside the table (look-alikes from other scripts such as Cherokee or
mathematical operators, digits for letters such as ``0`` for ``O``), visible combining marks added on
purpose (``h̶o̶w̶`` stays different from ``how``), letters spaced apart (``h o w``), and case (callers
lowercase their tokens themselves). Removing ZWJ/ZWNJ also merges emoji sequences and some Persian or
Indic spellings; for matching that is harmless, since both sides are normalised alike.

Cost: printable ASCII without double spaces is returned as is (the map is the identity) after three
C-speed scans; other text is split into runs, and runs of characters that normalise to themselves
(accented Latin, CJK, ...) are copied in bulk, so only the unusual characters are handled one by one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = [
    "BASE64_RUN",
    "CHANNELS",
    "CONFUSABLES",
    "NORMALIZATION",
    "TAG_RUN",
    "NormalizedText",
    "Reading",
    "base64_bytes",
    "normalize",
    "normalize_with_map",
    "read_as_model",
    "scheme",
    "spell_tags",
]

#: The name of this normalisation; artifacts built on normalised text record it and refuse another.
NORMALIZATION: Final = "nfkc-cf-ws-v2"  # v2: blank-rendering separators become spaces (were removed)
#: The name of the confusables table, appended to the scheme when folding (``nfkc-cf-ws-v2+confusables-v1``).
CONFUSABLES_VERSION: Final = "confusables-v1"

#: Letters that render like Latin letters in common fonts -> those Latin letters (Cyrillic, Greek, Armenian).
CONFUSABLES: Final[dict[str, str]] = {
    # Cyrillic lowercase and uppercase
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ү": "y",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I", "Һ": "H", "Ү": "Y",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    "ο": "o", "α": "a", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "υ": "u",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q",
}  # fmt: skip
_CONFUSABLE_TABLE: Final = str.maketrans(CONFUSABLES)

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) outside category Cf, which is removed anyway.
_IGNORABLE_RANGES: Final = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF),
)  # fmt: skip
_IGNORABLE: Final = frozenset(chr(code) for low, high in _IGNORABLE_RANGES for code in range(low, high + 1))
#: Drawn as an empty space by common fonts, but not whitespace to Unicode: the Hangul fillers (default
#: ignorable, yet given a blank glyph of full or half width), the braille blank and the null notehead.
_BLANKS: Final = frozenset("\u115f\u1160\u2800\u3164\uffa0\U0001d159")
#: Format characters that are drawn (Unicode's Prepended_Concatenation_Mark: Arabic number signs, end of ayah,
#: Syriac abbreviation mark, Kaithi number signs): a visible mark, so between two words it separates them.
_DRAWN_FORMAT: Final = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)


def renders_blank(char: str) -> bool:
    """True for a character a reader sees as a gap between words: whitespace, one of :data:`_BLANKS`, or a
    drawn format character (:data:`_DRAWN_FORMAT`). Normalisation turns it into a space (never deletes it:
    the words on either side would fuse into one token)."""
    return char.isspace() or char in _BLANKS or char in _DRAWN_FORMAT


_BASE, _JOIN, _DROP, _SPACE = 0, 1, 2, 3


def _backward_joiners() -> frozenset[str]:
    """Characters outside category M whose NFKC starts with a character that composes with, or reorders
    around, the character before it: conjoining Hangul vowels and finals (and their compatibility and
    halfwidth forms), halfwidth katakana voiced marks."""
    found = set()
    for low, high in ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF), (0xFF00, 0xFFEF)):
        for code in range(low, high + 1):
            head = unicodedata.normalize("NFKC", chr(code))[:1]
            if head and (unicodedata.combining(head) or 0x1161 <= ord(head) <= 0x11C2):
                found.add(chr(code))
    return frozenset(found)


_JOINERS: Final = _backward_joiners()


def _classify(char: str) -> int:
    """How one non-ASCII-printable character is treated: base, joins the cluster before it, dropped, space."""
    if renders_blank(char):
        return _SPACE
    category = unicodedata.category(char)
    if category in ("Cf", "Cc") or char in _IGNORABLE:
        return _DROP
    if category[0] == "M" or char in _JOINERS:
        return _JOIN
    return _BASE


_kind: Final = lru_cache(maxsize=65536)(_classify)


@lru_cache(maxsize=1)
def _runs() -> re.Pattern[str]:
    """Splits text into runs: *plain* characters with single spaces inside, copied in bulk | whitespace |
    anything else, handled per character. Plain: printable ASCII and the BMP characters that normalise to
    themselves (bases, their own NFKC, not confusable), e.g. accented letters, CJK. Built on first use (~40 ms)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x80, 0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF or char in CONFUSABLES or _classify(char) != _BASE:
            continue
        if not unicodedata.is_normalized("NFKC", char):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    plain = "!-~" + "".join(f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges)
    return re.compile(rf"(?P<plain>[{plain}]+(?: [{plain}]+)*)|(?P<space>\s+)|(?P<other>[^{plain}\s]+)")


def scheme(*, fold_confusables: bool = False) -> str:
    """The name to record for text normalised with these options."""
    return f"{NORMALIZATION}+{CONFUSABLES_VERSION}" if fold_confusables else NORMALIZATION


@dataclass(frozen=True)
class NormalizedText:
    """Normalised text and, for each of its characters, the original characters it came from.

    ``starts[i]``/``ends[i]``: the original [start, end) of the cluster that produced ``text[i]`` (a
    collapsed whitespace run maps to the whole run). Both are non-decreasing."""

    original: str
    text: str
    starts: list[int] | range
    ends: list[int] | range

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [a, b) of normalised characters [start, end) (``end > start``): slicing the original
        with it gives what the user saw, invisible characters inside included, outside excluded."""
        return self.starts[start], self.ends[end - 1]

    def is_boundary(self, i: int) -> bool:
        """True when normalised position ``i`` falls between two clusters (not inside one expansion)."""
        return i <= 0 or i >= len(self.text) or self.starts[i] >= self.ends[i - 1]


def _unchanged(text: str) -> bool:
    """True for text that normalises to itself, detected cheaply: printable ASCII (controls are not
    printable; space is) without double spaces."""
    return text.isascii() and text.isprintable() and "  " not in text


def normalize(text: str, *, fold_confusables: bool = False) -> str:
    """``text`` normalised (see the module docstring); equal to ``normalize_with_map(text).text``."""
    if _unchanged(text):
        return text
    return _Normalizer(fold_confusables, want_map=False).run(text).text


def normalize_with_map(text: str, *, fold_confusables: bool = False) -> NormalizedText:
    """``text`` normalised, with the map from each normalised character back to ``text``."""
    if _unchanged(text):
        return NormalizedText(text, text, range(len(text)), range(1, len(text) + 1))
    return _Normalizer(fold_confusables, want_map=True).run(text)


class _Normalizer:
    """One pass over the text: plain runs (see :func:`_runs`) are copied in bulk, everything else per character."""

    def __init__(self, fold_confusables: bool, *, want_map: bool) -> None:
        self.fold = fold_confusables
        self.want_map = want_map
        self.out: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.space = False  # the last character written is a space
        self.pending: list[str] = []  # the open cluster: its characters and original [start, end)
        self.pending_start = self.pending_end = 0

    def run(self, text: str) -> NormalizedText:
        for match in _runs().finditer(text):
            start, end = match.span()
            if match.lastgroup == "plain":
                self._plain(match.group(), start)
            elif match.lastgroup == "space":
                self._flush()
                self._space(start, end)
            else:
                self._other(match.group(), start)
        self._flush()
        return NormalizedText(text, "".join(self.out), self.starts, self.ends)

    def _plain(self, run: str, start: int) -> None:
        """Copy all but the last character; the last stays open (a combining mark may follow)."""
        self._flush()
        if len(run) > 1:
            self.out.append(run[:-1])
            if self.want_map:
                self.starts.extend(range(start, start + len(run) - 1))
                self.ends.extend(range(start + 1, start + len(run)))
            self.space = run[-2] == " "
        self.pending = [run[-1]]
        self.pending_start, self.pending_end = start + len(run) - 1, start + len(run)

    def _other(self, run: str, start: int) -> None:
        for offset, char in enumerate(run, start):
            if "\ud800" <= char <= "\udfff":
                char = "\ufffd"
            kind = _kind(char)
            if kind == _DROP:
                continue
            if kind == _SPACE:
                self._flush()
                self._space(offset, offset + 1)
            elif kind == _JOIN and self.pending:
                self.pending.append(char)
                self.pending_end = offset + 1
            else:
                self._flush()
                self.pending = [char]
                self.pending_start, self.pending_end = offset, offset + 1

    def _space(self, start: int, end: int) -> None:
        if self.space:
            if self.want_map:
                self.ends[-1] = end
            return
        self._emit(" ", start, end)

    def _flush(self) -> None:
        if not self.pending:
            return
        cluster = "".join(self.pending)
        self.pending = []
        if not cluster.isascii():
            cluster = unicodedata.normalize("NFKC", cluster)
            if self.fold:
                cluster = cluster.translate(_CONFUSABLE_TABLE)
        for char in cluster:
            if char == " " or char.isspace():  # e.g. NFKC("´") is " " + U+0301
                self._space(self.pending_start, self.pending_end)
            else:
                self._emit(char, self.pending_start, self.pending_end)

    def _emit(self, chars: str, start: int, end: int) -> None:
        self.out.append(chars)
        self.space = chars == " "
        if self.want_map:
            self.starts.append(start)
            self.ends.append(end)


# -- reading hidden channels as a model reads them ----------------------------------------------------------------
#
# Kept apart from the normaliser above: normalize() must keep a map to the original offsets and never guess, while
# read_as_model() rewrites text into what a language model will understand from it (it may guess: "b0mb" is "bomb").

#: The hidden channels :func:`read_as_model` decodes, in the order it decodes them.
CHANNELS: Final = ("tags", "base64", "confusables", "leetspeak")

#: A run of Unicode tag characters (U+E0000..U+E007F).
TAG_RUN: Final = re.compile("[\U000e0000-\U000e007f]+")
# emoji subdivision flags (England: black flag, tags "gbeng", cancel tag): a region and a code, 3 to 7 tag letters
_FLAG: Final = re.compile(
    "\U0001f3f4[\U000e0061-\U000e007a]{2}[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,5}\U000e007f"
)
#: A run of 16 or more base64 (or base64url) characters, standing alone.
BASE64_RUN: Final = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_WORD: Final = re.compile(r"\w+")
_LEET: Final = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
                "!": "i", "|": "l"}  # fmt: skip
_LEET_TABLE: Final = str.maketrans(_LEET)
_LEET_TOKEN: Final = re.compile(r"[A-Za-z0-9@$!|]*[A-Za-z][A-Za-z0-9@$!|]*")
# 3rd, 5pm, 100mg | mp3, x86, win10 | 4x4 | @user | hex ids and digests
_NOT_LEET: Final = re.compile(r"[0-9.,]+[A-Za-z]{1,3}|[A-Za-z]+[0-9]+|\d+x\d+|@.*|(?=.*\d.*\d)[0-9a-fA-F]{6,}")
_LEET_ALONE: Final = re.compile(r"(?<![\w.,:/$@-])[013457]{1,3}(?![\w.,:/%-])")  # "1" for I, "70" for to
_ADDRESS: Final = re.compile(r"\S+@\S+\.\w+|\w+://\S+")


@dataclass(frozen=True)
class Reading:
    """``text`` as a model reads it, and the hidden channels (names from :data:`CHANNELS`) it was hidden in."""

    text: str
    channels: tuple[str, ...]


def spell_tags(run: str) -> str:
    """The ASCII a run of Unicode tag characters spells (U+E0020..U+E007E; U+E0001 and U+E007F carry nothing)."""
    return "".join(chr(ord(c) - 0xE0000) for c in run if "\U000e0020" <= c <= "\U000e007e")


def base64_bytes(run: str) -> bytes | None:
    """The bytes a base64 or base64url run decodes to (padding optional), or None when it is not base64."""
    import base64
    import binascii

    body = run.rstrip("=")
    try:
        return base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_tags(text: str, found: set[str]) -> str:
    """Unicode tag characters (U+E0020..U+E007E) spell ASCII that models read: each run becomes the text it
    spells, set apart by spaces; U+E0001 and U+E007F carry nothing. Emoji subdivision flags (a black flag,
    tag letters, a cancel tag) stay what they draw and are not a hidden channel."""
    if not any("\U000e0000" <= c <= "\U000e007f" for c in text):
        return text
    text = _FLAG.sub("\U0001f3f4", text)

    def spell(match: re.Match[str]) -> str:
        spelled = spell_tags(match.group())
        if spelled.strip():
            found.add("tags")
        return f" {spelled} "

    return TAG_RUN.sub(spell, text)


def _base64_text(run: str) -> str | None:
    """The text a base64 (or base64url) run decodes to, or None when it does not decode to readable text."""
    body = run.rstrip("=")
    if len(body) % 4 == 1 or not (re.search(r"[a-z]", body) and re.search(r"[A-Z0-9+/_-]", body)):
        return None  # hex digests, plain words and identifiers are not base64 text
    raw = base64_bytes(run)
    try:
        decoded = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        return None
    if decoded is None:
        return None
    printable = sum(c.isprintable() or c.isspace() for c in decoded)
    letters = sum(c.isalpha() for c in decoded)
    if not decoded or printable < 0.95 * len(decoded) or letters < 0.5 * len(decoded.replace(" ", "")) or letters < 3:
        return None
    return decoded


def _decode_base64(text: str, found: set[str], depth: int = 2) -> str:
    """Runs of 16+ base64 characters that decode to readable UTF-8 text are replaced by that text (nested
    encodings: up to ``depth`` rounds)."""
    for _ in range(depth):
        changed = False

        def decode(match: re.Match[str]) -> str:
            nonlocal changed
            decoded = _base64_text(match.group())
            if decoded is None:
                return match.group()
            changed = True
            found.add("base64")
            return f" {decoded} "

        text = BASE64_RUN.sub(decode, text)
        if not changed:
            break
    return text


def _fold_confusable_words(text: str, found: set[str]) -> str:
    """Words whose every non-ASCII letter is a Latin look-alike (:data:`CONFUSABLES`) become Latin words
    ("раssword" with Cyrillic "р", "а" -> "password"); words of a real other script ("привет") stay."""
    if text.isascii():
        return text

    def fold(match: re.Match[str]) -> str:
        word = match.group()
        if word.isascii():
            return word
        folded = word.translate(_CONFUSABLE_TABLE)
        if folded.isascii():
            found.add("confusables")
            return folded
        return word

    return _WORD.sub(fold, text)


def _fold_leet_words(text: str, found: set[str]) -> str:
    """Words with digits or symbols standing for letters ("b0mb", "h4ck3r", "4774ck", "$h00t") become letters.
    Left alone: numbers, numbers with a unit ("3rd", "5pm", "100mg"), names with a number ("mp3", "x86",
    "win10"), handles ("@user"), addresses, hex ids, and anything over 20 characters (keys, digests). When two
    or more words were folded the text is leetspeak: then also short words ("d0") and short runs of leet digits
    standing alone ("1" for I, "4" for a, "70" for to)."""
    if not any(c in _LEET for c in text):
        return text
    keep = [m.span() for m in _ADDRESS.finditer(text)]
    folded = 0

    def fold(match: re.Match[str], *, relaxed: bool = False) -> str:
        nonlocal folded
        word = match.group().rstrip("!|@$")  # "Hi!" ends a sentence
        tail = match.group()[len(word) :]
        leet = sum(c in _LEET for c in word)
        if not leet or len(word) > 20 or any(a <= match.start() < b for a, b in keep):
            return match.group()
        if not relaxed and (len(word) < 3 or _NOT_LEET.fullmatch(word)):
            return match.group()
        folded += 1
        return word.translate(_LEET_TABLE) + tail

    text = _LEET_TOKEN.sub(fold, text)
    if folded >= 2:
        text = _LEET_TOKEN.sub(lambda m: fold(m, relaxed=True), text)
        text = _LEET_ALONE.sub(lambda m: m.group().translate(_LEET_TABLE), text)
    if folded:
        found.add("leetspeak")
    return text


def read_as_model(text: str) -> Reading:
    """``text`` as a language model reads it: hidden channels decoded, then :func:`normalize` d.

    In order: Unicode tag characters decoded to the ASCII they spell; normalised (NFKC, invisible characters
    removed, whitespace collapsed); base64 runs that decode to readable text replaced by it (twice, for nested
    encodings; what they carried is read the same way); words written in Cyrillic/Greek/Armenian look-alikes folded to Latin; leetspeak words folded to
    letters. ``channels`` names each channel that changed the text (a policy can act on the presence of hidden
    text). Plain text comes back normalised (and stripped) with no channels. Not decoded: other encodings (rot13, hex, URL
    escapes), other languages, letters spaced apart."""
    found: set[str] = set()
    plain = normalize(_decode_tags(text, found))  # invisible characters inside a base64 run go first
    decoded = _decode_base64(plain, found)
    if "base64" in found:
        decoded = normalize(_decode_tags(decoded, found))  # what the base64 carried, read the same way
    reading = _fold_leet_words(_fold_confusable_words(decoded, found), found)
    return Reading(reading.strip(), tuple(c for c in CHANNELS if c in found))
