# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The built-in RFC 6455 client, standard library only, for targets without websocket-client: its
opening handshake checks what section 4.1 of the RFC requires of a client (status 101, Upgrade
and Connection, Sec-WebSocket-Accept, no extension or subprotocol it did not ask for)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import os
import socket
import ssl
import struct

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_errors import AgentError
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_common import Liveness, check_endpoint, host_for_header, tls_context

# RFC 6455 section 1.3: the server proves it read the key by hashing it with this GUID.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_value(key):
    """The Sec-WebSocket-Accept a server must answer to Sec-WebSocket-Key `key` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")


def parse_response_head(head):
    """The status code, the status line, and the header fields (lower-case names; repeated fields
    joined with commas, RFC 7230 3.2.2) of an HTTP response head."""
    lines = head.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise AgentError("WebSocket handshake failed: not an HTTP answer: %r" % status_line[:80])
    headers = {}
    for line in lines[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        name, value = name.strip().lower(), value.strip()
        headers[name] = "%s, %s" % (headers[name], value) if name in headers else value
    return int(parts[1]), status_line, headers


def check_handshake(head, key):
    """Fails unless the server's opening handshake answer is what RFC 6455 4.1 requires of a
    server the client asked for no extension and no subprotocol: 101, Upgrade: websocket,
    Connection naming upgrade, the Sec-WebSocket-Accept of our key, nothing unrequested."""
    code, status_line, headers = parse_response_head(head)
    if code != 101:
        raise AgentError("WebSocket handshake refused: %s" % status_line)
    upgrade = headers.get("upgrade")
    if upgrade is None or upgrade.lower() != "websocket":
        raise AgentError("WebSocket handshake failed: the agent answered 101 without Upgrade: websocket (Upgrade: %s)" % upgrade)
    connection = [t.strip().lower() for t in headers.get("connection", "").split(",")]
    if "upgrade" not in connection:
        raise AgentError("WebSocket handshake failed: the agent answered 101 without Connection: upgrade (Connection: %s)"
                         % headers.get("connection"))
    accept = headers.get("sec-websocket-accept")
    if accept != accept_value(key):
        raise AgentError("WebSocket handshake failed: Sec-WebSocket-Accept is %s, not the hash of the key sent (%s): "
                         "the answer is not from a WebSocket server that read this request" % (accept, accept_value(key)))
    if headers.get("sec-websocket-extensions"):
        raise AgentError("WebSocket handshake failed: the agent answered with an extension that was not asked for (%s)"
                         % headers["sec-websocket-extensions"])
    if headers.get("sec-websocket-protocol"):
        raise AgentError("WebSocket handshake failed: the agent answered with a subprotocol that was not asked for (%s)"
                         % headers["sec-websocket-protocol"])


class WebSocketTransport(object):
    """A minimal RFC 6455 client: text frames, masked, with ping answered by pong; its opening
    handshake is checked as the RFC requires (check_handshake)."""

    def __init__(self, url, token=None, ca_path=None, validate_certs=True, timeout=30, allow_insecure_token=False,
                 client_cert=None, client_key=None, connection_timeout=30):
        u, port = check_endpoint(url, token, allow_insecure_token, client_cert, client_key)
        self.url = url
        self.liveness = Liveness(url, connection_timeout)
        try:
            sock = socket.create_connection((u.hostname, port), timeout=timeout)
            if u.scheme == "wss":
                sock = tls_context(ca_path, validate_certs, client_cert, client_key).wrap_socket(sock, server_hostname=u.hostname)
        except (OSError, ssl.SSLError) as e:
            raise AgentError("cannot connect to %s: %s" % (url, e))
        self.sock = sock
        self._buf = b""
        try:
            self._handshake(u, port, token)
        except Exception as e:
            self.sock.close()
            # TLS 1.3 reports a refused client certificate at the first read, not at wrap_socket.
            if isinstance(e, OSError):
                raise AgentError("cannot connect to %s: %s" % (url, e))
            raise

    def _handshake(self, u, port, token):
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        headers = [
            "GET %s HTTP/1.1" % (u.path or "/"),
            "Host: %s:%d" % (host_for_header(u.hostname), port),
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: %s" % key,
            "Sec-WebSocket-Version: 13",
        ]
        if token:
            headers.append("Authorization: Bearer %s" % token)
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode("ascii"))
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > 65536:
                raise AgentError("WebSocket handshake failed: the answer's header is over 64 KiB")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AgentError("the agent closed the connection during the handshake")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        check_handshake(head.decode("latin-1"), key)

    def _frame(self, opcode, payload):
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack("!H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytearray(b ^ mask[i % 4] for i, b in enumerate(bytearray(payload)))
        self.sock.sendall(bytes(header) + mask + bytes(masked))

    def send(self, text):
        try:
            self._frame(0x1, text.encode("utf-8"))
        except OSError as e:
            raise AgentError("the connection to the agent failed: %s" % e)

    def _read(self, n, deadline):
        while len(self._buf) < n:
            wait = self.liveness.before_wait(deadline, lambda: self._frame(0x9, b"alive?"))
            self.sock.settimeout(wait)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                raise AgentError("the connection to the agent failed: %s" % e)
            if not chunk:
                raise AgentError("the agent closed the connection")
            self.liveness.heard()
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def receive(self, deadline):
        message = b""
        while True:
            b1, b2 = bytearray(self._read(2, deadline))
            fin, opcode, n = b1 & 0x80, b1 & 0x0F, b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2, deadline))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8, deadline))[0]
            payload = self._read(n, deadline)
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise AgentError("the agent closed the connection (%d %s)" % (code, payload[2:].decode("utf-8", "replace")))
            if opcode == 0x9:
                try:
                    self._frame(0xA, payload)
                except OSError as e:
                    raise AgentError("the connection to the agent failed: %s" % e)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if fin:
                return message.decode("utf-8")

    def close(self):
        try:
            self._frame(0x8, struct.pack("!H", 1000))
        except (OSError, ssl.SSLError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
