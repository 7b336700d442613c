# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""A disk's backing chain as libvirt's live XML shows it (the agent's diskInfo), for the
snapshot, commit and pull modules' idempotency and check mode; standard library only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentError
from ansible_collections.blockcopy.agent.plugins.module_utils.common import job_or_none

# The chain modules' own options beyond the connection's (none: the agent reads the chain).
CHAIN_ARGS = dict()

NAME = re.compile(r"^([A-Za-z0-9_]+)\[(\d+)\]$")


def live_chain(module):
    """The live chain of the module's disk (list of layers, active first), read from the agent
    (diskInfo: libvirt's live XML, with its image indexes); fails the module with the agent's
    error name when it cannot be read."""
    # Imported here: the layer helpers below stay usable (and unit-testable) without Ansible.
    from ansible_collections.blockcopy.agent.plugins.module_utils.common import connect, fail_agent

    p = module.params
    client = connect(module)
    try:
        info = client.call("diskInfo", {"domain": p["domain"], "disk": p["disk"]})
    except AgentError as e:
        fail_agent(module, e, changed=False)
    finally:
        client.close()
    return [{"path": l["path"], "format": l["format"], "index": l["index"]} for l in info["chain"]]


def same_path(a, b):
    return a is not None and b is not None and os.path.normpath(a) == os.path.normpath(b)


def names_layer(spec, layer, disk):
    """Whether a path or a libvirt DISK[N] name designates `layer` (a chain layer dict)."""
    if spec is None or layer is None:
        return False
    m = NAME.match(spec)
    if m:
        return m.group(1) == disk and layer.get("index") == int(m.group(2))
    return same_path(spec, layer.get("path"))


def find_layer(chain, spec, disk):
    """Position of the layer `spec` names in `chain`, or None."""
    for i, layer in enumerate(chain or []):
        if names_layer(spec, layer, disk):
            return i
    return None


def disk_jobs(client, domain, disk, kinds):
    """The disk's jobs of these kinds the agent remembers, oldest first."""
    jobs = client.call("listJobs", {"domain": domain, "kind": list(kinds)})["jobs"]
    return [j for j in jobs if j["disk"] == disk]


def chain_view(chain):
    return [layer["path"] for layer in chain] if chain is not None else None


ACTIVE = ("copying", "ready", "pivoting", "finishing", "cancelling")


def disk_job(client, domain, disk):
    """The disk's running job of any kind, else its most recent one (None if the agent knows none)."""
    return job_or_none(client, {"domain": domain, "disk": disk})


def job_view(job, chain):
    """What diff shows: the job's kind and state, and the disk's live chain."""
    out = {"state": job["state"] if job else "absent"}
    if job:
        out["kind"] = job["kind"]
    if chain is not None:
        out["chain"] = chain_view(chain)
    return out
