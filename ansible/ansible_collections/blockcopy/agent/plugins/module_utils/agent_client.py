# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""JSON-RPC 2.0 client for blockcopy-agent, standard library only.

Two transports:
  * stdio (default): runs ``blockcopy-agent stdio`` on the managed host and speaks
    newline-delimited JSON over its stdin/stdout. No port, no token: the caller already runs
    commands on the host. When a daemon owns the jobs there, the stdio command relays to it.
  * WebSocket: ``ws://`` or ``wss://`` endpoint with an optional bearer token and CA file,
    for use from the controller. Spoken with websocket-client (Debian's python3-websocket,
    ws_library.py) where it can be imported, else with the built-in RFC 6455 client
    (ws_builtin.py), whose opening handshake checks what section 4.1 of the RFC requires.

Modelled on ansible's own module_utils/connection.py: request ids are matched, and errors
are raised as an exception carrying the JSON-RPC code, message and data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import select
import shlex
import subprocess
import time

# The modules catch these from here, as they always have.
from ansible_collections.blockcopy.agent.plugins.module_utils.agent_errors import AgentError, InsecureTokenError  # pylint: disable=unused-import
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_builtin import WebSocketTransport
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_library import HAS_WEBSOCKET_CLIENT, LibraryWebSocketTransport

RETRYABLE_DEFAULT = ("recovering", "notReady", "tooManyJobs", "unavailable")

# Which WebSocket client to use: auto (websocket-client where importable), library or builtin.
# For tests and for working around a broken library; not a module option.
CLIENT_ENV = "BLOCKCOPY_WEBSOCKET_CLIENT"


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


def websocket_transport(url, client=None, **kwargs):
    """The WebSocket transport to url: websocket-client where it can be imported, else the built-in
    one; client (or the BLOCKCOPY_WEBSOCKET_CLIENT environment variable) may name library or builtin."""
    client = client or os.environ.get(CLIENT_ENV) or "auto"
    if client not in ("auto", "library", "builtin"):
        raise AgentError("%s must be auto, library or builtin, got %s" % (CLIENT_ENV, client))
    if client == "library" and not HAS_WEBSOCKET_CLIENT:
        raise AgentError("%s=library, but websocket-client cannot be imported here (apt-get install python3-websocket)" % CLIENT_ENV)
    if client == "library" or (client == "auto" and HAS_WEBSOCKET_CLIENT):
        return LibraryWebSocketTransport(url, **kwargs)
    return WebSocketTransport(url, **kwargs)


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
            transport = websocket_transport(
                params["endpoint"], token=params.get("token"), ca_path=params.get("ca_path"),
                validate_certs=params.get("validate_certs", True),
                client_cert=params.get("client_cert"), client_key=params.get("client_key"),
                allow_insecure_token=params.get("allow_insecure_token", False),
                connection_timeout=params.get("connection_timeout") or 30)
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
