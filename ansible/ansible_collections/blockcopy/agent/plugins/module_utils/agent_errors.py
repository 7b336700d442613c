# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The collection client's errors: an agent's error answer, or a failure to reach the agent."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


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
