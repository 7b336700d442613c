# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The JSON-RPC client against fake agents: a stdio subprocess and a tiny WebSocket server."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentClient, AgentError, InsecureTokenError, StdioTransport
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_builtin import WebSocketTransport, accept_value
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_common import check_token_transport
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_library import HAS_WEBSOCKET_CLIENT, LibraryWebSocketTransport

FAKE_AGENT = r'''
import json, sys
count = {"n": 0}


def error(rid, code, message, **data):
    return json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message, "data": data}}) + "\n"


for line in sys.stdin:
    req = json.loads(line)
    out = sys.stdout
    # A notification and an answer to another id come first: the client must skip both.
    out.write(json.dumps({"jsonrpc": "2.0", "method": "job.changed", "params": {"job": {}}}) + "\n")
    out.write(json.dumps({"jsonrpc": "2.0", "id": 999, "result": "not yours"}) + "\n")
    m = req["method"]
    if m == "echo":
        out.write(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": req["params"]}) + "\n")
    elif m == "flaky":
        count["n"] += 1
        if count["n"] < 3:
            out.write(error(req["id"], -32007, "recovering", name="recovering", retryable=True))
        else:
            out.write(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": count["n"]}) + "\n")
    elif m == "die":
        sys.stderr.write("fatal: the fake agent gave up\n")
        sys.exit(3)
    else:
        libvirt = {"code": 42, "domain": 10, "message": "Domain not found"}
        out.write(error(req["id"], -32000, "no domain 'x'", name="notFound", retryable=False, libvirt=libvirt))
    out.flush()
'''


class StdioTests(unittest.TestCase):
    def setUp(self):
        fd, self.script = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write(FAKE_AGENT)
        self.client = AgentClient(StdioTransport([sys.executable, self.script]), call_timeout=10)

    def tearDown(self):
        self.client.close()
        os.unlink(self.script)

    def test_result_skips_notifications_and_other_ids(self):
        self.assertEqual(self.client.call("echo", {"a": 1}), {"a": 1})
        self.assertEqual(self.client.call("echo", {"b": 2}), {"b": 2})

    def test_error_carries_name_code_and_data(self):
        with self.assertRaises(AgentError) as cm:
            self.client.call("nope", {})
        e = cm.exception
        self.assertEqual((e.name, e.code, e.retryable), ("notFound", -32000, False))
        self.assertEqual(e.data["libvirt"]["code"], 42)

    def test_retryable_errors_are_retried(self):
        self.assertEqual(self.client.call_retrying("flaky", {}, timeout=30, sleep=lambda s: None), 3)

    def test_agent_exit_is_a_transport_error_with_its_stderr(self):
        with self.assertRaises(AgentError) as cm:
            self.client.call("die", {})
        self.assertEqual(cm.exception.name, "transport")
        self.assertIn("gave up", cm.exception.message)

    def test_missing_command(self):
        with self.assertRaises(AgentError) as cm:
            StdioTransport(["/nonexistent/blockcopy-agent", "stdio"])
        self.assertIn("cannot run", cm.exception.message)


def serve_one(listener, token_seen):
    """Accepts one connection, checks the handshake, answers one call with ping + fragments."""
    conn, _ = listener.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head = data.decode("latin-1")
    token_seen.append([h for h in head.split("\r\n") if h.lower().startswith("authorization")])
    key = [h.split(":", 1)[1].strip() for h in head.split("\r\n") if h.lower().startswith("sec-websocket-key")][0]
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
    b1, b2 = bytearray(conn.recv(2))
    assert b2 & 0x80, "client frames must be masked"
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn.recv(2))[0]
    mask = conn.recv(4)
    payload = b""
    while len(payload) < n:
        payload += conn.recv(n - len(payload))
    req = json.loads(bytes(bytearray(b ^ mask[i % 4] for i, b in enumerate(bytearray(payload)))).decode())
    answer = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": {"method": req["method"]}}).encode()
    conn.sendall(bytes([0x89, 0x02]) + b"hi")                    # a ping first
    half = len(answer) // 2
    conn.sendall(bytes([0x01, half]) + answer[:half])            # text, not final
    conn.sendall(bytes([0x80, len(answer) - half]) + answer[half:])  # continuation, final
    b1, b2 = bytearray(conn.recv(2))
    token_seen.append(("pong", b1 & 0x0F == 0xA))
    # Read the rest of the pong (mask + payload) before closing: closing with unread data
    # makes the kernel send a reset, which can discard what the client has not read yet.
    rest = 4 + (b2 & 0x7F)
    while rest > 0:
        rest -= len(conn.recv(rest))
    conn.shutdown(socket.SHUT_WR)
    conn.close()


