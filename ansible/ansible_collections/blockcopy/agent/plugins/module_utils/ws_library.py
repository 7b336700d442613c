# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The WebSocket transport over websocket-client (Debian's python3-websocket), a maintained RFC 6455
client, used wherever it can be imported."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ssl
import struct

try:
    # Another package named websocket may be installed: only one with websocket-client's API is used.
    import websocket as websocket_client
    HAS_WEBSOCKET_CLIENT = all(hasattr(websocket_client, a) for a in ("WebSocket", "ABNF", "WebSocketException"))
except ImportError:
    websocket_client = None
    HAS_WEBSOCKET_CLIENT = False

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_errors import AgentError
from ansible_collections.blockcopy.agent.plugins.module_utils.ws_common import Liveness, check_endpoint, tls_context


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
