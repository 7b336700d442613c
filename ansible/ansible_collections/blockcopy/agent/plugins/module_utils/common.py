# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""Option specs and helpers shared by the collection's modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from contextlib import contextmanager

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.six import string_types
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
    connection_timeout=dict(type="int", default=30),
)

# Result keys whose values are data, not the agent's field names: their keys stay as they are, at
# any depth. The agent's answers have no such maps (every object in its schemas has fixed
# properties), but the modules' own diffs do (disk_snapshot's is keyed by disk target, which a
# guest may spell with capitals), and they are built in snake_case already.
DATA_KEYS = frozenset(["diff"])

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_key(key):
    """The agent's camelCase field name in Ansible's snake_case: jobId -> job_id, matchesLive -> matches_live."""
    if not isinstance(key, string_types):
        return key
    return _CAMEL.sub("_", key).lower()


def snake_result(value, data_keys=DATA_KEYS):
    """A module result with every key the agent named in camelCase in snake_case, recursively
    (through dicts and lists); values are never changed (a job's kind stays activeCommit), and the
    values of data_keys are left exactly as they are."""
    if isinstance(value, dict):
        return dict((snake_key(k), v if k in data_keys else snake_result(v, data_keys)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [snake_result(v, data_keys) for v in value]
    return value


class AgentModule(AnsibleModule):
    """AnsibleModule whose results (exit_json and fail_json) carry snake_case keys: the one place
    where the agent's camelCase answers (jobs, groups, plans, error data) become Ansible results."""

    def exit_json(self, **kwargs):
        super(AgentModule, self).exit_json(**snake_result(kwargs))

    def fail_json(self, msg, **kwargs):
        super(AgentModule, self).fail_json(msg=msg, **snake_result(kwargs))


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


@contextmanager
def agent_session(module, **fail_extra):
    """A connection to the agent for the with-block, closed at its end; an agent's error inside
    fails the module with it (fail_agent, with fail_extra)."""
    client = connect(module)
    try:
        yield client
    except AgentError as e:
        fail_agent(module, e, **fail_extra)
    finally:
        client.close()


def fail_agent(module, e, **extra):
    """fail_json with the agent's error name, message and data."""
    result = dict(msg=e.message, error=e.name, **extra)
    if e.code is not None:
        result["code"] = e.code
    for key in ("libvirt", "reason", "evidence", "job", "errors"):
        if key in e.data:
            result[key] = e.data[key]
    module.fail_json(**result)


def job_or_none(client, ref):
    """The job jobInfo names by ref (jobId, or domain and disk: its running job, else its latest), or
    None when the agent knows none."""
    try:
        return client.call("jobInfo", ref)["job"]
    except AgentError as e:
        if e.name == "noJob":
            return None
        raise


def require_daemon(module, client, what):
    """A goal the agent reaches after the module returns (wait=false) needs an agent that outlives
    this connection: a `blockcopy-agent stdio` serving alone exits with the module. (An endpoint
    is a serving agent.)"""
    p = module.params
    if p.get("endpoint"):
        return
    if client.call("capabilities")["agent"].get("mode", "stdio") != "daemon":
        command = " ".join(p.get("agent_command") or ["blockcopy-agent", "stdio"])
        module.fail_json(msg="wait=false cannot %s: no blockcopy-agent daemon runs on this host, and the agent started for this task "
                         "(%s) exits with it, so nothing would act when the job gets there. Start the service "
                         "(systemctl start blockcopy-agent), or use wait=true (with async/poll for long jobs)" % (what, command),
                         error="noDaemon", changed=False)


def carry_out(module, client, d, job):
    """The actions of a decision (module_utils/decide.py) every job module carries out alike:
    fail, the daemon check, done, abort and wait. Returns (changed, job, msg), or None when the
    module's own action (start, a switch, ...) is due."""
    p = module.params
    if d.action == "fail":
        module.fail_json(msg=d.msg, error=d.error, job=d.job, changed=False)
    if getattr(d, "needs_daemon", None):
        require_daemon(module, client, d.needs_daemon)
    if d.action == "done":
        return d.changed, d.job, d.msg
    if d.action == "abort":
        r = client.call_retrying("abort", {"jobId": job["jobId"]}, timeout=p["timeout"])
        return r["changed"], r["job"], d.msg
    if d.action == "wait":
        job = client.call_retrying("wait", {"jobId": job["jobId"], "until": d.until, "timeout": p["timeout"]}, timeout=p["timeout"])["job"]
        return False, job, d.msg % {"state": job["state"]}
    return None
