#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_move
short_description: Move every disk of a running VM to a directory or storage pool in one task
version_added: "0.2.0"
description:
  - Drives C(blockcopy-agent) on the managed host to move all disks of a running domain (or the
    ones I(disks) names) to a directory or a libvirt storage pool, as one group (the agent's
    C(blockCopyGroup) with C(target)) - every copy ready together, then all pivoted (or finished)
    during one short pause of the guest.
  - The disks moved by default are the domain's device disks of type file, block or volume that
    have a source; cdroms, floppies, LUNs, empty drives and network disks are left where they are.
  - "Each new file is named C(<domain>-<disk>.<format>) (for example C(vm1-vda.qcow2), C(vm1-vdb.raw))
    in the target directory, and keeps its source's format unless I(format) is given. A file of that
    name that already exists is never overwritten: the task fails with C(error=destinationRejected)
    before any copy starts."
  - A pool must be listed in the agent's C(allowedPools) configuration and be of type C(dir), C(fs)
    or C(netfs); its target path is read from libvirt and must pass the agent's destination policy
    like any destination. The agent refreshes the pool once the copies have started.
  - Idempotent - a disk whose source already is in the target directory is not copied again
    (listed in C(already_there)), so a rerun after the move reports C(changed=false).
  - C(changed) is true exactly when the run started a move or pivoted/finished one.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.bandwidth
attributes:
  check_mode:
    support: full
    description: Asks the agent for the move's plan (C(dryRun)) and reports what would change; starts nothing.
  diff_mode:
    support: none
    description: Reports the plan and the group instead of a diff.
options:
  domain:
    description:
      - Name or UUID of the running domain.
    type: str
    required: true
  dir:
    description:
      - Absolute path of the directory every disk moves to. Exactly one of I(dir) and I(pool).
    type: path
  pool:
    description:
      - Name of a libvirt storage pool (listed in the agent's C(allowedPools)) every disk moves to.
    type: str
  disks:
    description:
      - Targets of the disks to move (for example C([vda, vdb])). Default - every disk a move can copy.
    type: list
    elements: str
  remove_source:
    description:
      - With I(state=pivoted) - once the pivot is verified, delete each disk's old files the guest no
        longer uses (the old source and its backing layers, since a move is a full copy), each only if no
        domain (running or defined) uses it by identity, it is a regular file under the agent's
        destination policy and not a block device. Files kept are listed in RV(kept) with the reason
        (for example a base image another VM uses).
    type: bool
    default: false
  format:
    description:
      - Format of every new file. Default - each disk keeps its source's format.
    type: str
    choices: [raw, qcow2]
  state:
    description:
      - C(pivoted) - the guest runs on the new files (every disk switched during one pause).
      - C(ready) - the copies run and mirror, ready together; the guest still uses its sources.
      - C(finished) - the new files hold one consistent point-in-time copy; the guest stays on its sources.
    type: str
    choices: [pivoted, ready, finished]
    default: pivoted
  wait:
    description:
      - Wait until the disks are where I(state) says. With C(false) the task returns once the copies
        have started and the agent pivots or finishes by itself when all are ready (this needs the
        agent's daemon, or I(endpoint); see M(blockcopy.agent.block_copy)).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait. A move whose copies are not all ready in time is cancelled by the agent and
        the task fails with C(error=timeout).
    type: int
    default: 3600
  max_pause:
    description:
      - Seconds the guest may stay paused while every disk is switched.
    type: int
  group_id:
    description:
      - Idempotency key for the group; the same key again refers to the same move.
    type: str
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - The old files are left in place.
seealso:
  - module: blockcopy.agent.block_copy
'''

EXAMPLES = r'''
- name: Move every disk of vm1 to the pool "fast" and switch the guest onto the new files
  blockcopy.agent.block_move:
    domain: vm1
    pool: fast
    timeout: 14400

- name: Move two disks to a directory, converting them to qcow2
  blockcopy.agent.block_move:
    domain: vm1
    dir: /srv/pool-b
    disks: [vda, vdb]
    format: qcow2

- name: Start mirroring every disk now, pivot later in the maintenance window
  blockcopy.agent.block_move:
    domain: vm1
    pool: fast
    state: ready
'''

RETURN = r'''
group:
  description: The move's group as the agent reports it, keys in snake_case (group_id, state, jobs per disk, overall progress, last_switch).
  returned: when a move was started or found under way
  type: dict
  sample: {group_id: 6b0f, state: pivoted, progress: {cur: 2147483648, end: 2147483648, percent: 100}}
plan:
  description: The disks the move copies, each with its source, new file and format.
  returned: always
  type: list
  elements: dict
  sample: [{disk: vda, source: /var/lib/libvirt/images/vm1.raw, destination: /srv/fast/vm1-vda.raw, format: raw}]
already_there:
  description: The disks whose source already is in the target directory (not copied).
  returned: always
  type: list
  elements: dict
  sample: [{disk: vda, path: /srv/fast/vm1-vda.raw}]
removed:
  description: With I(remove_source), the old files deleted after the pivot.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/vm1.raw]
kept:
  description: With I(remove_source), the old files kept, each with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{path: /var/lib/libvirt/images/base.qcow2, reason: "used by domain vm2 (/var/lib/libvirt/images/base.qcow2)"}]
