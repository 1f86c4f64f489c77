"""Static checks on a CEL condition before it may run: length, nesting, an evaluation budget, known functions.

The CEL engine runs whatever it can parse, and a short condition can run for minutes: the 330 characters of
``[1,..,50].map(a, [1,..,50].map(b, [1,..,50]))`` build 125,000 values and copy them quadratically (0.5 s);
with twice the literals it takes 10 s. Conditions run when a policy loads (on sample values) and on every call,
so each one is parsed here into a small syntax tree and held to fixed limits:

=========================== ==================================================================================
MAX_CONDITION_CHARS         length of the condition, checked before anything parses it
MAX_DEPTH                   nesting of the syntax tree (a chain such as ``a && b && c`` is one level)
MAX_COMPREHENSION_NESTING   all/exists/exists_one/map/filter inside the condition of another
MAX_COST                    an upper bound on evaluation steps, computed without evaluating (below)
ALLOWED_FUNCTIONS           the CEL standard functions and macros this engine implements
=========================== ==================================================================================

The cost bound is an abstract evaluation over sizes. Every value gets upper bounds on its length, its total size
(elements and characters) and the size of one element. A comprehension pays for its condition once per element
of its target; map and filter also pay for the engine's quadratic copying of their result; a comparison,
concatenation or function call pays for the size of its operands; ``matches`` pays for compiling its pattern,
which the engine does on every call, so the pattern must be a literal. A signal counts as one element: app data
is the app's to size, and at load signals are empty samples. One step is 50 to 90 ns of engine time (measured on
conditions built to sit just under the limit: nested and chained comprehensions, map bodies that build lists,
regexes), so MAX_COST is at most about 0.1 s for one condition.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..errors import PolicyError

#: Longest condition, in characters. Real conditions are under 200; an allow-list of a hundred quoted names
#: fits in about 1,500. Parsing is linear, so this also bounds compile time (~5 ms).
MAX_CONDITION_CHARS = 2048

#: Deepest syntax tree. Real conditions are 4-8 deep; the engine's own parser gives up at about 50 nested
#: brackets with a bare "syntax error", and this checker recurses once per level.
MAX_DEPTH = 32

#: Comprehensions inside the condition of another: cost grows as (list size) ** nesting, for signals too.
#: Two allows "any span whose documents are all blocked"; three is how the slow conditions were written.
MAX_COMPREHENSION_NESTING = 2

#: Upper bound on evaluation steps of one condition (at most about 0.1 s). Real conditions need under 20,000 steps
#: (a 40-name allow-list about 1,000; an SSN pattern about 13,000).
MAX_COST = 1_000_000

#: Steps to compile a regex (measured: about 0.1 ms), plus per atom after counted repetitions are expanded:
#: Unicode classes are costly to compile (\w about 0.35 ms, \d 0.06 ms), others are not (4 us).
_REGEX_BASE_COST = 2_000
_REGEX_ATOM_COST = {"heavy": 7_000, "digit": 1_200, "light": 100}

#: CEL standard functions this engine implements (each one is exercised in tests/test_policy_hostile.py).
#: Not implemented, so refused: min, max, bool, lowerAscii, split and the other cel-go extensions.
GLOBAL_FUNCTIONS = frozenset(
    {"size", "int", "uint", "double", "string", "bytes", "type", "dyn", "timestamp", "duration"}
)
_TIME_PARTS = ("FullYear", "Month", "Date", "DayOfMonth", "DayOfWeek", "DayOfYear", "Hours", "Minutes", "Seconds")
MEMBER_FUNCTIONS = frozenset(
    {"size", "contains", "startsWith", "endsWith", "matches", "getMilliseconds"} | {f"get{p}" for p in _TIME_PARTS}
)
#: Macros: ``list.all(x, condition)``; map also takes ``list.map(x, condition, value)``; ``has(a.b)``.
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
ALLOWED_FUNCTIONS = GLOBAL_FUNCTIONS | MEMBER_FUNCTIONS | MACROS | {"has"}

#: Names people reach for that CEL spells differently (or does not have).
_SYNONYMS = {
    "len": "size",
    "length": "size",
    "count": "size",
    "any": "exists",
    "every": "all",
    "float": "double",
    "str": "string",
    "in": "the `in` operator (x in list)",
}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[bB]?[rR]|[rR][bB])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n\r]*"|'[^'\n\r]*')
             |[bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
                     |"(?:\\.|[^"\\\n\r])*"|'(?:\\.|[^'\\\n\r])*'))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE,
)
_BINARY_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"||"}),
    frozenset({"&&"}),
    frozenset({"<", "<=", ">", ">=", "==", "!=", "in"}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%"}),
)
_CONSTANTS = frozenset({"true", "false", "null"})
_COUNTED = re.compile(r"\{(\d+)(,?)(\d*)\}")
_HEAVY_ATOM = re.compile(r"\\[wWpP]")
_DIGIT_ATOM = re.compile(r"\\[dD]")


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, ident, op, end
    text: str
    pos: int


@dataclass(frozen=True)
class Node:
    """One node of a condition's syntax tree.

    ``kind`` is literal, ident, select, index, list, map, call, macro or operator. ``name`` holds the identifier,
    field, function, macro or operator; ``receiver`` marks ``x.f(...)`` (children[0] is x); a macro's children
    are its target, its variable (an ident) and its condition(s); ``depth`` is the height of the subtree.
    """

    kind: str
    pos: int
    name: str = ""
    children: tuple[Node, ...] = ()
    text: str = ""
    receiver: bool = False
    depth: int = 1


@dataclass(frozen=True)
class Shape:
    """Upper bounds on a value: ``length`` (top-level elements), ``total`` (all elements and characters) and
    ``item`` (the total of any one element)."""

    length: int = 0
    total: int = 1
    item: int = 0

    def element(self) -> Shape:
        """Bounds on one element (or field) of a value of this shape."""
        return Shape(self.item, max(self.item, 1), self.item)


_SCALAR = Shape()
_SIGNAL = Shape(1, 1, 1)


@dataclass(frozen=True)
class Analysis:
    """What a condition costs and uses: estimated steps, tree depth, comprehension nesting, functions called."""

    cost: int
    depth: int
    comprehension_nesting: int
    functions: frozenset[str]


class _Problem(Exception):
    """Raised inside this module; ``analyze`` turns it into a PolicyError with a caret under ``pos``."""

    def __init__(self, problem: str, pos: int, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.pos, self.fix = problem, pos, fix


def analyze(source: str) -> Analysis:
    """Check a condition the CEL engine has already compiled against every limit above.

    Returns its Analysis; raises PolicyError (problem, fix and a caret under the offending spot in ``detail``;
    the caller adds file, line and rule). Never evaluates the condition, and runs in time linear in its length.
    """
    check_length(source)
    try:
        tree = _Parser(source).parse()
        budget = _Budget()
        cost, _ = budget.evaluate(tree, {}, 0)
        if cost > MAX_COST:
            raise _Problem(
                f"condition may take too long to evaluate: about {cost:,} steps (limit {MAX_COST:,})",
                budget.costliest.pos if budget.costliest else 0,
                "iterate over signals rather than long literal lists, and avoid building lists inside map()",
            )
    except _Problem as exc:
        raise PolicyError(exc.problem, detail=caret(source, exc.pos), fix=exc.fix) from None
    return Analysis(cost, tree.depth, budget.deepest, frozenset(_called(tree)))


def check_length(source: str) -> None:
    """PolicyError when ``source`` is longer than MAX_CONDITION_CHARS (checked before the engine parses it)."""
    if len(source) > MAX_CONDITION_CHARS:
        raise PolicyError(
            f"condition is {len(source)} characters long (limit {MAX_CONDITION_CHARS})",
            detail=caret(source, MAX_CONDITION_CHARS),
            fix="split it into several rules, or move long lists of values into an app signal",
        )


def caret(source: str, pos: int) -> str:
    """The source line holding offset ``pos`` with a caret under it, indented like CEL's own messages."""
    start = source.rfind("\n", 0, pos) + 1
    end = source.find("\n", pos)
    line = source[start : end if end >= 0 else len(source)]
    column = pos - start
    if len(line) > 100:  # show a window around the caret, not 2,000 characters
        first = max(0, column - 50)
        line, column = line[first : first + 100], column - first
    return f"    | {line}\n    | {'.' * column}^"


