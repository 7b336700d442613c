# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""JSON-RPC 2.0 client for blockcopy-agent, standard library only.

Two transports:
  * stdio (default): runs ``blockcopy-agent stdio`` on the managed host and speaks
    newline-delimited JSON over its stdin/stdout. No port, no token: the caller already runs
    commands on the host. When a daemon owns the jobs there, the stdio command relays to it.
  * WebSocket: ``ws://`` or ``wss://`` endpoint with an optional bearer token and CA file,
    for use from the controller.

Modelled on ansible's own module_utils/connection.py: request ids are matched, and errors
are raised as an exception carrying the JSON-RPC code, message and data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import select
import shlex
import socket
import ssl
import struct
import subprocess
import time

try:
    from urllib.parse import urlparse
except ImportError:  # pragma: no cover - python 2
    from urlparse import urlparse

try:
    import ipaddress
except ImportError:  # pragma: no cover - python 2 without the backport
    ipaddress = None


RETRYABLE_DEFAULT = ("recovering", "notReady", "tooManyJobs", "unavailable")


class AgentError(Exception):
    """An error answer from the agent, or a failure to talk to it."""

    def __init__(self, message, code=None, data=None):
        super(AgentError, self).__init__(message)
        self.message = message
        self.code = code
        self.data = data or {}

    @property
    def name(self):
        """The agent's stable error name (e.g. notFound), or 'transport' when the agent was not reached."""
        if self.code is None:
            return "transport"
        return self.data.get("name") or {
            -32700: "parseError", -32600: "invalidRequest", -32601: "methodNotFound",
            -32602: "invalidParams", -32603: "internalError",
        }.get(self.code, "error")

    @property
    def retryable(self):
        return bool(self.data.get("retryable"))


class InsecureTokenError(AgentError):
    """A bearer token would cross the network in clear text (ws:// to a host that is not loopback)."""


def _is_loopback_address(addr):
    addr = addr.split("%", 1)[0]
    if ipaddress is not None:
        try:
            ip = ipaddress.ip_address(u"%s" % addr)
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return (mapped or ip).is_loopback
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")


def is_loopback_host(host):
    """True when every address the host name resolves to is loopback (as the agent's own listener decides)."""
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return len(infos) > 0 and all(_is_loopback_address(info[4][0]) for info in infos)


def check_token_transport(url, token, allow_insecure_token=False):
    """Refuses a bearer token over plain ws:// to a host that is not loopback, unless allowed."""
    u = urlparse(url)
    if token and u.scheme == "ws" and not allow_insecure_token and not is_loopback_host(u.hostname):
        raise InsecureTokenError(
            "refusing to send the bearer token in clear text over ws:// to %s, which is not a loopback address: "
            "use a wss:// endpoint (with ca_path), or set allow_insecure_token: true to send it anyway" % u.hostname)