pool:
  description: With I(pool), its name, target path and whether the agent refreshed it.
  returned: with pool
  type: dict
  sample: {name: fast, path: /srv/fast, refreshed: true}
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: moved 3 disk(s) of vm1 to /srv/fast
error:
  description: >-
    The error's name on failure - the agent's (notFound, destinationRejected, jobExists, timeout,
    libvirtError, ...), transport when the agent could not be reached, or noDaemon.
  returned: failed
  type: str
  sample: destinationRejected
reason:
  description: The agent's reason for a refusal (for example a pool not listed in allowedPools).
  returned: when the agent gives one
  type: str
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session, check_bandwidth, require_daemon
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import MOVE_WHEN_READY, move_decision


def move_params(p, dry_run=False):
    target = {"dir": p["dir"]} if p["dir"] else {"pool": p["pool"]}
    if p["format"]:
        target["format"] = p["format"]
    params = {"domain": p["domain"], "target": target}
    if p["disks"] is not None:
        params["disks"] = p["disks"]
    if dry_run:
        params["dryRun"] = True
        return params
    params["whenReady"] = MOVE_WHEN_READY[p["state"]]
    params["wait"] = "none" if not p["wait"] else ("ready" if p["state"] == "ready" else "done")
    params["timeout"] = p["timeout"]
    if p["remove_source"] and p["state"] == "pivoted":
        params["removeSource"] = True
    if p["bandwidth"] is not None:
        params["bandwidth"] = p["bandwidth"]
    if p["max_pause"] is not None:
        params["maxPause"] = p["max_pause"]
    if p["group_id"]:
        params["groupId"] = p["group_id"]
    return params


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        dir=dict(type="path"),
        pool=dict(type="str"),
        disks=dict(type="list", elements="str"),
        format=dict(type="str", choices=["raw", "qcow2"]),
        state=dict(type="str", default="pivoted", choices=["pivoted", "ready", "finished"]),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
        max_pause=dict(type="int"),
        group_id=dict(type="str"),
        remove_source=dict(type="bool", default=False),
        bandwidth=dict(type="raw"),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("dir", "pool")],
        required_one_of=[("dir", "pool")],
    )
    check_bandwidth(module)
    p = module.params
    if p["dir"] is not None and not p["dir"].startswith("/"):
        module.fail_json(msg="dir must be an absolute path, got %s" % p["dir"], error="invalidParams")
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive", error="invalidParams")
    if p["remove_source"] and p["state"] != "pivoted":
        module.fail_json(msg="remove_source applies to state=pivoted, not %s" % p["state"], error="invalidParams")

    with agent_session(module, changed=False) as client:
        plan = client.call_retrying("blockCopyGroup", move_params(p, dry_run=True), timeout=p["timeout"])
        d = move_decision(p, plan, module.check_mode)
        result, changed = plan, d.changed
        if d.needs_daemon:
            require_daemon(module, client, d.needs_daemon)
        if d.action == "resume":
            # A move found under way that will not switch by itself: wait for ready, then switch.
            ready = dict(move_params(p), whenReady=d.when_ready, wait="ready")
            client.call_retrying("blockCopyGroup", ready, timeout=p["timeout"])
            switch_params = {"groupId": d.group_id}
            if d.remove_source:
                switch_params["removeSource"] = True
            done = client.call_retrying(d.method, switch_params, timeout=p["timeout"])
            result, changed = dict(plan, group=done["group"]), done["changed"]
        elif d.action == "move":
            result = client.call_retrying("blockCopyGroup", move_params(p), timeout=p["timeout"])
            changed = result["changed"]
        msg = d.msg % {"count": len(result.get("plan", []))} if d.action != "done" else d.msg
    out = dict(changed=changed, msg=msg, plan=result.get("plan", []), already_there=result.get("alreadyThere", []), removed=[], kept=[])
    for job in (result.get("group") or {}).get("jobs", []):
        cleanup = job.get("cleanup") or {}
        out["removed"].extend(cleanup.get("removed", []))
        out["kept"].extend(cleanup.get("kept", []))
    if result.get("group") is not None:
        out["group"] = result["group"]
    if result.get("pool") is not None:
        out["pool"] = result["pool"]
    module.exit_json(**out)


if __name__ == "__main__":
    main()