def _called(node: Node) -> Iterator[str]:
    if node.kind in ("call", "macro"):
        yield node.name
    for child in node.children:
        yield from _called(child)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None or match.lastgroup is None:
            raise _Problem(f"unexpected character {source[pos]!r}", pos, "check the condition's syntax")
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _make(kind: str, pos: int, children: tuple[Node, ...] = (), **fields: object) -> Node:
    """A node with its depth; a tree deeper than MAX_DEPTH is refused as soon as it is built."""
    depth = 1 + max((c.depth for c in children), default=0)
    if depth > MAX_DEPTH:
        raise _too_deep(pos)
    return Node(kind, pos, children=children, depth=depth, **fields)  # type: ignore[arg-type]


def _too_deep(pos: int) -> _Problem:
    return _Problem(
        f"condition nests more than {MAX_DEPTH} levels deep",
        pos,
        "split it into several rules or simplify it",
    )


class _Parser:
    """Recursive descent over CEL's grammar (cel-spec), for conditions the engine has already accepted."""

    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.index = 0
        self.level = 0

    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "end":
            raise self.unexpected()
        return node

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, text: str) -> _Token:
        if self.peek().text != text or self.peek().kind not in ("op", "ident"):
            raise self.unexpected(f"expected {text!r}")
        return self.take()

    def unexpected(self, what: str = "unexpected") -> _Problem:
        token = self.peek()
        shown = repr(token.text) if token.text else "the end"
        return _Problem(
            f"cannot analyse the condition: {what} at {shown}", token.pos, "simplify the condition's syntax"
        )

    def expr(self) -> Node:
        """Expr = Or ['?' Or ':' Expr]. Each nested expression counts toward MAX_DEPTH before recursing."""
        self.level += 1
        if self.level > MAX_DEPTH:
            raise _too_deep(self.peek().pos)
        try:
            node = self.binary(0)
            if self.peek().text == "?":
                pos = self.take().pos
                yes = self.binary(0)
                self.expect(":")
                node = _make("operator", pos, (node, yes, self.expr()), name="?:")
            return node
        finally:
            self.level -= 1

    def binary(self, level: int) -> Node:
        """A chain of one precedence level, kept flat: ``a && b && c`` is one node with three children."""
        if level == len(_BINARY_LEVELS):
            return self.unary()
        operands = [self.binary(level + 1)]
        names: list[str] = []
        while self.peek().kind in ("op", "ident") and self.peek().text in _BINARY_LEVELS[level]:
            names.append(self.take().text)
            operands.append(self.binary(level + 1))
        if not names:
            return operands[0]
        name = names[0] if len(set(names)) == 1 else " ".join(sorted(set(names)))
        return _make("operator", operands[0].pos, tuple(operands), name=name)

    def unary(self) -> Node:
        pos = self.peek().pos
        signs = []
        while self.peek().kind == "op" and self.peek().text in ("!", "-"):
            signs.append(self.take().text)
        node = self.member()
        return _make("operator", pos, (node,), name="unary " + "".join(signs)) if signs else node

    def member(self) -> Node:
        node = self.primary()
        while self.peek().kind == "op" and self.peek().text in (".", "[", "{"):
            token = self.take()
            if token.text == "[":
                node = _make("index", token.pos, (node, self.expr()))
                self.expect("]")
            elif token.text == "{":
                raise _Problem("message construction (Name{...}) is not supported", token.pos, "use a map: {...}")
            else:
                node = self.selection(node)
        return node

    def selection(self, target: Node) -> Node:
        """``target.name`` or ``target.name(args)`` (a member function or a macro)."""
        token = self.take()
        if token.kind != "ident":
            raise self.unexpected("expected a field name")
        if self.peek().text == "(" and self.peek().kind == "op":
            self.take()
            return _call(token, target, self.arguments(")"))
        return _make("select", token.pos, (target,), name=token.text)

    def skip_lone_comma(self, close: str) -> None:
        """The engine accepts ``[,]`` and ``{,}`` as empty literals."""
        if self.peek().text == "," and self.tokens[self.index + 1].text == close:
            self.take()

    def arguments(self, close: str) -> list[Node]:
        """Comma-separated expressions up to ``close`` (a trailing comma is allowed)."""
        self.skip_lone_comma(close)
        items: list[Node] = []
        while self.peek().text != close:
            items.append(self.expr())
            if self.peek().text != ",":
                break
            self.take()
        self.expect(close)
        return items

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("string", "number") or token.text in _CONSTANTS:
            return _make("literal", token.pos, text=token.text)
        if token.kind == "ident":
            if self.peek().text == "(" and self.peek().kind == "op":
                self.take()
                return _call(token, None, self.arguments(")"))
            return _make("ident", token.pos, name=token.text)
        if token.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        if token.text == "[":
            return _make("list", token.pos, tuple(self.arguments("]")))
        if token.text == "{":
            return _make("map", token.pos, tuple(self.entries()))
        if token.text == ".":
            raise _Problem("names with a leading '.' are not supported", token.pos, "drop the leading '.'")
        self.index -= 1
        raise self.unexpected()

    def entries(self) -> list[Node]:
        """The keys and values of a map literal, alternating."""
        self.skip_lone_comma("}")
        items: list[Node] = []
        while self.peek().text != "}":
            items.append(self.expr())
            self.expect(":")
            items.append(self.expr())
            if self.peek().text != ",":
                break
            self.take()
        self.expect("}")
        return items


