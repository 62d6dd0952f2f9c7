"""A custom tool's JSON schema from its Python source, read with `ast` alone.

The CLI and the worker never import or run a user's code: the signature's annotations and the
Google-style docstring (a summary, then `Args:` with one `name (type): text` line per argument,
Letta's convention) say everything the model needs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

AGENT_STATE_PARAMETER = "agent_state"
"""A parameter of this name gets a read-only view of the agent instead of a model argument."""
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_ARRAYS = {"list", "List", "tuple", "Tuple", "set", "Set", "Sequence"}
_OBJECTS = {"dict", "Dict", "Mapping"}


class ToolSourceError(ValueError):
    """The source cannot become a tool; the message is one line for the user."""


@dataclass(frozen=True)
class ParsedTool:
    function: str
    description: str
    json_schema: dict[str, Any]
    uses_agent_state: bool


def parse_tool_source(source: str, name: str | None = None) -> ParsedTool:
    """The tool defined by `source`: its one top-level function, or the one called `name`."""
    try:
        module = ast.parse(source)
    except SyntaxError as err:
        raise ToolSourceError(f"the file does not parse: {err.msg} (line {err.lineno})") from err
    functions = [node for node in module.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        raise ToolSourceError("the file defines no top-level function")
    function = _pick(functions, name)
    if isinstance(function, ast.AsyncFunctionDef):
        raise ToolSourceError(f"function {function.name} is async; a tool is a plain function")
    summary, documented = _docstring(ast.get_docstring(function) or "")
    properties, required = _parameters(function, documented)
    schema = {"type": "object", "properties": properties, "required": required}
    uses_state = any(a.arg == AGENT_STATE_PARAMETER for a in function.args.args + function.args.kwonlyargs)
    return ParsedTool(function.name, summary, schema, uses_state)


def _pick(
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef], name: str | None
) -> ast.FunctionDef | ast.AsyncFunctionDef:
    names = [f.name for f in functions]
    if name is None:
        if len(functions) > 1:
            raise ToolSourceError(f"the file defines several functions ({', '.join(names)}): pick one with --name")
        return functions[0]
    found = [f for f in functions if f.name == name]
    if not found:
        raise ToolSourceError(f"the file has no top-level function {name} (it has {', '.join(names)})")
    return found[-1]


def _docstring(text: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and each documented argument's line."""
    summary: list[str] = []
    documented: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        heading = _SECTION.match(line)
        if heading:
            section, current = heading.group(1), None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        match = _ARG_LINE.match(line)
        if match is not None and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            name = match.group(1).lstrip("*")
            documented[name] = match.group(3).strip()
            current = name
        elif current is not None:
            documented[current] = f"{documented[current]} {line}".strip()
    return " ".join(" ".join(summary).split()), documented


def _parameters(
    function: ast.FunctionDef | ast.AsyncFunctionDef, documented: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    args = function.args
    if args.vararg is not None or args.kwarg is not None:
        raise ToolSourceError(f"function {function.name} takes *args or **kwargs; a tool names each argument")
    positional = args.posonlyargs + args.args
    defaults: dict[str, ast.expr] = dict(
        zip([a.arg for a in positional][len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg in positional + args.kwonlyargs:
        if arg.arg == AGENT_STATE_PARAMETER:
            continue
        if arg.annotation is None:
            raise ToolSourceError(f"argument {arg.arg} of {function.name} has no type annotation")
        if arg.arg not in documented:
            raise ToolSourceError(f"argument {arg.arg} of {function.name} has no line under Args: in the docstring")
        schema, optional = _annotation(arg.annotation, function.name, arg.arg)
        properties[arg.arg] = {**schema, "description": documented[arg.arg]}
        if arg.arg in defaults:
            default = _literal(defaults[arg.arg])
            if default is not _NO_LITERAL:
                properties[arg.arg]["default"] = default
        elif not optional:
            required.append(arg.arg)
    return properties, required


def _annotation(node: ast.expr, function: str, argument: str) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a type annotation, and whether it admits None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError as err:
            raise ToolSourceError(f"argument {argument} of {function} has an unreadable annotation") from err
    if isinstance(node, ast.Constant) and node.value is None:
        return {"type": "null"}, True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right], function, argument)
    name = _name(node.value if isinstance(node, ast.Subscript) else node)
    if isinstance(node, ast.Subscript):
        inner = node.slice
        items = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if name in ("Optional",):
            schema, _ = _annotation(items[0], function, argument)
            return schema, True
        if name == "Union":
            return _union(items, function, argument)
        if name == "Literal":
            values = [_literal(item) for item in items]
            if any(v is _NO_LITERAL for v in values):
                raise ToolSourceError(f"argument {argument} of {function}: Literal takes constants only")
            return {"enum": values}, False
        if name in _ARRAYS:
            return {"type": "array", "items": _annotation(items[0], function, argument)[0]}, False
        if name in _OBJECTS:
            return {"type": "object"}, False
    elif name in _SCALARS:
        return {"type": _SCALARS[name]}, False
    elif name in _ARRAYS:
        return {"type": "array"}, False
    elif name in _OBJECTS:
        return {"type": "object"}, False
    elif name == "Any":
        return {}, False
    raise ToolSourceError(f"argument {argument} of {function} has a type a tool schema cannot say: {ast.unparse(node)}")


def _union(items: list[ast.expr], function: str, argument: str) -> tuple[dict[str, Any], bool]:
    schemas = [_annotation(item, function, argument)[0] for item in items]
    optional = any(s == {"type": "null"} for s in schemas)
    rest = [s for s in schemas if s != {"type": "null"}]
    if len(rest) == 1:
        return rest[0], optional
    return {"anyOf": rest}, optional


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


_NO_LITERAL = object()


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _NO_LITERAL
