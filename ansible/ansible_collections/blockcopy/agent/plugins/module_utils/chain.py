# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""A disk's backing chain as libvirt's live XML shows it, for the snapshot, commit and pull
modules' idempotency and check mode (the agent has no method that reads a disk's chain).
Read with ``virsh dumpxml`` on the host the module runs on; standard library only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import xml.etree.ElementTree as ET

from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentError

CHAIN_ARGS = dict(
    libvirt_uri=dict(type="str", default="qemu:///system"),
)

NAME = re.compile(r"^([A-Za-z0-9_]+)\[(\d+)\]$")


def _layer(source, fmt, index):
    path = None
    if source is not None:
        path = source.get("file") or source.get("dev")
    if index is None and source is not None:
        index = source.get("index")
    return {"path": path, "format": fmt.get("type") if fmt is not None else None,
            "index": int(index) if index is not None else None}


def parse_chain(xml_text, disk):
    """The chain of disk `disk` in a domain XML, active layer first; None without such a disk."""
    root = ET.fromstring(xml_text)
    for d in root.findall("./devices/disk"):
        target = d.find("target")
        if target is None or target.get("dev") != disk:
            continue
        layers = [_layer(d.find("source"), d.find("driver"), None)]
        node = d.find("backingStore")
        while node is not None and node.find("source") is not None:
            layers.append(_layer(node.find("source"), node.find("format"), node.get("index")))
            node = node.find("backingStore")
        return layers
    return None


def live_chain(module):
    """The live chain of the module's disk (list of layers, active first), or None when it cannot
    be read here: an I(endpoint) run on the controller, or no virsh on this host."""
    p = module.params
    if p.get("endpoint"):
        return None
    virsh = module.get_bin_path("virsh")
    if virsh is None:
        return None
    rc, out, err = module.run_command([virsh, "-c", p["libvirt_uri"], "dumpxml", "--domain", p["domain"]])
    if rc != 0:
        # virsh says "failed to get domain" for a domain libvirt does not know; anything else is libvirt's own failure.
        error = "notFound" if "failed to get domain" in err else "libvirtError"
        module.fail_json(msg="cannot read the domain %s with virsh: %s" % (p["domain"], err.strip()), error=error, changed=False)
    layers = parse_chain(out, p["disk"])
    if layers is None:
        module.fail_json(msg="domain %s has no disk %s" % (p["domain"], p["disk"]), error="notFound", changed=False)
    return layers


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
    try:
        return client.call("jobInfo", {"domain": domain, "disk": disk})["job"]
    except AgentError as e:
        if e.name == "noJob":
            return None
        raise


def job_view(job, chain):
    """What diff shows: the job's kind and state, and the disk's live chain."""
    out = {"state": job["state"] if job else "absent"}
    if job:
        out["kind"] = job["kind"]
    if chain is not None:
        out["chain"] = chain_view(chain)
    return out


def require_daemon(module, client, what):
    """A goal the agent reaches after the module returns (wait=false) needs an agent that outlives
    this connection: a `blockcopy-agent stdio` serving alone exits with the module."""
    if module.params["endpoint"]:
        return
    if client.call("capabilities")["agent"].get("mode", "stdio") != "daemon":
        module.fail_json(msg="wait=false cannot %s: no blockcopy-agent daemon runs on this host, and the agent started for this "
                         "task exits with it. Start the service (systemctl start blockcopy-agent), or use wait=true" % what,
                         error="noDaemon", changed=False)
