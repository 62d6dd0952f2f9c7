"""Where a step's worker CPU goes: a sampling profile of the threads holding the GIL (py-spy, not a dependency:
`pip install py-spy`) of one `perdure worker` process while agents run turns of tool calls,
printed as JSON (the functions with the most samples, inclusive and own).

    python bench/profile_steps.py [--seconds 20] [--agents 4] [--tool-calls 10] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from harness import bench_rig  # noqa: E402
from speed import perdure_turn  # noqa: E402
from throughput import worker_process_env, workers  # noqa: E402

from perdure.store.db import get_database  # noqa: E402
from starter.client import PerdureClient  # noqa: E402


def top(raw: Path, count: int) -> dict[str, list[tuple[str, float]]]:
    """py-spy's raw (collapsed) stacks, as the share of samples each function is in, and on top of."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";") if f]
        if not frames or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(count)],
        "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(count)],
    }


async def main(seconds: float, agents: int, tool_calls: int, count: int) -> dict[str, object]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    async with bench_rig() as (tmp, db_url, model_server, env):
        queue = f"profile-{uuid.uuid4().hex[:8]}"
        worker_env = worker_process_env(
            env.client.service_client.config.target_host, db_url, queue, model_server.base_url
        )
        client = PerdureClient(env.client, get_database(db_url), queue)
        raw = tmp / "profile.txt"
        with workers(1, worker_env, tmp / "worker.log") as [pid]:
            await perdure_turn(client, model_server, tool_calls)
            recorder = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            until = time.monotonic() + seconds

            async def converse() -> None:
                while time.monotonic() < until:
                    await perdure_turn(client, model_server, tool_calls)

            await asyncio.gather(*(converse() for _ in range(agents)))
            recorder.send_signal(2)
            recorder.wait(timeout=60)
        return {"benchmark": "profile_steps", "seconds": seconds, "agents": agents, **top(raw, count)}


if __name__ == "__main__":
    assert __doc__ is not None, "the module docstring is the command's description"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--tool-calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.seconds, options.agents, options.tool_calls, options.top)), indent=1))
