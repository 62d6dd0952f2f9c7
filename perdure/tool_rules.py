"""Tool rules: which tools the model may call next, and what the loop must do about it.

Letta's `ToolRulesSolver` re-done as a pure object so it can live inside a Temporal workflow:
no I/O, no clock, no randomness, and every answer that is a list comes out in a fixed order
(Letta returns set-ordered lists, which would make replays diverge). The workflow feeds it
each executed call with `register_call` and asks it before every model request.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from perdure.schemas.agent import (
    ChildToolRule,
    ConditionalToolRule,
    ContinueToolRule,
    InitToolRule,
    MaxCountPerStepToolRule,
    ParentToolRule,
    RequiredBeforeExitToolRule,
    RequiresApprovalToolRule,
    TerminalToolRule,
    ToolRule,
)
from perdure.tools.arguments import check_value

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_TEMPLATE_FIELD = re.compile(r"\{\{\s*(\w+)\s*(?:\|\s*join\(\s*(['\"])(.*?)\2\s*\)\s*)?\}\}")

# Letta's order for <tool_usage_rules> and violation hints: init, continue, child-based, parent, terminal.
_PROMPT_GROUPS: tuple[tuple[type, ...], ...] = (
    (InitToolRule,),
    (ContinueToolRule,),
    (ChildToolRule, ConditionalToolRule, MaxCountPerStepToolRule),
    (ParentToolRule,),
    (TerminalToolRule,),
)
# Rules whose activation (their tool was the last call) makes Letta force a tool call.
_FORCING = (ChildToolRule, ConditionalToolRule, ParentToolRule)


class ToolRulesSolver:
    """The tool-rule state of one run: the rules, the agent's tools and the calls made so far."""

    def __init__(self, rules: Sequence[ToolRule], available: Sequence[str]) -> None:
        self._rules: tuple[ToolRule, ...] = tuple(rules)
        self._available: tuple[str, ...] = tuple(dict.fromkeys(available))
        self.history: list[str] = []
        """Tools called in this run, once per call (Letta registers twice, halving max counts)."""
        self._last_response: str | None = None

    def register_call(self, name: str, function_response: str | None) -> None:
        """Record an executed call; its packaged return is what conditional rules branch on."""
        self.history.append(name)
        self._last_response = function_response

    def allowed_tools(self) -> list[str]:
        """Tools whose schemas go to the model next, in the agent's order.

        When the rules leave nothing every tool is offered, as in Letta V3, rather than none.
        """
        allowed = self._rule_allowed()
        return [name for name in self._available if name in allowed] or list(self._available)

    def should_force_tool_call(self) -> bool:
        """Whether the next request must demand a tool call (Letta's matrix)."""
        if not self.history:
            return any(isinstance(rule, InitToolRule) for rule in self._rules)
        return self._has(_FORCING, self.history[-1])

    def is_terminal(self, name: str) -> bool:
        """Whether calling `name` ends the loop (unless required-before-exit tools remain)."""
        return self._has(TerminalToolRule, name)

    def requires_approval(self, name: str) -> bool:
        """Whether a call to `name` must wait for a human decision."""
        return self._has(RequiresApprovalToolRule, name)

    def uncalled_required_before_exit(self) -> list[str]:
        """Required-before-exit tools the agent has but has not called yet, in rule order."""
        required = dict.fromkeys(r.tool_name for r in self._rules if isinstance(r, RequiredBeforeExitToolRule))
        return [name for name in required if name in self._available and name not in self.history]

    def violation_message(self, name: str) -> str:
        """The error the model gets instead of running a disallowed call, with rule hints."""
        message = f"[ToolConstraintError] Cannot call {name}, valid tools include: {self.allowed_tools()!r}."
        previous = self.history[-1] if self.history else None
        related = [rule for rule in _in_prompt_order(self._rules) if rule.tool_name in (name, previous)]
        hints = [text for rule in related if (text := render_rule(rule))]
        if hints:
            message += "\n** Hint: Possible rules that were violated:\n" + "\n".join(f"\t- {h}" for h in hints)
        return message

    def prefilled_args(self, name: str) -> tuple[dict[str, Any], str] | None:
        """Arguments rules fix for a call to `name` right now, and which rule fixed them.

        Only allowed tools get them (Letta caches them from the allowed set); later rules win per key.
        """
        if name not in self._rule_allowed():
            return None
        merged: dict[str, Any] = {}
        provenance: str | None = None
        for source, target, args in self._prefill_sources():
            if target == name and args:
                merged.update(copy.deepcopy(args))
                provenance = source
        return (merged, provenance) if provenance is not None else None

    def rule_prompts(self) -> list[str]:
        """The <tool_rule> texts for the system prompt's <tool_usage_rules> section."""
        return [text for rule in _in_prompt_order(self._rules) if (text := render_rule(rule))]

    def _has(self, kinds: type | tuple[type, ...], name: str) -> bool:
        """Whether some rule of `kinds` is about the tool `name`."""
        return any(isinstance(rule, kinds) and rule.tool_name == name for rule in self._rules)

    def _rule_allowed(self) -> set[str]:
        """Letta's `get_allowed_tool_names` restricted to the agent's tools, before any fallback."""
        available = set(self._available)
        first = {r.tool_name for r in self._rules if isinstance(r, InitToolRule)}
        if first and not self.history:
            return first & available
        for rule in self._rules:
            available &= self._valid_after(rule, available)
        return available

    def _valid_after(self, rule: ToolRule, available: set[str]) -> set[str]:
        """What one rule permits given the history; rules with no say permit everything."""
        last = self.history[-1] if self.history else None
        if isinstance(rule, MaxCountPerStepToolRule):
            spent = self.history.count(rule.tool_name) >= rule.max_count_limit
            return available - {rule.tool_name} if spent else available
        if isinstance(rule, ParentToolRule):
            return set(rule.children) if last == rule.tool_name else available - set(rule.children)
        if last != rule.tool_name:
            return available
        if isinstance(rule, ChildToolRule):
            return set(rule.children)
        if isinstance(rule, ConditionalToolRule):
            return self._conditional_targets(rule, available)
        return available

    def _conditional_targets(self, rule: ConditionalToolRule, available: set[str]) -> set[str]:
        """The mapped child for the last output; else the default, all tools, or none if strict.

        An unreadable response is "no match", not an error as in Letta: a crash would stall the workflow.
        """
        output = _response_message(self._last_response)
        if output is not None:
            for key, child in rule.child_output_mapping.items():
                if _output_matches(output, key):
                    return {child}
        if rule.require_output_mapping:
            return set()
        return {rule.default_child} if rule.default_child else available

    def _prefill_sources(self) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        """(provenance, tool, args) triples active now: init args first, child args after their parent."""
        last = self.history[-1] if self.history else None
        for rule in self._rules:
            if isinstance(rule, InitToolRule) and last is None:
                yield f"InitToolRule({rule.tool_name})", rule.tool_name, rule.args
            elif isinstance(rule, ChildToolRule) and rule.tool_name == last:
                for node in rule.child_arg_nodes or []:
                    yield f"ChildToolRule({rule.tool_name}->{node.name})", node.name, node.args