class WebSocketTests(unittest.TestCase):
    def test_handshake_masking_ping_and_fragments(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        seen = []
        th = threading.Thread(target=serve_one, args=(listener, seen))
        th.start()
        client = AgentClient(WebSocketTransport("ws://127.0.0.1:%d" % listener.getsockname()[1], token="s3cret"), call_timeout=10)
        self.assertEqual(client.call("capabilities", {}), {"method": "capabilities"})
        th.join(10)
        client.close()
        listener.close()
        self.assertEqual(seen[0], ["Authorization: Bearer s3cret"])
        self.assertEqual(seen[1], ("pong", True))

    def test_refused_handshake(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def refuse():
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
            conn.close()
        th = threading.Thread(target=refuse)
        th.start()
        with self.assertRaises(AgentError) as cm:
            WebSocketTransport("ws://127.0.0.1:%d" % listener.getsockname()[1])
        th.join(10)
        listener.close()
        self.assertIn("401", cm.exception.message)

    def test_bad_scheme(self):
        with self.assertRaises(AgentError):
            WebSocketTransport("http://127.0.0.1:1")

    def silent_peer(self, transport_class):
        # A host cut off from the network closes nothing: the call must not wait for its deadline.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        frames = []

        def accept_then_fall_silent():
            conn, _ = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            key = [line.split(":", 1)[1].strip() for line in data.decode("latin-1").split("\r\n")
                   if line.lower().startswith("sec-websocket-key:")][0]
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\n\r\n" % accept_value(key)).encode("ascii"))
            conn.settimeout(5)
            try:
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    frames.append(bytearray(chunk)[0] & 0x0F)
            except OSError:
                pass
            conn.close()
        th = threading.Thread(target=accept_then_fall_silent)
        th.start()
        transport = transport_class("ws://127.0.0.1:%d" % listener.getsockname()[1], connection_timeout=1)
        with self.assertRaises(AgentError) as cm:
            AgentClient(transport, call_timeout=20).call("wait", {})
        transport.close()
        th.join(10)
        listener.close()
        self.assertIn("lost the connection to the agent", cm.exception.message)
        self.assertEqual(cm.exception.name, "transport")
        self.assertIn(0x9, frames, "the client pinged before giving up")

    def test_a_silent_peer_is_a_lost_connection_within_the_bound(self):
        self.silent_peer(WebSocketTransport)

    @unittest.skipUnless(HAS_WEBSOCKET_CLIENT, "websocket-client (python3-websocket) is not installed")
    def test_a_silent_peer_is_a_lost_connection_within_the_bound_library(self):
        self.silent_peer(LibraryWebSocketTransport)


def non_loopback_address():
    """An address of this host that is not loopback (the source address of a route), or None."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.200", 9))  # no packet is sent for a UDP connect
        addr = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if addr.startswith("127.") else addr


class InsecureTokenTests(unittest.TestCase):
    def setUp(self):
        self.addr = non_loopback_address()
        if self.addr is None:
            self.skipTest("this host has no address that is not loopback")
        self.listener = socket.socket()
        self.listener.bind((self.addr, 0))
        self.listener.listen(1)
        self.url = "ws://%s:%d" % (self.addr, self.listener.getsockname()[1])

    def tearDown(self):
        self.listener.close()

    def test_token_over_ws_to_a_host_that_is_not_loopback_is_refused_before_connecting(self):
        with self.assertRaises(InsecureTokenError) as cm:
            WebSocketTransport(self.url, token="s3cret")
        self.assertIn("allow_insecure_token", cm.exception.message)
        self.assertIn(self.addr, cm.exception.message)
        self.assertNotIn("s3cret", cm.exception.message)
        self.listener.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            self.listener.accept()  # nothing ever connected: the token never left

    def test_allowed_explicitly(self):
        seen = []
        th = threading.Thread(target=serve_one, args=(self.listener, seen))
        th.start()
        client = AgentClient(WebSocketTransport(self.url, token="s3cret", allow_insecure_token=True), call_timeout=10)
        self.assertEqual(client.call("capabilities", {}), {"method": "capabilities"})
        th.join(10)
        client.close()
        self.assertEqual(seen[0], ["Authorization: Bearer s3cret"])

    def test_from_module_params(self):
        with self.assertRaises(InsecureTokenError):
            AgentClient.from_module_params({"endpoint": self.url, "token": "s3cret"})

    def test_what_stays_allowed(self):
        check_token_transport(self.url, None)  # no token, nothing to leak
        check_token_transport("wss://%s:1" % self.addr, "t")
        for url in ("ws://127.0.0.1:1", "ws://127.8.9.10:1", "ws://localhost:1", "ws://[::1]:1"):
            check_token_transport(url, "t")


if __name__ == "__main__":
    unittest.main()
