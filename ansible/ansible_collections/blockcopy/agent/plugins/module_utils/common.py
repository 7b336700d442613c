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
    ca_path=dict(type="path", fallback=(env_fallback, ["BLOCKCOPY_CA"])),
    client_cert=dict(type="path", fallback=(env_fallback, ["BLOCKCOPY_CERT"])),
    client_key=dict(type="path", no_log=False, fallback=(env_fallback, ["BLOCKCOPY_KEY"])),
    validate_certs=dict(type="bool", default=True),
    allow_insecure_token=dict(type="bool", default=False),
)

# Every job kind's end states (a commit below the top and a pull end as completed).
TERMINAL = ("pivoted", "finished", "completed", "cancelled", "failed")


def check_bandwidth(module):
    """The bandwidth option as the agent's API takes it: an integer is bytes/s, a string with a unit
    is passed on to the agent's parser (the one behind the API and the CLI), which refuses junk.

    A string of digits is the integer it spells: Ansible's templating turns a number into a string
    (C("{{ 200 * 1024 * 1024 }}") arrives as C("209715200")), and this option always meant bytes/s,
    so it is no guess here. Booleans and fractions without a unit are refused."""
    value = module.params.get("bandwidth")
    if value is None:
        return
    if isinstance(value, bool) or isinstance(value, float):
        module.fail_json(msg="bandwidth must be an integer (bytes/s) or a string with a unit (100M, 1G), got %r" % (value,),
                         error="invalidParams")
    if isinstance(value, str) and value.strip().isdigit():
        module.params["bandwidth"] = int(value.strip())


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