def _in_prompt_order(rules: Sequence[ToolRule]) -> list[ToolRule]:
    """Rules that may be rendered, grouped as Letta lists them; input order within a group."""
    return [rule for group in _PROMPT_GROUPS for rule in rules if isinstance(rule, group)]


def render_rule(rule: ToolRule) -> str | None:
    """A rule's <tool_rule> text: its `prompt_template` if set (Jinja-style fields), else Letta's."""
    if rule.prompt_template:
        fields = rule.model_dump()
        return _TEMPLATE_FIELD.sub(lambda m: _fill_field(fields, m), rule.prompt_template)
    text = _DEFAULT_TEXTS.get(type(rule))
    return f"<tool_rule>\n{text(rule)}\n</tool_rule>" if text else None


def _fill_field(fields: Mapping[str, Any], match: re.Match[str]) -> str:
    """One `{{ name }}` or `{{ name | join(', ') }}`; unknown names render empty, as in Jinja."""
    value = fields.get(match.group(1))
    if match.group(2) is not None and isinstance(value, list):
        return match.group(3).join(str(item) for item in value)
    return "" if value is None else str(value)


# Letta's built-in texts; init, required-before-exit and approval rules render nothing by default.
_DEFAULT_TEXTS: dict[type, Callable[[Any], str]] = {
    TerminalToolRule: lambda r: f"{r.tool_name} ends your response (yields control) when called",
    ContinueToolRule: lambda r: f"{r.tool_name} requires continuing your response when called",
    ChildToolRule: lambda r: f"After using {r.tool_name}, you must use one of these tools: {', '.join(r.children)}",
    ParentToolRule: lambda r: f"{', '.join(r.children)} can only be used after {r.tool_name}",
    ConditionalToolRule: lambda r: f"{r.tool_name} will determine which tool to use next based on its output",
    MaxCountPerStepToolRule: lambda r: f"{r.tool_name}: at most {r.max_count_limit} use(s) per response",
}


