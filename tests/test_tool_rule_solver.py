"""Unit tests for the tool-rules solver: Letta's `tests/test_tool_rule_solver.py` scenarios, adapted.

Differences from Letta that these tests pin down on purpose: the allowed list is ordered like
the agent's tools and falls back to every tool when the rules leave nothing; each call is
counted once; conditional mapping keys are JSON strings; a missing response is "no match".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

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
    ToolCallNode,
    ToolRule,
)
from perdure.tool_rules import ToolRulesSolver, check_rules, merge_prefilled_args

START, PREP, NEXT, HELPER, FINAL, END = "start_tool", "prep_tool", "next_tool", "helper_tool", "final_tool", "end_tool"
SAVE, REQ1, REQ2, APPROVE = "save_tool", "required_tool_1", "required_tool_2", "requires_approval_tool"
ALL = [START, PREP, NEXT, HELPER, FINAL, END, SAVE, REQ1, REQ2, APPROVE]


def solver(*rules: ToolRule, tools: list[str] | None = None) -> ToolRulesSolver:
    return ToolRulesSolver(list(rules), ALL if tools is None else tools)


def returned(message: Any) -> str:
    """A packaged tool return as the workflow hands it over."""
    return json.dumps({"status": "OK", "message": message, "time": "2026-01-01 12:00:00 PM UTC+0000"})


def props(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": [], "additionalProperties": False}


# --- allowed tools -------------------------------------------------------------------------------


def test_init_rules_only_at_start_in_available_order() -> None:
    s = solver(InitToolRule(tool_name=PREP), InitToolRule(tool_name=START))
    assert s.allowed_tools() == [START, PREP]
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == ALL


def test_init_rules_ignore_tools_the_agent_lacks() -> None:
    s = solver(InitToolRule(tool_name=START), InitToolRule(tool_name="ghost"))
    assert s.allowed_tools() == [START]


def test_children_after_parent() -> None:
    s = solver(InitToolRule(tool_name=START), ChildToolRule(tool_name=START, children=[NEXT, HELPER]))
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [NEXT, HELPER]


def test_chain_of_child_rules_to_terminal() -> None:
    s = solver(
        InitToolRule(tool_name=START),
        ChildToolRule(tool_name=START, children=[NEXT]),
        ChildToolRule(tool_name=NEXT, children=[FINAL]),
        TerminalToolRule(tool_name=FINAL),
    )
    assert s.allowed_tools() == [START]
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [NEXT]
    s.register_call(NEXT, returned("ok"))
    assert s.allowed_tools() == [FINAL]
    assert s.is_terminal(FINAL)


def test_empty_allowed_set_falls_back_to_all_tools() -> None:
    s = solver(ChildToolRule(tool_name=START, children=["ghost"]))
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == ALL


def test_unrecognized_last_tool_leaves_everything_allowed() -> None:
    s = solver(InitToolRule(tool_name=START))
    s.register_call("unrecognized_tool", None)
    assert s.allowed_tools() == ALL


def test_parent_rule_hides_children_until_parent_was_last() -> None:
    s = solver(ParentToolRule(tool_name=PREP, children=[HELPER]), tools=[START, PREP, HELPER])
    assert s.allowed_tools() == [START, PREP]
    s.register_call(PREP, returned("ok"))
    assert s.allowed_tools() == [HELPER]
    s.register_call(HELPER, returned("ok"))
    assert s.allowed_tools() == [START, PREP]


def test_terminal_and_requires_approval_detection() -> None:
    s = solver(
        InitToolRule(tool_name=START), TerminalToolRule(tool_name=END), RequiresApprovalToolRule(tool_name=APPROVE)
    )
    assert s.is_terminal(END) and not s.is_terminal(START) and not s.is_terminal(APPROVE)
    assert s.requires_approval(APPROVE)
    assert not s.requires_approval(START) and not s.requires_approval(END)


# --- conditional rules ---------------------------------------------------------------------------


def conditional_solver(**kwargs: Any) -> ToolRulesSolver:
    rule = ConditionalToolRule(tool_name=START, **kwargs)
    return solver(InitToolRule(tool_name=START), rule, TerminalToolRule(tool_name=END))


def test_conditional_true_and_false() -> None:
    s = conditional_solver(child_output_mapping={"true": END, "false": START})
    assert s.allowed_tools() == [START]
    s.register_call(START, '{"message": "true"}')
    assert s.allowed_tools() == [END]
    s.register_call(START, '{"message": "false"}')
    assert s.allowed_tools() == [START]


@pytest.mark.parametrize("message", ["True", "TRUE", True])
def test_conditional_boolean_spellings(message: Any) -> None:
    s = conditional_solver(child_output_mapping={"true": END, "false": NEXT})
    s.register_call(START, returned(message))
    assert s.allowed_tools() == [END]


@pytest.mark.parametrize(
    ("message", "expected"), [("1", NEXT), ("1.0", NEXT), (1, NEXT), ("2.5", HELPER), (2.5, HELPER)]
)
def test_conditional_numbers_compare_numerically(message: Any, expected: str) -> None:
    s = conditional_solver(child_output_mapping={"1": NEXT, "2.50": HELPER})
    s.register_call(START, returned(message))
    assert s.allowed_tools() == [expected]


def test_conditional_strings_match_exactly() -> None:
    s = conditional_solver(child_output_mapping={"yes": NEXT, "no": HELPER})
    s.register_call(START, returned("no"))
    assert s.allowed_tools() == [HELPER]
    s.register_call(START, returned("No"))
    assert s.allowed_tools() == ALL


def test_conditional_default_child_on_no_match() -> None:
    s = conditional_solver(child_output_mapping={"yes": NEXT}, default_child=FINAL)
    s.register_call(START, returned("maybe"))
    assert s.allowed_tools() == [FINAL]


def test_conditional_require_output_mapping_leaves_nothing_then_falls_back() -> None:
    s = conditional_solver(child_output_mapping={"yes": NEXT}, default_child=FINAL, require_output_mapping=True)
    s.register_call(START, returned("maybe"))
    assert s._rule_allowed() == set()
    assert s.allowed_tools() == ALL


@pytest.mark.parametrize("response", [None, "not json", "[1, 2]", "{}"])
def test_conditional_missing_or_odd_response_does_not_crash(response: str | None) -> None:
    lenient = conditional_solver(child_output_mapping={"yes": NEXT}, default_child=FINAL)
    lenient.register_call(START, response)
    assert lenient.allowed_tools() == [FINAL]
    strict = conditional_solver(child_output_mapping={"yes": NEXT}, require_output_mapping=True)
    strict.register_call(START, response)
    assert strict.allowed_tools() == ALL


def test_conditional_rule_needs_a_mapping() -> None:
    with pytest.raises(ValidationError):
        ConditionalToolRule(tool_name=START, default_child=END, child_output_mapping={})


def test_conditional_uses_only_the_last_response() -> None:
    s = conditional_solver(child_output_mapping={"yes": NEXT}, default_child=FINAL)
    s.register_call(START, returned("yes"))
    s.register_call(START, None)
    assert s.allowed_tools() == [FINAL]


# --- max count ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_max_count_allows_exactly_n_uses_counted_once(limit: int) -> None:
    s = solver(MaxCountPerStepToolRule(tool_name=START, max_count_limit=limit), tools=[START, NEXT])
    for _ in range(limit):
        assert START in s.allowed_tools()
        s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [NEXT]
    assert s.history == [START] * limit


def test_max_count_does_not_affect_other_tools() -> None:
    s = solver(
        MaxCountPerStepToolRule(tool_name=START, max_count_limit=2),
        ChildToolRule(tool_name=NEXT, children=[HELPER]),
        tools=[START, NEXT, HELPER],
    )
    s.register_call(START, returned("ok"))
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [NEXT, HELPER]


def test_max_count_on_only_tool_falls_back_to_all() -> None:
    limit = MaxCountPerStepToolRule(tool_name=START, max_count_limit=2)
    s = solver(InitToolRule(tool_name=START), limit, tools=[START])
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [START]
    s.register_call(START, returned("ok"))
    assert s._rule_allowed() == set()
    assert s.allowed_tools() == [START]


def test_fresh_solver_resets_counts() -> None:
    rules = [MaxCountPerStepToolRule(tool_name=START, max_count_limit=1)]
    s = ToolRulesSolver(rules, [START, NEXT])
    s.register_call(START, returned("ok"))
    assert s.allowed_tools() == [NEXT]
    assert ToolRulesSolver(rules, [START, NEXT]).allowed_tools() == [START, NEXT]


# --- required before exit ----------------------------------------------------------------------


def test_required_before_exit_none_defined() -> None:
    assert solver().uncalled_required_before_exit() == []


def test_required_before_exit_single() -> None:
    s = solver(RequiredBeforeExitToolRule(tool_name=SAVE))
    assert s.uncalled_required_before_exit() == [SAVE]
    s.register_call(START, returned("ok"))
    s.register_call(HELPER, returned("ok"))
    assert s.uncalled_required_before_exit() == [SAVE]
    s.register_call(SAVE, returned("ok"))
    assert s.uncalled_required_before_exit() == []


def test_required_before_exit_multiple_in_rule_order() -> None:
    s = solver(RequiredBeforeExitToolRule(tool_name=REQ2), RequiredBeforeExitToolRule(tool_name=REQ1))
    assert s.uncalled_required_before_exit() == [REQ2, REQ1]
    s.register_call(REQ1, returned("ok"))
    assert s.uncalled_required_before_exit() == [REQ2]
    s.register_call(REQ2, returned("ok"))
    assert s.uncalled_required_before_exit() == []


def test_required_before_exit_ignores_unavailable_tools() -> None:
    s = solver(RequiredBeforeExitToolRule(tool_name=SAVE), tools=[START])
    assert s.uncalled_required_before_exit() == []


# --- should_force_tool_call --------------------------------------------------------------------


def test_force_no_rules() -> None:
    assert solver().should_force_tool_call() is False


def test_force_init_rule_only_before_first_call() -> None:
    s = solver(InitToolRule(tool_name=START))
    assert s.should_force_tool_call() is True
    s.register_call(START, returned("ok"))
    assert s.should_force_tool_call() is False


@pytest.mark.parametrize(
    "rule",
    [
        ChildToolRule(tool_name=START, children=[NEXT, HELPER]),
        ConditionalToolRule(tool_name=START, child_output_mapping={"true": END, "false": NEXT}),
        ParentToolRule(tool_name=START, children=[NEXT, HELPER]),
    ],
)
def test_force_when_constraining_rule_active(rule: ToolRule) -> None:
    s = solver(rule)
    assert s.should_force_tool_call() is False
    s.register_call(HELPER, returned("ok"))
    assert s.should_force_tool_call() is False
    s.register_call(START, returned("ok"))
    assert s.should_force_tool_call() is True


@pytest.mark.parametrize(
    "rule",
    [
        MaxCountPerStepToolRule(tool_name=START, max_count_limit=2),
        TerminalToolRule(tool_name=START),
        ContinueToolRule(tool_name=START),
        RequiredBeforeExitToolRule(tool_name=START),
        RequiresApprovalToolRule(tool_name=START),
    ],
)
def test_force_not_for_non_constraining_rules(rule: ToolRule) -> None:
    s = solver(rule)
    s.register_call(START, returned("ok"))
    assert s.should_force_tool_call() is False


def test_force_multiple_rules_one_active_at_a_time() -> None:
    s = solver(
        ChildToolRule(tool_name=START, children=[NEXT]),
        ChildToolRule(tool_name=NEXT, children=[FINAL]),
        ParentToolRule(tool_name=PREP, children=[HELPER]),
    )
    s.register_call(START, returned("ok"))
    assert s.should_force_tool_call() is True
    s.register_call(NEXT, returned("ok"))
    assert s.should_force_tool_call() is True
    s.register_call(FINAL, returned("ok"))
    assert s.should_force_tool_call() is False


def test_force_mixed_rules() -> None:
    s = solver(
        InitToolRule(tool_name=START),
        ChildToolRule(tool_name=START, children=[NEXT]),
        TerminalToolRule(tool_name=END),
        ContinueToolRule(tool_name=HELPER),
        MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=2),
    )
    assert s.should_force_tool_call() is True
    s.register_call(START, returned("ok"))
    assert s.should_force_tool_call() is True
    s.register_call(NEXT, returned("ok"))
    assert s.should_force_tool_call() is False


# --- prefilled arguments -----------------------------------------------------------------------


def test_init_rule_args_and_provenance() -> None:
    s = solver(InitToolRule(tool_name="alpha", args={"x": 1, "y": "s"}), tools=["alpha", "beta"])
    assert s.allowed_tools() == ["alpha"]
    assert s.prefilled_args("alpha") == ({"x": 1, "y": "s"}, "InitToolRule(alpha)")
    assert s.prefilled_args("beta") is None


def test_no_prefill_without_args() -> None:
    s = solver(InitToolRule(tool_name="alpha"), InitToolRule(tool_name="beta", args={}), tools=["alpha", "beta"])
    assert s.prefilled_args("alpha") is None
    assert s.prefilled_args("beta") is None


def test_init_args_stop_after_first_call() -> None:
    s = solver(InitToolRule(tool_name="alpha", args={"p": 5}), tools=["alpha", "beta"])
    assert s.prefilled_args("alpha") == ({"p": 5}, "InitToolRule(alpha)")
    s.register_call("alpha", returned("ok"))
    assert s.prefilled_args("alpha") is None


def test_init_args_last_write_wins() -> None:
    s = solver(
        InitToolRule(tool_name="alpha", args={"x": 1, "y": "first"}),
        InitToolRule(tool_name="alpha", args={"y": "second", "z": True}),
        tools=["alpha", "beta"],
    )
    assert s.prefilled_args("alpha") == ({"x": 1, "y": "second", "z": True}, "InitToolRule(alpha)")


def test_child_args_only_when_parent_was_last() -> None:
    rule = ChildToolRule(
        tool_name="parent",
        children=["child_a", "child_b"],
        child_arg_nodes=[ToolCallNode(name="child_a", args={"x": 1})],
    )
    s = solver(rule, tools=["parent", "child_a", "child_b"])
    assert s.prefilled_args("child_a") is None
    s.register_call("parent", returned("ok"))
    assert s.allowed_tools() == ["child_a", "child_b"]
    assert s.prefilled_args("child_a") == ({"x": 1}, "ChildToolRule(parent->child_a)")
    assert s.prefilled_args("child_b") is None
    s.register_call("child_a", returned("ok"))
    assert s.prefilled_args("child_a") is None


def test_init_then_child_args_in_their_phases() -> None:
    s = solver(
        InitToolRule(tool_name="alpha", args={"seed": "A"}),
        ChildToolRule(tool_name="alpha", children=["beta"], child_arg_nodes=[ToolCallNode(name="beta", args={"k": 1})]),
        tools=["alpha", "beta"],
    )
    assert s.prefilled_args("alpha") == ({"seed": "A"}, "InitToolRule(alpha)")
    assert s.prefilled_args("beta") is None
    s.register_call("alpha", returned("ok"))
    assert s.allowed_tools() == ["beta"]
    assert s.prefilled_args("alpha") is None
    assert s.prefilled_args("beta") == ({"k": 1}, "ChildToolRule(alpha->beta)")


def test_child_args_last_write_wins() -> None:
    s = solver(
        ChildToolRule(tool_name="p", children=["c"], child_arg_nodes=[ToolCallNode(name="c", args={"x": 1, "y": "a"})]),
        ChildToolRule(tool_name="p", children=["c"], child_arg_nodes=[ToolCallNode(name="c", args={"y": "b", "z": 3})]),
        tools=["p", "c"],
    )
    s.register_call("p", returned("ok"))
    assert s.prefilled_args("c") == ({"x": 1, "y": "b", "z": 3}, "ChildToolRule(p->c)")


def test_child_args_only_for_available_children() -> None:
    rule = ChildToolRule(
        tool_name="p",
        children=["allowed", "blocked"],
        child_arg_nodes=[ToolCallNode(name="allowed", args={"a": 1}), ToolCallNode(name="blocked", args={"b": 2})],
    )
    s = solver(rule, tools=["p", "allowed"])
    s.register_call("p", returned("ok"))
    assert s.allowed_tools() == ["allowed"]
    assert s.prefilled_args("allowed") == ({"a": 1}, "ChildToolRule(p->allowed)")
    assert s.prefilled_args("blocked") is None


def test_child_args_intersect_with_conditional_mapping() -> None:
    s = solver(
        ChildToolRule(
            tool_name="decider",
            children=["c1", "c2"],
            child_arg_nodes=[ToolCallNode(name="c1", args={"x": 10}), ToolCallNode(name="c2", args={"y": 20})],
        ),
        ConditionalToolRule(
            tool_name="decider", child_output_mapping={"true": "c2", "false": "c1"}, require_output_mapping=True
        ),
        tools=["decider", "c1", "c2"],
    )
    s.register_call("decider", '{"message": "true"}')
    assert s.allowed_tools() == ["c2"]
    assert s.prefilled_args("c2") == ({"y": 20}, "ChildToolRule(decider->c2)")
    assert s.prefilled_args("c1") is None


def test_prefilled_args_are_copies() -> None:
    rule = InitToolRule(tool_name="alpha", args={"nested": {"k": 1}})
    s = solver(rule, tools=["alpha"])
    args, _ = s.prefilled_args("alpha") or ({}, "")
    args["nested"]["k"] = 2
    assert rule.args == {"nested": {"k": 1}}


def test_merge_prefilled_overrides_model_values() -> None:
    schema = props(a={"type": "integer"}, b={"type": "string"})
    merged, error = merge_prefilled_args("my_tool", {"a": 1, "b": "hello"}, {"a": 42}, "InitToolRule(my_tool)", schema)
    assert (merged, error) == ({"a": 42, "b": "hello"}, None)


def test_merge_prefilled_type_error_text() -> None:
    model_args = {"a": 1}
    schema = props(a={"type": "integer"})
    merged, error = merge_prefilled_args("typed_tool", model_args, {"a": "x"}, "InitToolRule(typed_tool)", schema)
    assert merged == model_args
    assert error == (
        "Invalid prefilled tool arguments from tool rules (source=InitToolRule(typed_tool)): "
        "Invalid value for 'a': 'x' does not match expected schema type 'integer'."
    )


def test_merge_prefilled_unknown_key_text() -> None:
    schema = props(a={"type": "integer"})
    _, error = merge_prefilled_args("limited_tool", {}, {"z": 3}, "ChildToolRule(p->limited_tool)", schema)
    assert error == (
        "Invalid prefilled tool arguments from tool rules (source=ChildToolRule(p->limited_tool)): "
        "Unknown argument 'z' for tool 'limited_tool'."
    )


RICH = props(
    c={"enum": ["x", "y"]},
    d={"const": 5},
    e={"anyOf": [{"type": "string"}, {"type": "integer"}]},
    f={"oneOf": [{"type": "string"}, {"type": "integer"}]},
    g={"type": "number"},
    h={"type": ["string", "null"]},
    obj={"type": "object"},
    arr={"type": "array"},
    flag={"type": "boolean"},
)


@pytest.mark.parametrize(
    "prefill",
    [
        {"c": "x"},
        {"d": 5},
        {"e": 7},
        {"e": "s"},
        {"f": "hello"},
        {"g": 3.14},
        {"g": 3},
        {"h": None},
        {"h": "ok"},
        {"obj": {"k": 1, "nest": {"a": 2}}},
        {"arr": [1, 2, 3]},
        {"flag": True},
    ],
)
def test_merge_prefilled_valid_values(prefill: dict[str, Any]) -> None:
    merged, error = merge_prefilled_args("rich_tool", {"extra": "kept"}, prefill, "InitToolRule(rich_tool)", RICH)
    assert error is None
    assert merged == {"extra": "kept", **prefill}


@pytest.mark.parametrize(
    "prefill",
    [{"c": "z"}, {"d": 6}, {"e": []}, {"f": []}, {"g": True}, {"h": 5}, {"obj": "nope"}, {"arr": {}}, {"flag": "yes"}],
)
def test_merge_prefilled_invalid_values(prefill: dict[str, Any]) -> None:
    merged, error = merge_prefilled_args("rich_tool", {"c": "x"}, prefill, "InitToolRule(rich_tool)", RICH)
    assert merged == {"c": "x"}
    assert error is not None and "Invalid value for" in error and "Unknown argument" not in error


def test_child_arg_nodes_validation_against_schema() -> None:
    bad = {"obj": "not-an-object", "arr": {"not": "array"}, "h": 5, "flag": "yes"}
    rule = ChildToolRule(tool_name="p", children=["c"], child_arg_nodes=[ToolCallNode(name="c", args=bad)])
    s = solver(rule, tools=["p", "c"])
    s.register_call("p", returned("ok"))
    prefill = s.prefilled_args("c")
    assert prefill is not None and prefill[0] == bad
    _, error = merge_prefilled_args("c", {}, prefill[0], prefill[1], RICH)
    assert error is not None
    assert error.startswith("Invalid prefilled tool arguments from tool rules (source=ChildToolRule(p->c)): ")
    assert error.count("Invalid value for") == 4


def test_tool_call_node_args_must_be_a_dict() -> None:
    with pytest.raises(ValidationError):
        ToolCallNode(name="c1", args="not-a-dict")  # type: ignore[arg-type]


# --- violation messages and prompts ------------------------------------------------------------


def test_violation_message_with_hints_for_tool_and_previous_tool() -> None:
    s = solver(
        InitToolRule(tool_name=START),
        ChildToolRule(tool_name=START, children=[NEXT]),
        TerminalToolRule(tool_name=END),
        ContinueToolRule(tool_name=HELPER),
    )
    s.register_call(START, returned("ok"))
    assert s.violation_message(END) == (
        "[ToolConstraintError] Cannot call end_tool, valid tools include: ['next_tool'].\n"
        "** Hint: Possible rules that were violated:\n"
        "\t- <tool_rule>\nAfter using start_tool, you must use one of these tools: next_tool\n</tool_rule>\n"
        "\t- <tool_rule>\nend_tool ends your response (yields control) when called\n</tool_rule>"
    )


def test_violation_message_without_hints() -> None:
    s = solver(InitToolRule(tool_name=START), tools=[START, NEXT])
    expected = "[ToolConstraintError] Cannot call next_tool, valid tools include: ['start_tool']."
    assert s.violation_message(NEXT) == expected


def test_rule_prompts_letta_texts_and_order() -> None:
    s = solver(
        TerminalToolRule(tool_name=END),
        ParentToolRule(tool_name=PREP, children=[HELPER, FINAL]),
        MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=2),
        ConditionalToolRule(tool_name=START, child_output_mapping={"true": END}),
        ChildToolRule(tool_name=START, children=[NEXT, HELPER]),
        ContinueToolRule(tool_name=HELPER),
        InitToolRule(tool_name=START),
        RequiredBeforeExitToolRule(tool_name=SAVE),
        RequiresApprovalToolRule(tool_name=APPROVE),
    )
    assert s.rule_prompts() == [
        "<tool_rule>\nhelper_tool requires continuing your response when called\n</tool_rule>",
        "<tool_rule>\nnext_tool: at most 2 use(s) per response\n</tool_rule>",
        "<tool_rule>\nstart_tool will determine which tool to use next based on its output\n</tool_rule>",
        "<tool_rule>\nAfter using start_tool, you must use one of these tools: next_tool, helper_tool\n</tool_rule>",
        "<tool_rule>\nhelper_tool, final_tool can only be used after prep_tool\n</tool_rule>",
        "<tool_rule>\nend_tool ends your response (yields control) when called\n</tool_rule>",
    ]


def test_prompt_template_overrides() -> None:
    s = solver(
        ChildToolRule(
            tool_name=START,
            children=[NEXT, HELPER],
            prompt_template="<tool_rule>{{ tool_name }} -> {{ children | join(' or ') }}</tool_rule>",
        ),
        MaxCountPerStepToolRule(
            tool_name=NEXT,
            max_count_limit=3,
            prompt_template="<tool_rule>{{tool_name}} x{{max_count_limit}}{{ missing }}</tool_rule>",
        ),
        InitToolRule(tool_name=START, prompt_template="<tool_rule>begin with {{ tool_name }}</tool_rule>"),
    )
    assert s.rule_prompts() == [
        "<tool_rule>begin with start_tool</tool_rule>",
        "<tool_rule>start_tool -> next_tool or helper_tool</tool_rule>",
        "<tool_rule>next_tool x3</tool_rule>",
    ]


def test_no_prompts_without_rendered_rules() -> None:
    s = solver(
        InitToolRule(tool_name=START),
        RequiredBeforeExitToolRule(tool_name=SAVE),
        RequiresApprovalToolRule(tool_name=APPROVE),
    )
    assert s.rule_prompts() == []


# --- check_rules -------------------------------------------------------------------------------


def test_check_rules_accepts_a_valid_graph() -> None:
    rules: list[ToolRule] = [
        InitToolRule(tool_name=START),
        ChildToolRule(tool_name=START, children=[NEXT], child_arg_nodes=[ToolCallNode(name=NEXT, args={"a": 1})]),
        ConditionalToolRule(tool_name=NEXT, child_output_mapping={"true": FINAL}, default_child=END),
        MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=2),
        MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=2),
        RequiresApprovalToolRule(tool_name=FINAL),
        RequiresApprovalToolRule(tool_name=FINAL),
        TerminalToolRule(tool_name=END),
    ]
    assert check_rules(rules, ALL) is None
    assert check_rules([], []) is None


@pytest.mark.parametrize(
    ("rule", "missing"),
    [
        (TerminalToolRule(tool_name="ghost"), "ghost"),
        (ChildToolRule(tool_name=START, children=[NEXT, "ghost"]), "ghost"),
        (ParentToolRule(tool_name=START, children=["ghost"]), "ghost"),
        (ConditionalToolRule(tool_name=START, child_output_mapping={"x": "ghost"}), "ghost"),
        (ConditionalToolRule(tool_name=START, child_output_mapping={"x": NEXT}, default_child="ghost"), "ghost"),
        (ChildToolRule(tool_name=START, children=[NEXT], child_arg_nodes=[ToolCallNode(name="ghost")]), "ghost"),
    ],
)
def test_check_rules_unknown_tools(rule: ToolRule, missing: str) -> None:
    error = check_rules([rule], ALL)
    assert error is not None and f"'{missing}'" in error and rule.type in error and f"'{rule.tool_name}'" in error


def test_check_rules_child_arg_node_outside_children() -> None:
    rule = ChildToolRule(tool_name=START, children=[NEXT], child_arg_nodes=[ToolCallNode(name=HELPER, args={"x": 1})])
    error = check_rules([rule], ALL)
    assert error is not None and "not in children" in error and "'helper_tool'" in error


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ([InitToolRule(tool_name=START), TerminalToolRule(tool_name=START)], "both run_first and exit_loop"),
        ([TerminalToolRule(tool_name=END), ContinueToolRule(tool_name=END)], "both exit_loop and continue_loop"),
        ([ChildToolRule(tool_name=START, children=[])], "no children"),
        ([ParentToolRule(tool_name=START, children=[])], "no children"),
        ([ConditionalToolRule.model_construct(tool_name=START, child_output_mapping={})], "empty child_output_mapping"),
        (
            [
                MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=3),
                MaxCountPerStepToolRule(tool_name=NEXT, max_count_limit=1),
            ],
            "different limits: [1, 3]",
        ),
    ],
)
def test_check_rules_contradictions(rules: list[ToolRule], fragment: str) -> None:
    error = check_rules(rules, ALL)
    assert error is not None and fragment in error


# --- determinism -------------------------------------------------------------------------------


def _trace(rules: list[ToolRule], calls: list[tuple[str, str | None]]) -> list[Any]:
    s = ToolRulesSolver(rules, ALL)
    out: list[Any] = [s.allowed_tools(), s.should_force_tool_call(), s.rule_prompts()]
    for name, response in calls:
        s.register_call(name, response)
        out += [s.allowed_tools(), s.should_force_tool_call(), s.uncalled_required_before_exit()]
        out += [s.violation_message(END), [s.prefilled_args(n) for n in ALL]]
    return out


def test_solver_is_deterministic() -> None:
    rules: list[ToolRule] = [
        InitToolRule(tool_name=START, args={"a": 1}),
        ChildToolRule(
            tool_name=START, children=[HELPER, NEXT, PREP], child_arg_nodes=[ToolCallNode(name=NEXT, args={"b": 2})]
        ),
        ConditionalToolRule(tool_name=NEXT, child_output_mapping={"1": FINAL, "2": HELPER}, default_child=PREP),
        ParentToolRule(tool_name=PREP, children=[SAVE]),
        MaxCountPerStepToolRule(tool_name=HELPER, max_count_limit=1),
        RequiredBeforeExitToolRule(tool_name=REQ2),
        RequiredBeforeExitToolRule(tool_name=REQ1),
        TerminalToolRule(tool_name=END),
    ]
    calls = [(START, returned("ok")), (NEXT, returned(2)), (HELPER, None), (NEXT, returned("x"))]
    calls.append((PREP, returned("ok")))
    first = _trace(rules, calls)
    assert all(_trace(rules, calls) == first for _ in range(5))
    assert first[3] == [PREP, NEXT, HELPER]
