"""An AIOpsLab agent that answers detection tasks with nodestate.

AIOpsLab drives an agent through ``init_context(problem_desc, instructions, apis)`` and then
``await get_action(observation)``, and reads the reply with its response parser: exactly one
fenced code block holding one API call. For a detection task that call is ``submit("Yes")``
or ``submit("No")``, graded case-insensitively. This agent asks ``collector detect`` (a node's
daemon, or the cluster's Prometheus) and replies with that block and nothing else.

Only the standard library: drop the file next to AIOpsLab's clients and register the agent
(see README.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

# `collector detect`'s exit code when the node is still learning its baseline.
STILL_LEARNING = 5


class DetectionError(RuntimeError):
    """`collector detect` could not give an answer."""


class NodestateAgent:
    """Answers AIOpsLab detection tasks from nodestate's verdict.

    node: a daemon's base URL (``http://NODE:9464``); prometheus: a Prometheus that scrapes
    every node's daemon (then any node degraded within ``range`` counts); collector: the
    ``collector`` binary (default: ``$NODESTATE_COLLECTOR``, else ``collector`` on PATH).
    A node still learning its baseline cannot tell: the agent asks again every
    ``learning_poll`` seconds for up to ``learning_wait`` seconds, then answers "No" (the
    task takes only Yes or No) and says so on stderr.
    """

    def __init__(
        self,
        node: str | None = None,
        prometheus: str | None = None,
        range: str = "5m",
        collector: str | None = None,
        learning_wait: float = 240.0,
        learning_poll: float = 5.0,
        timeout: float = 60.0,
    ):
        if node and prometheus:
            raise ValueError("give node or prometheus, not both")
        self.node = node or os.environ.get("NODESTATE_NODE", "http://127.0.0.1:9464")
        self.prometheus = prometheus or os.environ.get("NODESTATE_PROMETHEUS")
        self.range = range
        self.collector = (
            collector
            or os.environ.get("NODESTATE_COLLECTOR")
            or shutil.which("collector")
            or "collector"
        )
        self.learning_wait = learning_wait
        self.learning_poll = learning_poll
        self.timeout = timeout
        self.task = None
        self.history = []

    def init_context(self, problem_desc: str, instructions: str, apis: dict) -> None:
        """Called by AIOpsLab's orchestrator before the first action."""
        self.task = problem_desc
        if not any("submit" in name for name in apis):
            raise ValueError("the task offers no submit API")
        self.history.append({"role": "system", "content": problem_desc})
        self.history.append({"role": "user", "content": instructions})

    def detect(self) -> str:
        """'Yes' or 'No' from `collector detect`."""
        if self.prometheus:
            args = [self.collector, "detect", "--prometheus", self.prometheus, "--range", self.range]
        else:
            args = [self.collector, "detect", "--node", self.node]
        deadline = time.monotonic() + self.learning_wait
        while True:
            run = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout)
            answer = run.stdout.strip()
            if run.returncode == 0 and answer in ("Yes", "No"):
                return answer
            if run.returncode == STILL_LEARNING:
                if time.monotonic() + self.learning_poll > deadline:
                    print(
                        "nodestate: the node is still learning its baseline; answering No",
                        file=sys.stderr,
                    )
                    return "No"
                time.sleep(self.learning_poll)
                continue
            raise DetectionError(
                f"`{' '.join(args)}` exited {run.returncode}: {run.stderr.strip() or answer}"
            )

    async def get_action(self, observation: str) -> str:
        """The reply to AIOpsLab: one fenced code block holding ``submit("Yes"|"No")``."""
        self.history.append({"role": "user", "content": observation})
        answer = await asyncio.get_running_loop().run_in_executor(None, self.detect)
        reply = f'```\nsubmit("{answer}")\n```'
        self.history.append({"role": "assistant", "content": reply})
        return reply