def _response_message(response: str | None) -> str | None:
    """The `message` of a packaged return as text (non-strings in JSON spelling), or None if unreadable."""
    try:
        parsed = json.loads(response) if response is not None else None
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    message = parsed.get("message", "")
    return message if isinstance(message, str) else json.dumps(message)


def _output_matches(output: str, key: str) -> bool:
    """Mapping keys are strings in JSON: "true"/"false" match booleans, numbers match numerically."""
    key_text, out_text = key.strip(), output.strip()
    if key_text.lower() in ("true", "false"):
        return out_text.lower() == key_text.lower()
    if _NUMBER.fullmatch(key_text):
        return _NUMBER.fullmatch(out_text) is not None and Decimal(out_text) == Decimal(key_text)
    return output == key


def merge_prefilled_args(
    name: str, model_args: dict[str, Any], prefilled: dict[str, Any], provenance: str, schema: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """Overlay rule-fixed arguments on the model's, or explain why the rule's values are unusable.

    A bad prefill is the agent author's mistake, not the model's, so it is reported with the
    rule that caused it and the call is not run (the caller ends the step as Letta does).
    """
    properties: Mapping[str, Any] = schema.get("properties") or {}
    problems = [p for key, value in prefilled.items() if (p := _prefill_problem(name, key, value, properties))]
    if problems:
        source = f" (source={provenance})" if provenance else ""
        return dict(model_args), f"Invalid prefilled tool arguments from tool rules{source}: {'; '.join(problems)}"
    return {**model_args, **copy.deepcopy(prefilled)}, None


def _prefill_problem(name: str, key: str, value: Any, properties: Mapping[str, Any]) -> str | None:
    if key not in properties:
        return f"Unknown argument '{key}' for tool '{name}'."
    if check_value(value, properties[key]) is not None:
        expected = properties[key].get("type")
        return f"Invalid value for '{key}': {value!r} does not match expected schema type {expected!r}."
    return None


def check_rules(rules: Sequence[ToolRule], tools: Sequence[str]) -> str | None:
    """Why a rule set cannot work for an agent with `tools`, as one sentence, or None.

    Run at agent creation so a broken graph is refused up front, not silently relaxed mid-run.
    """
    for rule in rules:
        problem = _rule_problem(rule, tools)
        if problem:
            return problem
    return _contradiction(rules)


def _rule_problem(rule: ToolRule, tools: Sequence[str]) -> str | None:
    """What is wrong with one rule on its own: an unknown tool, no children, stray arguments."""
    label = f"Tool rule {rule.type} on '{rule.tool_name}'"
    missing = [name for name in _referenced_tools(rule) if name not in tools]
    if missing:
        known = ", ".join(tools) or "none"
        return f"{label} refers to tool '{missing[0]}', which the agent does not have (its tools: {known})."
    if isinstance(rule, (ChildToolRule, ParentToolRule)) and not rule.children:
        return f"{label} has no children, so nothing could follow it."
    if isinstance(rule, ConditionalToolRule) and not rule.child_output_mapping:
        return f"{label} has an empty child_output_mapping, so nothing could follow it."
    if isinstance(rule, ChildToolRule):
        strays = [node.name for node in rule.child_arg_nodes or [] if node.name not in rule.children]
        if strays:
            return f"{label} prefills arguments for '{strays[0]}', which is not in children {rule.children!r}."
    return None


def _referenced_tools(rule: ToolRule) -> list[str]:
    names = [rule.tool_name]
    if isinstance(rule, (ChildToolRule, ParentToolRule)):
        names += rule.children
    if isinstance(rule, ChildToolRule):
        names += [node.name for node in rule.child_arg_nodes or []]
    if isinstance(rule, ConditionalToolRule):
        names += [*rule.child_output_mapping.values(), *([rule.default_child] if rule.default_child else [])]
    return names


def _contradiction(rules: Sequence[ToolRule]) -> str | None:
    """Rules on one tool that cannot all hold (several approval rules are harmless and allowed)."""
    kinds: dict[str, set[str]] = {}
    for rule in rules:
        kinds.setdefault(rule.tool_name, set()).add(rule.type)
    for name, types in kinds.items():
        for first, second in (("run_first", "exit_loop"), ("exit_loop", "continue_loop")):
            if {first, second} <= types:
                return f"Tool '{name}' cannot be both {first} and {second}: the rules contradict each other."
        caps = (r.max_count_limit for r in rules if isinstance(r, MaxCountPerStepToolRule) and r.tool_name == name)
        limits = sorted(set(caps))
        if len(limits) > 1:
            return f"Tool '{name}' has max_count_per_step rules with different limits: {limits}."
    return None
