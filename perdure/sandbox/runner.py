"""What a sandbox process runs: one tool call, then exit. Standard library only, no Perdure imports.

The process is started ahead of time (warm) with a clean environment and waits on stdin. It
reads one request line, takes on the call's environment and limits, runs the tool with its
stdout/stderr going to files in the scratch directory, and writes one JSON result line on the
stdout it was given. It serves exactly one call, so nothing of one call (an agent's variables,
a module's state) can reach another.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any

STDOUT_FILE = ".perdure-stdout"
STDERR_FILE = ".perdure-stderr"
MAX_OUTPUT_FILE_BYTES = 64 * 1024 * 1024


class ReadOnlyBlock:
    """A memory block as the tool sees it: label and value, not editable."""

    __slots__ = ("label", "value")

    def __init__(self, label: str, value: str) -> None:
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("agent_state is read-only in a tool")


class ReadOnlyMemory:
    __slots__ = ("blocks",)

    def __init__(self, blocks: list[ReadOnlyBlock]) -> None:
        object.__setattr__(self, "blocks", tuple(blocks))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("agent_state is read-only in a tool")

    def get_block(self, label: str) -> ReadOnlyBlock:
        for block in self.blocks:
            if block.label == label:
                return block
        raise KeyError(f"Block field {label} does not exist")

    def list_block_labels(self) -> list[str]:
        return [block.label for block in self.blocks]


class ReadOnlyAgentState:
    """Letta's `agent_state` argument, reduced to what a tool may read: id, name, memory."""

    __slots__ = ("id", "name", "memory")

    def __init__(self, data: dict[str, Any]) -> None:
        blocks = [ReadOnlyBlock(b["label"], b["value"]) for b in data.get("blocks", [])]
        object.__setattr__(self, "id", data["id"])
        object.__setattr__(self, "name", data["name"])
        object.__setattr__(self, "memory", ReadOnlyMemory(blocks))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("agent_state is read-only in a tool")


def stringify(value: Any) -> str:
    """Letta's form of a return value: strings as they are, dicts and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def limit(kind: int, amount: int) -> None:
    if amount > 0:
        resource.setrlimit(kind, (amount, amount))


def run(request: dict[str, Any]) -> dict[str, Any]:
    os.environ.clear()
    os.environ.update(request["env"])
    cpu_seconds = int(request["cpu_seconds"])
    if cpu_seconds > 0:
        # The soft limit under the hard one: the kernel sends SIGXCPU (reported as the CPU-time
        # limit) a second before SIGKILL, which would read as an unexplained kill.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    limit(resource.RLIMIT_AS, int(request["memory_bytes"]))
    limit(resource.RLIMIT_FSIZE, MAX_OUTPUT_FILE_BYTES)
    namespace: dict[str, Any] = {"__name__": "__perdure_tool__"}
    try:
        exec(compile(request["source"], "<tool>", "exec"), namespace)  # noqa: S102 - running the tool is the point
        function = namespace[request["function"]]
        arguments = dict(request["arguments"])
        if request.get("agent_state") is not None:
            arguments["agent_state"] = ReadOnlyAgentState(request["agent_state"])
        value = function(**arguments)
        return {"status": "success", "value": stringify(value)}
    except BaseException as err:  # the tool's own failure, whatever it is, is its result
        traceback.print_exc()
        return {"status": "error", "error_type": type(err).__name__, "message": str(err)}


def add_venv_packages() -> None:
    """In a requirements venv, its packages (started with -S, Python added none): done while
    the process waits, not during the call. Outside one, tools get the standard library only."""
    home = os.path.dirname(os.path.dirname(sys.executable))
    if os.path.exists(os.path.join(home, "pyvenv.cfg")):
        import site

        sys.prefix = sys.exec_prefix = home  # what `site` does for a venv when it runs
        site.addsitedir(f"{home}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")


def main() -> None:
    add_venv_packages()
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    line = sys.stdin.readline()
    if not line:
        return  # the pool closed this spare process: nothing to do
    request = json.loads(line)
    for fd, name in ((1, STDOUT_FILE), (2, STDERR_FILE)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    result = run(request)
    sys.stdout.flush()
    sys.stderr.flush()
    results.write(json.dumps(result) + "\n")
    results.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
