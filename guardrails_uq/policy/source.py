"""YAML loading that remembers where every value came from, so errors can name file:line.

Policy files come from people, and sometimes from places nobody checked, so loading is hardened before any value
is built: the text is capped in size, and one pass over the parser's events (nothing composed or expanded yet)
refuses anchors and aliases (a 400-byte "billion laughs" document expands to billions of values), tags outside
plain YAML (``!!python/object``, ``!!binary``, ...) and nesting deeper than any policy needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import PolicyError

#: Largest YAML file (bytes) read as a policy, cases file or guideline library. A large real policy (a few hundred
#: rules with messages) is under 100 KiB; 1 MiB leaves ten times that and still parses in about a second, where
#: an unbounded file (or /dev/zero) would hold `policy check` for minutes.
MAX_YAML_BYTES = 1024 * 1024

#: Deepest nesting of YAML collections. Policies nest about 4 deep (rules -> rule -> value); cases about 6.
MAX_YAML_DEPTH = 32

_PLAIN_TAGS = frozenset(
    {None, "!"} | {f"tag:yaml.org,2002:{kind}" for kind in ("str", "int", "float", "bool", "null", "seq", "map")}
)

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: 20x faster


class _NoDatesLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader without timestamp parsing: policy values stay plain strings/numbers."""


_NoDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


@dataclass(frozen=True)
class YamlSource:
    """A parsed YAML document plus its node tree for line lookups."""

    file: str
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[str | int], *, key: bool = False) -> int | None:
        """1-based line of the value at ``loc`` (or of its key with key=True); nearest ancestor if absent."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == part:
                        line = (key_node if key else value_node).start_mark.line + 1
                        node = value_node
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _check_duplicate_keys(node: yaml.Node, file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        for key_node, value_node in node.value:
            k = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping as key: the constructor refuses it
                continue
            if k in seen:
                raise PolicyError(
                    f"duplicate key {k!r} (first at line {seen[k]})",
                    file=file,
                    line=key_node.start_mark.line + 1,
                    fix="keep one of the two; YAML would silently use the last",
                )
            seen[k] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(item, file)


def _shown_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _refuse_unsafe_events(text: str, file: str) -> None:
    """Scan the parser's events before anything is composed: no anchors or aliases, no tags, bounded nesting.

    Runs on events, not nodes, so an alias bomb is refused before a single alias is followed.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_NoDatesLoader):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise PolicyError(
                "YAML anchors and aliases (&name, *name) are not allowed",
                file=file,
                line=line,
                fix="policies may not use YAML anchors/aliases; write the value out",
            )
        tag = getattr(event, "tag", None)
        if tag not in _PLAIN_TAGS:
            raise PolicyError(
                f"YAML tag {_shown_tag(str(tag))} is not allowed",
                file=file,
                line=line,
                fix="remove the tag: a policy holds plain strings, numbers, booleans, lists and mappings",
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _too_deep(file, line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(file: str, line: int | None) -> PolicyError:
    return PolicyError(
        f"YAML nested more than {MAX_YAML_DEPTH} levels deep",
        file=file,
        line=line,
        fix="flatten the structure; no policy section nests this deep",
    )


def _too_large(size: int, file: str | Path) -> PolicyError:
    return PolicyError(
        f"file too large: {size} bytes (limit {MAX_YAML_BYTES // 1024} KiB)",
        file=file,
        fix="a policy this large is almost certainly a mistake; split it or remove generated content",
    )


def _compose_and_construct(text: str, file: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for lines) and the data, from one parse of an already screened document."""
    loader = _NoDatesLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_duplicate_keys(root, file)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, file: str) -> PolicyError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    line = mark.line + 1 if mark else None
    if "nesting depth" in problem:  # libyaml's own limit, met while it scans ahead of our depth check
        return _too_deep(file, line)
    return PolicyError(
        f"invalid YAML: {problem}",
        file=file,
        line=line,
        fix="check indentation and quoting; CEL conditions containing ':' or '#' need quotes",
    )


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse YAML text; oversize input, anchors/aliases, tags, syntax errors and duplicate keys are PolicyErrors.

    At most MAX_YAML_BYTES characters and MAX_YAML_DEPTH levels of nesting are accepted.
    """
    if len(text) > MAX_YAML_BYTES:
        raise _too_large(len(text), file)
    try:
        _refuse_unsafe_events(text, file)
        root, data = _compose_and_construct(text, file)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", file=file) from None
    except UnicodeError:
        raise PolicyError("invalid YAML: text is not valid Unicode", file=file) from None
    return YamlSource(file=file, data=data, root=root)


def read_yaml(path: str | Path) -> YamlSource:
    """Read and parse a YAML file; a missing, unreadable or oversize file is a PolicyError naming it.

    Reads at most MAX_YAML_BYTES + 1 bytes, so a huge file (or a device such as /dev/zero) fails fast.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise PolicyError(
            "file not found", file=path, fix="check the path (relative to the working directory)"
        ) from None
    except OSError as exc:
        raise PolicyError(f"cannot read file: {exc.strerror}", file=path) from None
    if len(raw) > MAX_YAML_BYTES:
        raise _too_large(_size(path, len(raw)), path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 (byte {exc.start})", file=path, fix="save the file as UTF-8") from None
    return parse_yaml(text, str(path))


def _size(path: Path, read: int) -> int:
    """The file's size for messages (what was read, for devices and pipes that have none)."""
    try:
        return max(path.stat().st_size, read)
    except OSError:
        return read
