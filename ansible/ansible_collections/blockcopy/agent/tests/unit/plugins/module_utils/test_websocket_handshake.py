# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The WebSocket opening handshake as RFC 6455 4.1 requires a client to check it, against a tiny
fake server on loopback (socketserver) that answers each way a server can get it wrong; and the
choice between websocket-client (python3-websocket) and the built-in client."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import socketserver
import threading
import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils import agent_client
from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentClient, AgentError, websocket_transport
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_builtin import WebSocketTransport, accept_value, check_handshake
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_library import LibraryWebSocketTransport


def read_head(rfile):
    lines = []
    while True:
        line = rfile.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            return lines
        lines.append(line)


def request_key(lines):
    return [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-key:")][0]


def good_answer(key):
    return ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: %s" % accept_value(key)]


# Each way a server's answer can break RFC 6455 4.1 (the client asked for no extension or subprotocol).
BAD = {
    "wrong accept": lambda key: good_answer("another key")[:3] + ["Sec-WebSocket-Accept: %s" % accept_value("another key")],
    "no accept": lambda key: good_answer(key)[:3],
    "not 101": lambda key: ["HTTP/1.1 200 OK", "Content-Length: 0"],
    "no upgrade": lambda key: [good_answer(key)[0]] + good_answer(key)[2:],
    "upgrade to another protocol": lambda key: [good_answer(key)[0], "Upgrade: h2c"] + good_answer(key)[2:],
    "connection without upgrade": lambda key: good_answer(key)[:2] + ["Connection: keep-alive"] + good_answer(key)[3:],
    "unrequested extension": lambda key: good_answer(key) + ["Sec-WebSocket-Extensions: permessage-deflate"],
    "unrequested subprotocol": lambda key: good_answer(key) + ["Sec-WebSocket-Protocol: chat"],
}
EXPECTED = {
    "wrong accept": "Sec-WebSocket-Accept", "no accept": "Sec-WebSocket-Accept", "not 101": "refused: HTTP/1.1 200 OK",
    "no upgrade": "Upgrade: websocket", "upgrade to another protocol": "Upgrade: websocket",
    "connection without upgrade": "Connection: upgrade", "unrequested extension": "extension",
    "unrequested subprotocol": "subprotocol",
}


class FakeServer(object):
    """Answers every upgrade with answer(key) (a list of header lines); after a 101 it answers one
    JSON-RPC call in an unmasked text frame, so a client that accepted the handshake can be seen
    to work."""

    def __init__(self, answer):
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            # A client that accepted a handshake it should have refused must not hang the test.
            timeout = 5

            def handle(self):
                try:
                    self.serve()
                except (socket.timeout, OSError, ValueError):
                    pass

            def serve(self):
                lines = read_head(self.rfile)
                outer.requests.append(lines)
                head = answer(request_key(lines))
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                if " 101 " not in head[0] + " ":
                    return
                first = bytearray(self.rfile.read(2))
                if len(first) < 2 or first[0] & 0x0F != 0x1:
                    return  # closed (or a close frame) without a call
                n = first[1] & 0x7F
                if n == 126:
                    n = int.from_bytes(self.rfile.read(2), "big")
                mask = bytearray(self.rfile.read(4))
                req = json.loads(bytes(bytearray(b ^ mask[i % 4] for i, b in enumerate(bytearray(self.rfile.read(n))))).decode())
                body = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": "hello"}).encode()
                self.wfile.write(bytes(bytearray([0x81, len(body)])) + body)
                self.rfile.read(2)  # the client's close frame, or EOF

        self.requests = []
        self.server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()
        self.url = "ws://127.0.0.1:%d/" % self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class BuiltinHandshakeTests(unittest.TestCase):
    transport = WebSocketTransport

    def connect(self, answer):
        server = FakeServer(answer)
        self.addCleanup(server.stop)
        return server, self.transport(server.url, timeout=10)

    def test_a_correct_answer_works(self):
        server, transport = self.connect(good_answer)
        client = AgentClient(transport, call_timeout=10)
        self.assertEqual(client.call("capabilities"), "hello")
        client.close()
        lines = server.requests[0]
        self.assertIn("Sec-WebSocket-Version: 13", lines)
        self.assertFalse([l for l in lines if l.lower().startswith(("sec-websocket-extensions", "sec-websocket-protocol", "origin"))])

    def test_header_names_and_tokens_case_insensitive(self):
        def answer(key):
            return ["HTTP/1.1 101 Switching Protocols", "UPGRADE: WebSocket", "connection: keep-alive, UPGRADE",
                    "sec-websocket-accept: %s" % accept_value(key)]
        _, transport = self.connect(answer)
        self.assertEqual(AgentClient(transport, call_timeout=10).call("x"), "hello")
        transport.close()

    def test_each_broken_answer_is_refused_with_a_clear_message(self):
        for case, answer in sorted(BAD.items()):
            with self.subTest(case=case):
                with self.assertRaises(AgentError) as cm:
                    self.connect(answer)
                self.assertIn(EXPECTED[case], cm.exception.message)
                self.assertEqual(cm.exception.name, "transport")

    def test_check_handshake_directly(self):
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        # RFC 6455 1.3's own example.
        self.assertEqual(accept_value(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        check_handshake("\r\n".join(good_answer(key)), key)
        with self.assertRaises(AgentError):
            check_handshake("garbage", key)


@unittest.skipUnless(agent_client.HAS_WEBSOCKET_CLIENT, "websocket-client (python3-websocket) is not installed")
class LibraryHandshakeTests(unittest.TestCase):
    """websocket-client checks status, Upgrade, Connection and Sec-WebSocket-Accept itself; the
    transport adds what the library leaves out (an extension or subprotocol not asked for)."""

    def connect(self, answer):
        server = FakeServer(answer)
        self.addCleanup(server.stop)
        return server, LibraryWebSocketTransport(server.url, timeout=10)

    def test_a_correct_answer_works(self):
        server, transport = self.connect(good_answer)
        self.assertEqual(AgentClient(transport, call_timeout=10).call("capabilities"), "hello")
        transport.close()
        self.assertFalse([l for l in server.requests[0] if l.lower().startswith("origin")], "no Origin header")

    def test_every_broken_answer_is_refused(self):
        for case in sorted(BAD):
            with self.subTest(case=case):
                with self.assertRaises(AgentError) as cm:
                    self.connect(BAD[case])
                self.assertIn("WebSocket handshake", cm.exception.message)

    def test_token_sent(self):
        server = FakeServer(good_answer)
        self.addCleanup(server.stop)
        transport = LibraryWebSocketTransport(server.url, token="s3cret", timeout=10)
        transport.close()
        self.assertIn("Authorization: Bearer s3cret", server.requests[0])


class ChoiceTests(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer(good_answer)
        self.addCleanup(self.server.stop)
        self.saved = os.environ.pop(agent_client.CLIENT_ENV, None)
        self.addCleanup(self.restore)

    def restore(self):
        os.environ.pop(agent_client.CLIENT_ENV, None)
        if self.saved is not None:
            os.environ[agent_client.CLIENT_ENV] = self.saved

    def test_auto_prefers_the_library_where_importable(self):
        t = websocket_transport(self.server.url, timeout=10)
        t.close()
        self.assertIsInstance(t, LibraryWebSocketTransport if agent_client.HAS_WEBSOCKET_CLIENT else WebSocketTransport)

    def test_auto_falls_back_to_the_builtin_client(self):
        saved = agent_client.HAS_WEBSOCKET_CLIENT
        agent_client.HAS_WEBSOCKET_CLIENT = False
        try:
            t = websocket_transport(self.server.url, timeout=10)
        finally:
            agent_client.HAS_WEBSOCKET_CLIENT = saved
        t.close()
        self.assertIsInstance(t, WebSocketTransport)

    def test_environment_names_the_client(self):
        os.environ[agent_client.CLIENT_ENV] = "builtin"
        t = websocket_transport(self.server.url, timeout=10)
        t.close()
        self.assertIsInstance(t, WebSocketTransport)
        os.environ[agent_client.CLIENT_ENV] = "nonsense"
        with self.assertRaises(AgentError):
            websocket_transport(self.server.url)


if __name__ == "__main__":
    unittest.main()