def _call(token: _Token, target: Node | None, args: list[Node]) -> Node:
    """A function call or macro, checked against the allow-list."""
    name = token.text
    if target is not None and name in MACROS:
        return _macro(token, target, args)
    if target is None and name == "has":
        return _make("macro", token.pos, tuple(args), name="has")
    allowed = MEMBER_FUNCTIONS if target is not None else GLOBAL_FUNCTIONS
    if name not in allowed:
        raise _unknown_function(token, target is not None)
    children = (target, *args) if target is not None else tuple(args)
    return _make("call", token.pos, children, name=name, receiver=target is not None)


def _macro(token: _Token, target: Node, args: list[Node]) -> Node:
    arity_ok = len(args) == 2 or (token.text == "map" and len(args) == 3)
    if not arity_ok or args[0].kind != "ident":
        form = "list.map(x, value) or list.map(x, condition, value)" if token.text == "map" else ""
        raise _Problem(
            f"{token.text}() takes a variable name and a condition",
            token.pos,
            f"write it as {form or f'list.{token.text}(x, x > 0)'}",
        )
    return _make("macro", token.pos, (target, *args), name=token.text, receiver=True)


def _unknown_function(token: _Token, member: bool) -> _Problem:
    name = token.text
    if name == "has":
        hint = "has is a macro: write has(signal.field)"
    elif name in MACROS:
        hint = f"{name} is a macro: write list.{name}(x, condition)"
    elif name in GLOBAL_FUNCTIONS and member:
        hint = f"{name} is called as a function: write {name}(x)"
    elif name in MEMBER_FUNCTIONS and not member:
        hint = f"{name} is called on a value: write x.{name}(...)"
    else:
        hint = _suggestion(name)
    return _Problem(f"unknown CEL function {name!r}", token.pos, hint)


