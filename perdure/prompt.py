"""The system prompt: the agent's system text with its memory blocks compiled in Letta's form.

The compiled text depends only on the stored system text, blocks and rules (no timestamps), so
it stays byte-identical between steps until memory changes, which keeps provider prefix caches
warm.
"""

from __future__ import annotations

from collections.abc import Sequence

from perdure.schemas.agent import Block

CORE_MEMORY_VARIABLE = "{CORE_MEMORY}"


def compile_memory(blocks: Sequence[Block], tool_rule_prompts: Sequence[str] = ()) -> str:
    parts = [
        "<memory_blocks>",
        "The following memory blocks are currently engaged in your core memory unit:",
        "",
    ]
    for block in blocks:
        parts.append(f"<{block.label}>")
        if block.description:
            parts += ["<description>", block.description, "</description>"]
        metadata = [f"- chars_current={len(block.value)}", f"- chars_limit={block.limit}"]
        if block.read_only:
            metadata.insert(0, "- read_only=true")
        parts += ["<metadata>", *metadata, "</metadata>", "<value>", block.value, "</value>", f"</{block.label}>", ""]
    parts.append("</memory_blocks>")
    if tool_rule_prompts:
        parts += ["", "<tool_usage_rules>", *tool_rule_prompts, "</tool_usage_rules>"]
    return "\n".join(parts)


def compile_plain_system_prompt(system: str, blocks: Sequence[Block]) -> str:
    """Memory as one plain line per block, for small models without tool calling: they copy
    from Letta's XML layout (its tags, its metadata) instead of reading it."""
    memory = "\n".join(f"Your memory about the {block.label}: {block.value or '(empty)'}" for block in blocks)
    if CORE_MEMORY_VARIABLE in system:
        return system.replace(CORE_MEMORY_VARIABLE, memory)
    return f"{system}\n{memory}"


def compile_system_prompt(system: str, blocks: Sequence[Block], tool_rule_prompts: Sequence[str] = ()) -> str:
    """Substitute `{CORE_MEMORY}` in the system text, or append the memory when it is absent."""
    memory = compile_memory(blocks, tool_rule_prompts)
    if CORE_MEMORY_VARIABLE in system:
        return system.replace(CORE_MEMORY_VARIABLE, memory)
    return f"{system}\n\n{memory}"
