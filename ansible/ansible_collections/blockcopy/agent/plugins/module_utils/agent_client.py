# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""JSON-RPC 2.0 client for blockcopy-agent, standard library only.

Two transports:
  * stdio (default): runs ``blockcopy-agent stdio`` on the managed host and speaks
    newline-delimited JSON over its stdin/stdout. No port, no token: the caller already runs
    commands on the host. When a daemon owns the jobs there, the stdio command relays to it.
  * WebSocket: ``ws://`` or ``wss://`` endpoint with an optional bearer token and CA file,
    for use from the controller. Spoken with websocket-client (Debian's python3-websocket)
    where it can be imported, else with the RFC 6455 client below, whose opening handshake
    checks what section 4.1 of the RFC requires of a client.

Modelled on ansible's own module_utils/connection.py: request ids are matched, and errors
are raised as an exception carrying the JSON-RPC code, message and data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
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

try:
    # websocket-client, a maintained RFC 6455 client (Debian: python3-websocket). Another package
    # named websocket may be installed: only one with websocket-client's API is used.
    import websocket as websocket_client
    HAS_WEBSOCKET_CLIENT = all(hasattr(websocket_client, a) for a in ("WebSocket", "ABNF", "WebSocketException"))
except ImportError:
    websocket_client = None
    HAS_WEBSOCKET_CLIENT = False


RETRYABLE_DEFAULT = ("recovering", "notReady", "tooManyJobs", "unavailable")

# RFC 6455 section 1.3: the server proves it read the key by hashing it with this GUID.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Which WebSocket client to use: auto (websocket-client where importable), library or builtin.
# For tests and for working around a broken library; not a module option.
CLIENT_ENV = "BLOCKCOPY_WEBSOCKET_CLIENT"


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


def tls_context(ca_path=None, validate_certs=True, client_cert=None, client_key=None):
    """The TLS client context of a wss:// endpoint, the same for both WebSocket clients."""
    ctx = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
    if not validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def check_endpoint(url, token, allow_insecure_token, client_cert, client_key):
    """The checks both WebSocket clients make before connecting; returns the parsed URL and port."""
    u = urlparse(url)
    if u.scheme not in ("ws", "wss"):
        raise AgentError("endpoint must be ws:// or wss://, got %s" % url)
    # Before any byte is sent: the token must not cross the network readable by anyone on the path.
    check_token_transport(url, token, allow_insecure_token)
    if (client_cert is None) != (client_key is None):
        raise AgentError("client_cert and client_key go together")
    if client_cert and u.scheme != "wss":
        raise AgentError("client_cert needs a wss:// endpoint, got %s" % url)
    return u, u.port or (443 if u.scheme == "wss" else 80)


def host_for_header(hostname):
    """A host name as the Host header carries it (an IPv6 address in brackets)."""
    return "[%s]" % hostname if ":" in hostname else hostname


class Liveness(object):
    """A peer gone silent (its host cut off, powered off, a firewall dropping packets) sends no FIN
    or RST: without this bound a call would wait for its whole deadline (hours for a copy). Both
    WebSocket clients ping after a third of connection_timeout; any frame from the agent counts
    as life, and nothing for connection_timeout is a lost connection."""

    def __init__(self, url, connection_timeout):
        self.url = url
        self.connection_timeout = connection_timeout
        self.ping_every = max(connection_timeout / 3.0, 0.2)
        self.heard()

    def heard(self):
        self.last = time.time()
        self.next_ping = self.last + self.ping_every

    def before_wait(self, deadline, ping):
        """Fails if the call's deadline passed or the peer is silent; pings when due (ping() sends
        one); returns how long the next read may wait."""
        now = time.time()
        left = deadline - now
        if left <= 0:
            raise AgentError("no answer from the agent in time")
        if now - self.last >= self.connection_timeout:
            raise AgentError("lost the connection to the agent at %s: nothing received for %d s, not even an answer "
                             "to a ping (its host or the network is down); what the agent was doing goes on there, "
                             "run the task again once it is reachable" % (self.url, now - self.last))
        if now >= self.next_ping:
            try:
                ping()
            except (OSError, ssl.SSLError) as e:
                raise AgentError("the connection to the agent failed: %s" % e)
            self.next_ping = now + self.ping_every
        return max(min(left, self.next_ping - now, self.last + self.connection_timeout - now), 0.05)


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


class LibraryWebSocketTransport(object):
    """The WebSocket transport on websocket-client (python3-websocket): the library does the
    framing and checks the opening handshake (status, Upgrade, Connection, Sec-WebSocket-Accept;
    an unrequested extension or subprotocol is refused here);
    token, TLS and mTLS are set up exactly as for the built-in client. No Origin header is sent
    (the agent refuses a foreign one) and no proxy from the environment is used (the built-in
    client uses none either)."""

    def __init__(self, url, token=None, ca_path=None, validate_certs=True, timeout=30, allow_insecure_token=False,
                 client_cert=None, client_key=None, connection_timeout=30):
        u, port = check_endpoint(url, token, allow_insecure_token, client_cert, client_key)
        self.liveness = Liveness(url, connection_timeout)
        sslopt = {}
        if u.scheme == "wss":
            try:
                sslopt = {"context": tls_context(ca_path, validate_certs, client_cert, client_key),
                          "check_hostname": bool(validate_certs)}
            except (OSError, ssl.SSLError) as e:
                raise AgentError("cannot connect to %s: %s" % (url, e))
        header = ["Authorization: Bearer %s" % token] if token else []
        self.ws = websocket_client.WebSocket(sslopt=sslopt)
        try:
            self.ws.connect(url, header=header, timeout=timeout, suppress_origin=True, http_no_proxy=["*"])
        except websocket_client.WebSocketBadStatusException as e:
            self._close_quietly()
            raise AgentError("WebSocket handshake refused: %s" % e)
        except websocket_client.WebSocketException as e:
            self._close_quietly()
            raise AgentError("WebSocket handshake failed: %s" % e)
        except (OSError, ssl.SSLError) as e:
            # TLS 1.3 reports a refused client certificate at the first read, as in the built-in client.
            self._close_quietly()
            raise AgentError("cannot connect to %s: %s" % (url, e))
        # The library checks status, Upgrade, Connection and Sec-WebSocket-Accept; what it does not
        # check of RFC 6455 4.1 (an extension or subprotocol that was not asked for) is checked here.
        headers = dict((k.lower(), v) for k, v in (self.ws.getheaders() or {}).items())
        for field, what in (("sec-websocket-extensions", "an extension"), ("sec-websocket-protocol", "a subprotocol")):
            if headers.get(field):
                self._close_quietly()
                raise AgentError("WebSocket handshake failed: the agent answered with %s that was not asked for (%s)" % (what, headers[field]))

    def _ping(self):
        try:
            self.ws.ping("alive?")
        except websocket_client.WebSocketException as e:
            raise AgentError("the connection to the agent failed: %s" % e)

    def _close_quietly(self):
        try:
            self.ws.shutdown()
        except Exception:  # pylint: disable=broad-except
            pass

    def send(self, text):
        try:
            self.ws.send(text)
        except (websocket_client.WebSocketException, OSError) as e:
            raise AgentError("the connection to the agent failed: %s" % e)

    def receive(self, deadline):
        abnf = websocket_client.ABNF
        while True:
            self.ws.settimeout(self.liveness.before_wait(deadline, self._ping))
            try:
                # Pings are answered by the library; control frames are returned to see a close.
                opcode, frame = self.ws.recv_data_frame(control_frame=True)
            except websocket_client.WebSocketTimeoutException:
                continue
            except websocket_client.WebSocketConnectionClosedException:
                raise AgentError("the agent closed the connection")
            except (websocket_client.WebSocketException, OSError) as e:
                raise AgentError("the connection to the agent failed: %s" % e)
            self.liveness.heard()
            if opcode == abnf.OPCODE_CLOSE:
                data = frame.data or b""
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                raise AgentError("the agent closed the connection (%d %s)" % (code, data[2:].decode("utf-8", "replace")))
            if opcode in (abnf.OPCODE_PING, abnf.OPCODE_PONG):
                continue
            # A whole message: recv_data_frame joins continuation frames until fin.
            data = frame.data
            return data.decode("utf-8") if isinstance(data, bytes) else data

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # pylint: disable=broad-except
            pass
        self._close_quietly()


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
