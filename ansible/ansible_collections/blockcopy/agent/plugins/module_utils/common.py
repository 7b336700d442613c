# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""Option specs and helpers shared by the collection's modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import env_fallback
from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentClient, AgentError, InsecureTokenError

CONNECTION_ARGS = dict(
    agent_command=dict(type="list", elements="str", default=["blockcopy-agent", "stdio"]),
    endpoint=dict(type="str", fallback=(env_fallback, ["BLOCKCOPY_ENDPOINT"])),
    token=dict(type="str", no_log=True, fallback=(env_fallback, ["BLOCKCOPY_TOKEN"])),
    ca_path=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    allow_insecure_token=dict(type="bool", default=False),
)

# Every job kind's end states (a commit below the top and a pull end as completed).
TERMINAL = ("pivoted", "finished", "completed", "cancelled", "failed")


def connect(module):
    try:
        return AgentClient.from_module_params(module.params)
    except InsecureTokenError as e:
        module.fail_json(msg=e.message, error="insecureToken")
    except AgentError as e:
        module.fail_json(msg="cannot reach blockcopy-agent: %s" % e.message, error=e.name)


def fail_agent(module, e, **extra):
    """fail_json with the agent's error name, message and data."""
    result = dict(msg=e.message, error=e.name, **extra)
    if e.code is not None:
        result["code"] = e.code
    for key in ("libvirt", "reason", "evidence", "job", "errors"):
        if key in e.data:
            result[key] = e.data[key]
    module.fail_json(**result)