class StdioTransport(object):
    """Newline-delimited JSON over a child process's stdin/stdout."""

    def __init__(self, command):
        if isinstance(command, str):
            command = shlex.split(command)
        self.command = list(command)
        try:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True)
        except OSError as e:
            raise AgentError("cannot run %s: %s" % (" ".join(self.command), e))
        self._buf = b""

    def send(self, text):
        try:
            self.proc.stdin.write(text.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except (IOError, OSError) as e:
            raise AgentError("the agent closed its input: %s%s" % (e, self._stderr_tail()))

    def receive(self, deadline):
        while b"\n" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise AgentError("no answer from the agent in time")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                # stdout closes a moment before the process can be reaped; wait for it so
                # that its exit status and last stderr line reach the caller.
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                raise AgentError("the agent exited (%s)%s" % (self.proc.poll(), self._stderr_tail()))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8")

    def _stderr_tail(self):
        if self.proc.poll() is None:
            return ""
        try:
            err = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        except (IOError, OSError, ValueError):
            return ""
        return (": " + err[-1]) if err else ""

    def close(self):
        try:
            self.proc.stdin.close()
        except (IOError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (IOError, OSError):
                pass


class WebSocketTransport(object):
    """A minimal RFC 6455 client: text frames, masked, with ping answered by pong."""

    def __init__(self, url, token=None, ca_path=None, validate_certs=True, timeout=30, allow_insecure_token=False,
                 client_cert=None, client_key=None):
        u = urlparse(url)
        if u.scheme not in ("ws", "wss"):
            raise AgentError("endpoint must be ws:// or wss://, got %s" % url)
        # Before any byte is sent: the token must not cross the network readable by anyone on the path.
        check_token_transport(url, token, allow_insecure_token)
        port = u.port or (443 if u.scheme == "wss" else 80)
        if (client_cert is None) != (client_key is None):
            raise AgentError("client_cert and client_key go together")
        if client_cert and u.scheme != "wss":
            raise AgentError("client_cert needs a wss:// endpoint, got %s" % url)
        try:
            sock = socket.create_connection((u.hostname, port), timeout=timeout)
            if u.scheme == "wss":
                ctx = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
                if not validate_certs:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if client_cert:
                    ctx.load_cert_chain(client_cert, client_key)
                sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
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
            "Host: %s:%d" % (u.hostname, port),
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: %s" % key,
            "Sec-WebSocket-Version: 13",
        ]
        if token:
            headers.append("Authorization: Bearer %s" % token)
        self.sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode("ascii"))
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AgentError("the agent closed the connection during the handshake")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise AgentError("WebSocket handshake refused: %s" % status.decode("latin-1"))

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
            left = deadline - time.time()
            if left <= 0:
                raise AgentError("no answer from the agent in time")
            self.sock.settimeout(min(left, 5.0))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                raise AgentError("the connection to the agent failed: %s" % e)
            if not chunk:
                raise AgentError("the agent closed the connection")
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


class AgentClient(object):
    """Calls agent methods; notifications arriving in between are skipped."""

    def __init__(self, transport, call_timeout=3600):
        self.transport = transport
        self.call_timeout = call_timeout
        self._next_id = 1

    @classmethod
    def from_module_params(cls, params):
        """Builds a client from the common module options (agent_command, endpoint, token, …)."""
        if params.get("endpoint"):
            transport = WebSocketTransport(
                params["endpoint"], token=params.get("token"), ca_path=params.get("ca_path"),
                validate_certs=params.get("validate_certs", True),
                client_cert=params.get("client_cert"), client_key=params.get("client_key"),
                allow_insecure_token=params.get("allow_insecure_token", False))
        else:
            transport = StdioTransport(params.get("agent_command") or ["blockcopy-agent", "stdio"])
        return cls(transport)

    def call(self, method, params=None, timeout=None):
        request_id = self._next_id
        self._next_id += 1
        self.transport.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}))
        deadline = time.time() + (timeout or self.call_timeout)
        while True:
            text = self.transport.receive(deadline)
            try:
                msg = json.loads(text)
            except ValueError:
                raise AgentError("the agent sent something that is not JSON: %r" % text[:200])
            if not isinstance(msg, dict) or msg.get("id") != request_id:
                continue  # a notification, or an answer to something else
            if "error" in msg:
                err = msg["error"] or {}
                raise AgentError(err.get("message", "error"), err.get("code"), err.get("data"))
            return msg.get("result")

    def call_retrying(self, method, params, timeout, retry_on=RETRYABLE_DEFAULT, sleep=time.sleep):
        """Retries errors the agent marks retryable (and names in retry_on) until timeout."""
        deadline = time.time() + timeout
        delay = 0.5
        while True:
            try:
                return self.call(method, params, timeout=max(deadline - time.time(), 1) + 30)
            except AgentError as e:
                if not (e.retryable and e.name in retry_on) or time.time() + delay > deadline:
                    raise
                sleep(delay)
                delay = min(delay * 2, 10)

    def close(self):
        self.transport.close()
