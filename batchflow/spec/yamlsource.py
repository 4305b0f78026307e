"""YAML documents with the line and column of every key and value.

Pydantic reports errors by location (`("request", "prompt")`); a person needs
`file:line:column`. We compose the YAML node tree once, build plain Python data
from it, and keep a map from each location to where it was written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import SpecError

Loc = tuple[str | int, ...]

_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """One YAML document of a spec file: its data and where each part of it stands."""

    file: str
    index: int
    data: Any
    keys: dict[Loc, Mark] = field(default_factory=dict)
    values: dict[Loc, Mark] = field(default_factory=dict)
    block: set[Loc] = field(default_factory=set)  # `|` and `>` scalars: their text starts a line below

    def text_mark(self, loc: Loc, line: int = 1) -> Mark | None:
        """Where line `line` (1-based) of the string at `loc` stands in the file."""
        mark = self.values.get(tuple(loc))
        if mark is None:
            return self.mark(loc)
        if tuple(loc) in self.block:
            return Mark(mark.line + line, 1)
        return Mark(mark.line + line - 1, mark.column if line == 1 else 1)

    def mark(self, loc: Loc, *, prefer_key: bool = False) -> Mark | None:
        """The nearest known position of `loc`, walking up to its parents."""
        loc = tuple(loc)
        while True:
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            found = first.get(loc) or second.get(loc)
            if found or not loc:
                return found
            loc = loc[:-1]

    def error(self, loc: Loc, message: str, *, prefer_key: bool = False) -> SpecError:
        mark = self.mark(loc, prefer_key=prefer_key)
        return SpecError(
            message,
            file=self.file,
            line=mark.line if mark else None,
            column=mark.column if mark else None,
            field=dotted(loc) or None,
        )


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mark(m: yaml.Mark) -> Mark:
    return Mark(m.line + 1, m.column + 1)


# libyaml's parser when PyYAML was built with it: about 10 times faster on many specs.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(text: str, file: str, env: Mapping[str, str] | None = None) -> Iterator[Document]:
    """Parse every `---` document of `text`; `${VAR}` and `${VAR:-default}` read `env`."""
    env = os.environ if env is None else env
    if "\t" in text:
        # YAML forbids tabs in indentation; PyYAML's own message for it is cryptic.
        for n, line in enumerate(text.splitlines(), 1):
            indent = line[: len(line) - len(line.lstrip())]
            if "\t" in indent:
                raise SpecError(
                    "tab character in indentation; YAML indents with spaces only",
                    file=file,
                    line=n,
                    column=indent.index("\t") + 1,
                )
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = Document(file=file, index=index, data=None)
            doc.data = _build(loader, node, (), doc, env)
            index += 1
            yield doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(
            f"invalid YAML: {problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()


def _build(loader, node: yaml.Node, loc: Loc, doc: Document, env) -> Any:
    doc.values[loc] = _mark(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                raise SpecError(
                    "mapping keys must be plain strings",
                    file=doc.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise SpecError(
                    f"duplicate key {key!r}",
                    file=doc.file,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    field=dotted(loc + (key,)),
                )
            doc.keys[loc + (key,)] = _mark(key_node.start_mark)
            out[key] = _build(loader, value_node, loc + (key,), doc, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, loc + (i,), doc, env) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        doc.block.add(loc)
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        value = _interpolate(value, loc, doc, env)
    return value


def _interpolate(value: str, loc: Loc, doc: Document, env) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise doc.error(loc, f"environment variable ${{{name}}} is not set (use ${{{name}:-default}})")

    return _ENV.sub(replace, value)
