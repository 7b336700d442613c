# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""What both WebSocket transports share: where a bearer token may go in clear text (loopback only),
the TLS context, the endpoint's checks, and the liveness rule for a silent peer."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl
import time

try:
    from urllib.parse import urlparse
except ImportError:  # pragma: no cover - python 2
    from urlparse import urlparse

try:
    import ipaddress
except ImportError:  # pragma: no cover - python 2 without the backport
    ipaddress = None

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_errors import AgentError, InsecureTokenError


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
