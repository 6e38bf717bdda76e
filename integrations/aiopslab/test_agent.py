"""Tests of nodestate_agent against the real `collector detect` ($NODESTATE_COLLECTOR), with
a node's /state served by the test, and the replies read as AIOpsLab's format says: exactly
one fenced code block, the API name before the parenthesis, its arguments Python literals,
the answer compared case-insensitively."""

import ast
import asyncio
import http.server
import json
import os
import re
import threading
import time
import unittest

from nodestate_agent import DetectionError, NodestateAgent


def parse_reply(reply: str):
    """(api name, args) of an agent reply, as AIOpsLab's format defines it."""
    blocks = re.findall(r"```\s*\n(.*?)\n```", reply, re.DOTALL)
    if len(blocks) != 1:
        raise ValueError(f"{len(blocks)} code blocks in {reply!r}")
    call = blocks[0].strip()
    name = call[: call.index("(")].strip()
    args = ast.literal_eval("(" + call[call.index("(") + 1 : call.rindex(")")] + ",)")
    return name, list(args)


def graded(reply: str, expected: str) -> bool:
    name, args = parse_reply(reply)
    return name == "submit" and len(args) == 1 and args[0].strip().lower() == expected.lower()


class Node:
    """A node's /state, whose state the test changes."""

    def __init__(self, state: str):
        self.state = state
        node = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/state":
                    self.send_error(404)
                    return
                body = json.dumps({"node": "n1", "state": node.state, "score": 1.0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


APIS = {"submit(has_anomaly: str)": "Submit if anomalies are detected (Yes or No)."}


def agent_for(node: Node, **options) -> NodestateAgent:
    agent = NodestateAgent(node=node.url, **options)
    agent.init_context("Detect anomalies in the service.", "Answer with submit.", APIS)
    return agent


class AgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.environ.get("NODESTATE_COLLECTOR"):
            raise unittest.SkipTest("NODESTATE_COLLECTOR (the collector binary) is not set")

    def answer(self, node: Node, **options) -> str:
        return asyncio.run(agent_for(node, **options).get_action("Start the task."))

    def test_a_degraded_node_is_submit_yes_and_the_reply_is_only_that_block(self):
        node = Node("degraded")
        try:
            reply = self.answer(node)
        finally:
            node.close()
        self.assertTrue(graded(reply, "yes"), reply)
        self.assertEqual(reply, '```\nsubmit("Yes")\n```')

    def test_a_healthy_node_is_submit_no(self):
        node = Node("healthy")
        try:
            reply = self.answer(node)
        finally:
            node.close()
        self.assertTrue(graded(reply, "no"), reply)
        self.assertFalse(graded(reply, "yes"), reply)

    def test_a_learning_node_is_asked_again_until_it_can_tell(self):
        node = Node("learning")
        flip = threading.Timer(0.6, lambda: setattr(node, "state", "degraded"))
        flip.start()
        try:
            started = time.monotonic()
            reply = self.answer(node, learning_wait=20, learning_poll=0.2)
        finally:
            flip.cancel()
            node.close()
        self.assertTrue(graded(reply, "yes"), reply)
        self.assertGreaterEqual(time.monotonic() - started, 0.5)

    def test_a_node_learning_past_the_wait_is_answered_no(self):
        node = Node("learning")
        try:
            reply = self.answer(node, learning_wait=1, learning_poll=0.2)
        finally:
            node.close()
        self.assertTrue(graded(reply, "no"), reply)

    def test_an_unreachable_node_raises_instead_of_guessing(self):
        node = Node("healthy")
        node.close()
        with self.assertRaises(DetectionError):
            self.answer(node)

    def test_the_parser_used_here_refuses_what_aiopslab_refuses(self):
        with self.assertRaises(ValueError):
            parse_reply('```\nsubmit("Yes")\n```\n```\nsubmit("No")\n```')
        with self.assertRaises(ValueError):
            parse_reply('submit("Yes")')
        self.assertTrue(graded('```\nsubmit(" YES ")\n```', "yes"))


if __name__ == "__main__":
    unittest.main()
