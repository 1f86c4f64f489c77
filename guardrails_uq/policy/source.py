"""YAML loading that remembers where every value came from, so errors can name file:line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import PolicyError


class _NoDatesLoader(yaml.SafeLoader):
    """SafeLoader without timestamp parsing: policy values stay plain strings/numbers."""


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
            if isinstance(key_node, yaml.ScalarNode) and k in seen:
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


def parse_yaml(text: str, file: str) -> YamlSource:
    """Parse YAML text; syntax errors and duplicate keys become PolicyError with the line."""
    try:
        root = yaml.compose(text, Loader=_NoDatesLoader)
        if root is not None:
            _check_duplicate_keys(root, file)
        data = yaml.load(text, Loader=_NoDatesLoader) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise PolicyError(
            f"invalid YAML: {exc.problem or exc.context}",
            file=file,
            line=mark.line + 1 if mark else None,
            fix="check indentation and quoting; CEL conditions containing ':' or '#' need quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"invalid YAML: {exc}", file=file) from None
    except RecursionError:
        raise PolicyError("YAML nested too deeply", file=file) from None
    return YamlSource(file=file, data=data, root=root)


def read_yaml(path: str | Path) -> YamlSource:
    """Read and parse a YAML file; a missing or unreadable file is a PolicyError naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(
            "file not found", file=path, fix="check the path (relative to the working directory)"
        ) from None
    except OSError as exc:
        raise PolicyError(f"cannot read file: {exc.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"not UTF-8 (byte {exc.start})", file=path, fix="save the file as UTF-8") from None
    return parse_yaml(text, str(path))
