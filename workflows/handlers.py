"""What the Temporal UI's Signal, Update and Query dialogs say about each handler of a run.

Each description says what the handler does and gives an input to paste, so a person answering
an approval from the UI knows what to send (the run's current details give the real ids).
"""

APPROVE = (
    "Approve a tool call waiting for approval; the run goes on once every waiting call has an answer. "
    'Input: {"tool_call_id": "call_..."} (the id is in the current details or the `state` query); '
    "no input approves every waiting approval. A bad signal is recorded as rejected (see `state`)."
)
DENY = (
    "Deny a tool call waiting for approval: it does not run, and the model reads the reason. "
    'Input: {"tool_call_id": "call_...", "reason": "not now"} (reason optional).'
)
CLIENT_TOOL_RETURN = (
    "Give the result of a client-side tool call the run waits for. "
    'Input: {"tool_call_id": "call_...", "status": "success", "tool_return": "sunny"} '
    '(status "success" or "error").'
)
ANSWER = (
    "Answer waiting calls (programs; refused with a reason when an answer does not fit what waits) "
    "and return when the run stops or pauses again. Input: "
    '{"approvals": [{"type": "approval", "tool_call_id": "call_...", "approve": true}, '
    '{"type": "tool", "tool_call_id": "call_...", "status": "success", "tool_return": "sunny"}]}'
)
SEND_MESSAGE = (
    "Start the agent's next run with a message; returns when the run stops or pauses (use `perdure send`, "
    'which starts the workflow too). Input: {"messages": [{"role": "user", "content": "Hi, I am Ada."}], '
    '"max_steps": 50}'
)
COMPACT = (
    "Compact the agent's context now (also while a run waits for a person). "
    'Input: {"mode": "sliding_window"} or {"mode": "all"}'
)
STATE = (
    "What the run is doing: status, step, stop reason, usage, the waiting calls with their "
    "tool_call_id, and rejected signals. No input."
)
