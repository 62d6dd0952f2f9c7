"""The chaos check's stand-in model: it answers by rule and spoils some replies on purpose.

The answer depends only on the request, so a step asked again after a worker kill, a server kill
or a fault gets the same answer, and the check can say what each agent should have stored. It
serves from a process of its own (`bench/chaos.py --serve-model`), so the kills never reach it,
and reports what it answered and spoiled when its stdin closes. `bench/model_process.py` does not
fit: it serves replies scripted in advance, not rules, and reports nothing back.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

from perdure.scripted.server import ScriptedLLMServer, ScriptedReply, ScriptedToolCall

MODEL_PREFIX = "chaos-"
"""The stand-in model answers `chaos-K` by rule: K memory_insert calls, then `FINAL_ANSWER`."""
FINAL_ANSWER = "All noted."
FAULT_KINDS = ("rate_limit", "server_error", "stall", "cut_body")
MAX_FAULTS_PER_REQUEST = 2
"""One request (the same step asked again) meets at most this many faults in all, well inside the
provider's own failure budget: the check is that every fault is recovered, not that the budget ends.
In all, not in a row: a good reply the worker was killed before receiving does not reset the
count Perdure keeps across attempts (it once reached five, and the run ended `llm_api_error`)."""
CHAOS_SCRIPT = Path(__file__).resolve().with_name("chaos.py")
"""The bench's command, which serves the model when given `--serve-model`."""
REPO = CHAOS_SCRIPT.parent.parent


def fact_line(number: int, calls: int) -> str:
    return f"chaos fact {number} of {calls}"


def calls_of(model: str) -> int | None:
    """K for a `chaos-K` model name, else None (the model then has no reply: a 404)."""
    suffix = model.removeprefix(MODEL_PREFIX)
    return int(suffix) if model.startswith(MODEL_PREFIX) and suffix.isdigit() else None


def rule_reply(request: dict[str, Any], calls: int) -> ScriptedReply:
    """The answer depends only on the request (how many tool returns follow the last user
    message), so a request asked again after a crash or a fault gets the same answer."""
    wire: list[dict[str, Any]] = request.get("messages") or []
    last_user = max((i for i, m in enumerate(wire) if m.get("role") == "user"), default=-1)
    done = sum(1 for m in wire[last_user + 1 :] if m.get("role") == "tool")
    if done >= calls:
        return ScriptedReply(content=FINAL_ANSWER)
    arguments = {"label": "human", "new_string": fact_line(done + 1, calls)}
    return ScriptedReply(tool_calls=[ScriptedToolCall(name="memory_insert", arguments=arguments)])


def faulty(kind: str, reply: ScriptedReply, model: str, request: dict[str, Any], stall_s: float) -> ScriptedReply:
    """`reply` spoiled the way `kind` says; a cut streamed reply loses its connection after the
    first delta, a cut plain reply is a 200 whose JSON body ends half-way."""
    if kind == "rate_limit":
        error = {"error": {"message": "chaos: rate limited", "type": "rate_limit_error"}}
        return ScriptedReply(status=429, headers={"Retry-After": "1"}, error=error)
    if kind == "server_error":
        return ScriptedReply(status=500, error={"error": {"message": "chaos: internal error", "type": "server_error"}})
    if kind == "stall":
        return reply.model_copy(update={"delay_s": stall_s})
    if request.get("stream"):
        return reply.model_copy(update={"drop_after_chunks": 1})
    body = reply.body(model, request).decode()
    return ScriptedReply(raw_body=body[: len(body) // 2])


class ChaosModel(ScriptedLLMServer):
    """Answers `chaos-K` models by rule, each reply after a random think time of up to `reply_delay_s`
    (so that kills land mid-run), spoiling every (1/P)-th reply with the next fault kind."""

    def __init__(self, faults: float, seed: int, stall_s: float, reply_delay_s: float) -> None:
        super().__init__()
        self._faults = faults
        self._stall_s = stall_s
        self._reply_delay_s = reply_delay_s
        self._rng = random.Random(seed)
        self._kinds = list(FAULT_KINDS)
        self._rng.shuffle(self._kinds)
        self._due = 0.0
        self._faults_per_request: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.answered = 0

    def _next(self, request: dict[str, Any], headers: dict[str, str], api: str) -> tuple[str, ScriptedReply | None]:
        model = str(request.get("model", ""))
        calls = calls_of(model)
        if calls is None:
            return model, None
        key = hashlib.sha256(json.dumps([model, request.get("messages")], sort_keys=True).encode()).hexdigest()
        with self._lock:
            reply = rule_reply(request, calls).model_copy(update={"delay_s": self._rng.uniform(0, self._reply_delay_s)})
            self.answered += 1
            self._due += self._faults
            if self._due < 1.0 or self._faults_per_request[key] >= MAX_FAULTS_PER_REQUEST:
                return model, reply
            self._due -= 1.0
            kind = self._kinds[sum(self.injected.values()) % len(self._kinds)]
            self.injected[kind] += 1
            self._faults_per_request[key] += 1
        return model, faulty(kind, reply, model, request, self._stall_s)


def serve_model(faults: float, seed: int, stall_s: float, reply_delay_s: float) -> None:
    """The model process: prints its base URL, serves until its stdin closes (the bench ended or
    died), then prints what it answered and injected as one JSON line."""
    model = ChaosModel(faults, seed, stall_s, reply_delay_s)
    with model:
        print(model.base_url, flush=True)
        sys.stdin.read()
        print(json.dumps({"requests": model.answered, "faults": dict(model.injected)}), flush=True)


class ChaosModelProcess:
    """The model process this bench started, at `base_url` once it serves."""

    def __init__(self, faults: float, seed: int, stall_s: float, reply_delay_s: float) -> None:
        command = [sys.executable, str(CHAOS_SCRIPT), "--serve-model"]
        command += ["--provider-faults", str(faults), "--seed", str(seed)]
        command += ["--stall-s", str(stall_s), "--reply-delay-s", str(reply_delay_s)]
        self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.base_url = _pipe(self.process.stdout).readline().strip()
        if not self.base_url:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the chaos model process exited with {self.process.returncode} before serving")

    def stop(self) -> dict[str, Any]:
        """Close its stdin (`communicate` does) and read its counts; killed if it does not finish in time."""
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return {}
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}


def _pipe(stream: IO[str] | None) -> IO[str]:
    assert stream is not None, "the model process is started with pipes"
    return stream