def _suggestion(name: str) -> str:
    if name in _SYNONYMS:
        return f"did you mean {_SYNONYMS[name]}?"
    by_lower = {f.lower(): f for f in ALLOWED_FUNCTIONS}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"did you mean {by_lower[close[0]]!r}?"
    return "supported: " + ", ".join(sorted(ALLOWED_FUNCTIONS))


class _Budget:
    """The abstract evaluation over Shapes that bounds a condition's cost (see the module docstring)."""

    def __init__(self) -> None:
        self.deepest = 0
        self.costliest: Node | None = None
        self._costliest_cost = -1

    def evaluate(self, node: Node, env: Mapping[str, Shape], nesting: int) -> tuple[int, Shape]:
        """Steps to evaluate ``node`` (at most) and the Shape of its value, given comprehension variables."""
        cost, shape = self._dispatch(node, env, nesting)
        costly = node.kind == "macro" or node.name == "matches"
        if costly and cost > self._costliest_cost:  # the outermost costly part: where a caret helps
            self.costliest, self._costliest_cost = node, cost
        return cost, shape

    def _dispatch(self, node: Node, env: Mapping[str, Shape], nesting: int) -> tuple[int, Shape]:
        if node.kind == "literal":
            return 1, _literal_shape(node.text)
        if node.kind == "ident":
            return 1, env.get(node.name, _SIGNAL)
        if node.kind == "macro":
            return self._macro(node, env, nesting)
        parts = [self.evaluate(child, env, nesting) for child in node.children]
        cost = 1 + sum(c for c, _ in parts)
        shapes = [s for _, s in parts]
        if node.kind in ("select", "index"):
            return cost, shapes[0].element()
        if node.kind in ("list", "map"):
            return cost, _collection(shapes, len(shapes) if node.kind == "list" else len(shapes) // 2)
        cost += sum(s.total for s in shapes)  # calls and operators read their operands
        if node.kind == "call":
            return cost + _pattern_cost(node), shapes[0] if node.name == "dyn" else _SCALAR
        return cost, _operator_shape(node.name, shapes)

    def _macro(self, node: Node, env: Mapping[str, Shape], nesting: int) -> tuple[int, Shape]:
        if node.name == "has":
            return 1 + sum(self.evaluate(c, env, nesting)[0] for c in node.children), _SCALAR
        target_cost, target = self.evaluate(node.children[0], env, nesting)
        if nesting + 1 > MAX_COMPREHENSION_NESTING:
            raise _Problem(
                f"comprehensions nest more than {MAX_COMPREHENSION_NESTING} deep",
                node.pos,
                "use `in` for membership (x in list) instead of an inner exists(), or split the rule",
            )
        self.deepest = max(self.deepest, nesting + 1)
        inner = {**env, node.children[1].name: target.element()}
        parts = [self.evaluate(child, inner, nesting + 1) for child in node.children[2:]]
        n = target.length
        cost = target_cost + n * (1 + sum(c for c, _ in parts))
        if node.name == "map":
            body = parts[-1][1]
            result = Shape(n, 1 + n * body.total, body.total)
            return cost + n * result.total, result  # each append copies the result so far
        if node.name == "filter":
            return cost + n * target.total, target
        return cost, _SCALAR


def _is_string(text: str) -> bool:
    """True when a literal's source text is a string or bytes literal (not a number, bool or null)."""
    return text[-1:] in ("'", '"')


def _literal_shape(text: str) -> Shape:
    return Shape(0, len(text), 0) if _is_string(text) else _SCALAR


def _collection(shapes: list[Shape], length: int) -> Shape:
    return Shape(length, 1 + sum(s.total for s in shapes), max((s.total for s in shapes), default=0))


def _operator_shape(name: str, shapes: list[Shape]) -> Shape:
    """``+`` concatenates (sizes add up); ``?:`` takes either branch; every other operator yields a scalar."""
    if name == "?:":
        yes, no = shapes[1], shapes[2]
        return Shape(max(yes.length, no.length), max(yes.total, no.total), max(yes.item, no.item))
    if "+" in name.split():
        return Shape(sum(s.length for s in shapes), sum(s.total for s in shapes), max(s.item for s in shapes))
    return _SCALAR


def _pattern_cost(node: Node) -> int:
    """Steps to compile the pattern of ``x.matches(pattern)`` (0 for other calls); the pattern must be a literal."""
    if node.name != "matches":
        return 0
    pattern = node.children[1] if len(node.children) > 1 else None
    if pattern is None or pattern.kind != "literal" or not _is_string(pattern.text):
        raise _Problem(
            "matches() needs a literal pattern",
            (pattern or node).pos,
            'write the regex in the rule, e.g. app.text.matches("[0-9]{3}-[0-9]{4}"): the engine compiles it '
            "on every call, and its cost must be known when the policy loads",
        )
    return _REGEX_BASE_COST + regex_cost(_unquote(pattern.text))


def _unquote(text: str) -> str:
    """The characters of a CEL string literal (escapes resolved approximately; enough to weigh a regex)."""
    body = text.lstrip("bBrR")
    quote = 3 if body[:3] in ('"""', "'''") else 1
    inner = body[quote:-quote]
    return inner if "r" in text[: len(text) - len(body)].lower() else re.sub(r"\\(.)", r"\1", inner)


def regex_cost(pattern: str) -> int:
    """Steps to compile ``pattern``: its atoms weighed by class, counted repetitions (x{n}, (..){n,m}) expanded.

    An upper bound for the engine's regex compiler, which builds every repetition out in full.
    """
    stack = [0]
    last = 0
    pos = 0
    while pos < len(pattern):
        counted = _COUNTED.match(pattern, pos)
        if counted:
            times = int(counted[3] or counted[1]) + (1 if counted[2] and not counted[3] else 0)
            stack[-1] += last * max(times - 1, 0)
            last *= times
            pos = counted.end()
        elif pattern[pos] == "(":
            stack.append(0)
            pos += 1
        elif pattern[pos] == ")" and len(stack) > 1:
            last = stack.pop()
            stack[-1] += last
            pos += 1
        else:
            end = _atom_end(pattern, pos)
            last = _atom_cost(pattern[pos:end])
            stack[-1] += last
            pos = end
    return sum(stack)


def _atom_end(pattern: str, pos: int) -> int:
    """End of the atom at ``pos``: an escape (``\\p{..}`` whole), a bracket class, or one character."""
    if pattern[pos] == "\\":
        if pattern[pos + 1 : pos + 2] in ("p", "P") and pattern[pos + 2 : pos + 3] == "{":
            close = pattern.find("}", pos)
            return close + 1 if close > 0 else len(pattern)
        return pos + 2
    if pattern[pos] == "[":
        close = pos + 1
        while close < len(pattern) and (pattern[close] != "]" or close == pos + 1):
            close += 2 if pattern[close] == "\\" else 1
        return min(close + 1, len(pattern))
    return pos + 1


def _atom_cost(atom: str) -> int:
    if _HEAVY_ATOM.search(atom):
        return _REGEX_ATOM_COST["heavy"]
    if _DIGIT_ATOM.search(atom):
        return _REGEX_ATOM_COST["digit"]
    return _REGEX_ATOM_COST["light"]
