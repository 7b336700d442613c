#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_copy
short_description: Move a running VM's disk with a libvirt live block copy
version_added: "0.1.0"
description:
  - Drives C(blockcopy-agent) on the managed host to copy a running domain's disk to a new
    destination while the guest keeps writing (QEMU's mirror job, what C(virsh blockcopy) does).
  - I(state) says where the disk should end up. The module is idempotent - the agent remembers
    jobs, so a second run with the same arguments reports C(changed=false).
  - Whether the disk is already where I(state) says is decided from where the disk runs now (the
    copy after a pivot, else the source its latest job started from) and from what became of the
    earlier copies to I(destination), not from the disk's latest job alone - a later backup
    (C(finished)) of a pivoted disk does not make a rerun of the pivot start a copy again.
  - C(changed) is true exactly when the run changed where the guest's disk lives or what runs on it
    (a copy started, pivoted, finished or aborted).
  - Errors the agent marks retryable (the agent still reconciling, QEMU not ready for a pivot,
    too many copies running) are retried until I(timeout).
  - Long copies can run with C(async)/C(poll); C(async) cannot be combined with check mode.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.bandwidth
attributes:
  check_mode:
    support: full
    description: Asks the agent for the current job and reports what would change; starts, pivots, finishes and aborts nothing.
  diff_mode:
    support: full
    description: Shows the job's state and destination before and after.
options:
  domain:
    description:
      - Name or UUID of the running domain.
    type: str
    required: true
  disk:
    description:
      - Target of the disk to copy, as in the domain XML (for example C(vda)).
    type: str
    required: true
  state:
    description:
      - C(ready) - a copy to I(destination) runs and mirrors (phase 2); the guest still uses its source.
      - C(pivoted) - the guest runs on I(destination) (copy, wait until ready, pivot).
      - C(finished) - I(destination) holds a consistent point-in-time copy; the guest stays on its source.
      - C(absent) - no copy job runs on the disk (a running one is aborted; the guest stays on its source).
        A commit or pull running on the disk is not aborted (the task fails with C(error=invalidState));
        use M(blockcopy.agent.block_commit) or M(blockcopy.agent.block_pull) with C(state=absent).
    type: str
    choices: [ready, pivoted, finished, absent]
    default: pivoted
  destination:
    description:
      - Absolute path of the destination file (or block device with I(type=block)).
      - Required unless I(state=absent) or I(destination_xml) is given.
    type: path
  format:
    description:
      - Image format of the destination. Required with I(reuse_external).
    type: str
    choices: [raw, qcow2]
  type:
    description:
      - C(file) for a regular file created by libvirt, C(block) for an existing block device.
    type: str
    choices: [file, block]
    default: file
  destination_xml:
    description:
      - The destination as a libvirt C(<disk>) element, instead of I(destination).
    type: str
  shallow:
    description:
      - Copy only the top image; the destination shares the source's backing chain.
    type: bool
    default: false
  reuse_external:
    description:
      - The destination already exists and is reused. Needs I(format).
    type: bool
    default: false
  transient_job:
    description:
      - Make the job transient (it does not survive a domain restart). The agent defaults to
        true for persistent domains.
    type: bool
  synchronous_writes:
    description:
      - Mirror guest writes synchronously, so the copy converges under heavy writes.
    type: bool
    default: false
  remove_source:
    description:
      - With I(state=pivoted) - once the pivot is verified, delete the files the guest no longer
        uses - the old source and, for a full (non-shallow) copy, its backing layers recorded
        when the copy started.
      - Each only if no domain (running or defined) uses it by identity, it is a regular file
        under the agent's destination policy and never a block device; the others are kept and
        reported with the reason in RV(job.cleanup.kept) (for example a base image another VM uses).
      - Journaled by the agent before the pivot, so a crash neither loses nor repeats a deletion.
    type: bool
    default: false
  granularity:
    description:
      - Dirty-bitmap granularity in bytes, a power of two from 512 to 67108864.
    type: int
  buf_size:
    description:
      - Copy buffer size in bytes.
    type: int
  job_id:
    description:
      - Idempotency key for the job; the same key again refers to the same job.
    type: str
  wait:
    description:
      - Wait until the disk is where I(state) says. With C(false) the module returns once the
        copy has started; for C(pivoted) or C(finished) the agent then pivots or finishes by itself
        when the copy is ready.
      - C(false) with C(pivoted) or C(finished) needs the agent's daemon (C(blockcopy-agent serve),
        the systemd service) on the host, or I(endpoint). A C(blockcopy-agent stdio) agent that
        serves the module alone exits with it and nothing would pivot; the module detects that
        (the agent's C(capabilities) report its mode) and fails with C(error=noDaemon) before
        starting anything.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait. A copy that does not get there in time is cancelled by the agent
        (like C(virsh blockcopy --timeout)) and the task fails with C(error=timeout).
    type: int
    default: 3600
  pivot_timeout:
    description:
      - Seconds the agent keeps retrying a pivot or finish while QEMU reports the job not ready
        (it can drop out of ready under heavy guest writes).
    type: int
    default: 60
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - The persistent definition of the domain is reported in C(job.persistent) after a pivot;
    libvirt may keep the old source there.
seealso:
  - module: blockcopy.agent.block_copy_info
'''

EXAMPLES = r'''
- name: Move vda of vm1 to the new pool and switch the guest onto it
  blockcopy.agent.block_copy:
    domain: vm1
    disk: vda
    destination: /srv/pool-b/vm1-vda.qcow2
    format: qcow2
    state: pivoted
    bandwidth: "{{ 200 * 1024 * 1024 }}"

- name: Start mirroring now, pivot later in the maintenance window
  blockcopy.agent.block_copy:
    domain: vm1
    disk: vdb
    destination: /srv/pool-b/vm1-vdb.raw
    format: raw
    state: ready

- name: Point-in-time copy of a running disk (backup)
  blockcopy.agent.block_copy:
    domain: db1
    disk: vda
    destination: "/backup/db1-vda-{{ ansible_date_time.iso8601_basic_short }}.qcow2"
    format: qcow2
    state: finished

- name: Make sure no copy job is left on the disk (before a live migration)
  blockcopy.agent.block_copy:
    domain: vm1
    disk: vda
    state: absent

- name: A long copy without holding the play
  blockcopy.agent.block_copy:
    domain: vm1
    disk: vda
    destination: /srv/pool-b/vm1-vda.qcow2
    format: qcow2
    state: pivoted
    timeout: 14400
  async: 14400
  poll: 30
'''

RETURN = r'''
job:
  description: The disk's copy job as the agent reports it (the agent's Job schema, each key in snake_case - jobId is job_id).
  returned: when a job exists or was created
  type: dict
  contains:
    job_id:
      description: The job's id.
      type: str
      sample: 3f1c0d8e-2a52-4a57-9d0b-b8b9e2d7f2a1
    domain:
      description: The domain whose disk is copied.
      type: dict
      sample: {name: vm1, uuid: 5f5c8a4c-def5-4ddc-aebf-412eef4b821c}
    disk:
      description: Disk target.
      type: str
      sample: vda
    source:
      description: The disk's source when the job started (path and format).
      type: dict
      sample: {path: /var/lib/libvirt/images/vm1-vda.qcow2, format: qcow2}
    state:
      description: copying, ready, pivoting, pivoted, finishing, finished, cancelling, cancelled or failed.
      type: str
      sample: pivoted
    destination:
      description: Destination path, format and type.
      type: dict
      sample: {path: /srv/pool-b/vm1-vda.qcow2, format: qcow2, type: file}
    progress:
      description: Bytes copied (cur) of end, percent, rate in bytes/s and eta in seconds.
      type: dict
      sample: {cur: 1073741824, end: 1073741824, percent: 100, rate: null, eta: null}
    bandwidth:
      description: Bandwidth limit in bytes/s; 0 means unlimited.
      type: int
      sample: 0
    options:
      description: The copy options in force.
      type: dict
      sample: {shallow: false, reuse_external: false, transient_job: true, synchronous_writes: false}
    when_ready:
      description: What the agent does by itself once the job is ready (none, pivot or finish).
      type: str
      sample: pivot
    owner:
      description: agent (started through the agent) or adopted (a copy started elsewhere).
      type: str
      sample: agent
    created_at:
      description: When the job was created (ISO 8601).
      type: str
      sample: "2026-12-03T06:00:00.000Z"
    updated_at:
      description: When the job's state last changed (ISO 8601).
      type: str
      sample: "2026-12-03T06:01:10.000Z"
    ready_at:
      description: When the job first became ready (ISO 8601).
      type: str
      returned: once ready
      sample: "2026-12-03T06:01:02.000Z"
    ended_at:
      description: When the job reached a terminal state (ISO 8601).
      type: str
      returned: once ended
      sample: "2026-12-03T06:01:10.000Z"
    outcome:
      description: observed, or inferred when the end was concluded from the live XML.
      type: str
      returned: once ended
      sample: observed
    cleanup:
      description: What I(remove_source) did - C(removed) (paths deleted) and C(kept) (path and reason each).
      type: dict
      returned: with remove_source
      sample: {remove_source: true, state: done, removed: [/srv/a/vm1-vda.qcow2], kept: [{path: /srv/a/base.qcow2, reason: used by domain vm2}]}
    evidence:
      description: What the agent saw that supports an inferred outcome or a failure.
      type: dict
      returned: when inferred or failed
    error:
      description: Why the job failed (name, message, libvirt's error).
      type: dict
      returned: when the job failed
    persistent:
      description: After a pivot, what the domain's persistent definition says about the disk.
      type: dict
      returned: after a pivot
      sample: {defined: true, source: /srv/pool-b/vm1-vda.qcow2, matches_live: true}
    group_id:
      description: The group (blockCopyGroup) the job belongs to.
      type: str
      returned: for a job of a group
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: pivoted vm1/vda onto /srv/pool-b/vm1-vda.qcow2
error:
  description: >-
    The error's name on failure - the agent's (notFound, jobExists, destinationRejected, notReady, pivotFailed,
    timeout, libvirtError, ...), transport when the agent could not be reached, invalidParams, invalidState, or
    noDaemon (wait=false needs the agent's daemon).
  returned: failed
  type: str
  sample: destinationRejected
code:
  description: The JSON-RPC error code of the agent's answer.
  returned: when the agent answered with an error
  type: int
  sample: -32005
libvirt:
  description: libvirt's own error (code, domain, message) when libvirt refused.
  returned: when libvirt refused
  type: dict
  sample: {code: 1, domain: 10, message: "internal error"}
reason:
  description: The agent's reason for a refusal or failure (for example why a destination was rejected).
  returned: when the agent gives one
  type: str
evidence:
  description: What the agent saw, for failures concluded from the live XML.
  returned: when the agent gives it
  type: dict
errors:
  description: Schema validation errors of the request (invalidParams).
  returned: when the agent rejected the parameters
  type: list
  elements: dict
diff:
  description: The disk before and after (state, destination, source the guest runs on), with C(--diff).
  returned: in diff mode
  type: dict
  sample: {before: {state: ready, destination: /srv/b.qcow2, source: /srv/a.qcow2}, after: {state: pivoted, destination: /srv/b.qcow2}}
'''

import os

from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session, carry_out, check_bandwidth, job_or_none
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import ACTIVE, copy_decision, live_source


def current_job(client, p):
    """The disk's running job, else its most recent one (None if the agent knows none)."""
    return job_or_none(client, {"domain": p["domain"], "disk": p["disk"]})


def disk_history(client, p):
    """The disk's jobs the agent remembers, oldest first."""
    jobs = client.call("listJobs", {"domain": p["domain"]})["jobs"]
    # A backup of the domain (a job of every disk it backs up, no "disk" key) is not this disk's history.
    return [j for j in jobs if j.get("disk") == p["disk"]]


def copy_params(p, when_ready, wait):
    params = {"domain": p["domain"], "disk": p["disk"], "whenReady": when_ready, "wait": wait, "timeout": p["timeout"]}
    if p["destination_xml"]:
        params["destinationXml"] = p["destination_xml"]
    else:
        dest = {"path": p["destination"], "type": p["type"]}
        if p["format"]:
            dest["format"] = p["format"]
        params["destination"] = dest
    for opt, key in (("shallow", "shallow"), ("reuse_external", "reuseExternal"), ("transient_job", "transientJob"),
                     ("synchronous_writes", "synchronousWrites"), ("bandwidth", "bandwidth"), ("granularity", "granularity"),
                     ("buf_size", "bufSize"), ("job_id", "jobId")):
        if p[opt] is not None:
            params[key] = p[opt]
    if p["remove_source"] and when_ready == "pivot":
        params["removeSource"] = True
    return params


def view(job):
    out = {"state": "absent"}
    if job and job["state"] in ACTIVE + ("pivoted", "finished"):
        out = {"state": job["state"], "destination": job["destination"]["path"]}
    where = live_source(job)
    if where:
        out["source"] = where
    return out


class Runner(object):
    """Carries out copy_decision (module_utils/decide.py): the calls, the daemon check."""

    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.p = module.params

    def call(self, method, params):
        return self.client.call_retrying(method, params, timeout=self.p["timeout"])

    def run(self, job, history):
        p = self.p
        d = copy_decision(p, job, history, self.module.check_mode)
        settled = carry_out(self.module, self.client, d, job)
        if settled:
            return settled
        if d.action == "start":
            result = self.call("blockCopy", copy_params(p, d.when_ready, d.wait))
            return result["changed"], result["job"], d.msg
        # switch: wait until ready first if the copy is still in phase 1
        if d.wait_ready:
            self.call("wait", {"jobId": job["jobId"], "until": "ready", "timeout": p["timeout"]})
        switch = {"jobId": job["jobId"], "timeout": p["pivot_timeout"]}
        if d.remove_source:
            switch["removeSource"] = True
        result = self.call(d.method, switch)
        return result["changed"], result["job"], d.msg


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        state=dict(type="str", default="pivoted", choices=["ready", "pivoted", "finished", "absent"]),
        destination=dict(type="path"),
        format=dict(type="str", choices=["raw", "qcow2"]),
        type=dict(type="str", default="file", choices=["file", "block"]),
        destination_xml=dict(type="str"),
        shallow=dict(type="bool", default=False),
        reuse_external=dict(type="bool", default=False),
        transient_job=dict(type="bool"),
        synchronous_writes=dict(type="bool", default=False),
        bandwidth=dict(type="raw"),
        remove_source=dict(type="bool", default=False),
        granularity=dict(type="int"),
        buf_size=dict(type="int"),
        job_id=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
        pivot_timeout=dict(type="int", default=60),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("destination", "destination_xml")],
        required_if=[("state", "ready", ("destination", "destination_xml"), True),
                     ("state", "pivoted", ("destination", "destination_xml"), True),
                     ("state", "finished", ("destination", "destination_xml"), True),
                     ("reuse_external", True, ("format",))],
    )
    p = module.params
    check_bandwidth(module)
    if p["destination"] is not None and not os.path.isabs(p["destination"]):
        module.fail_json(msg="destination must be an absolute path, got %s" % p["destination"], error="invalidParams")
    if p["remove_source"] and p["state"] != "pivoted":
        module.fail_json(msg="remove_source applies to state=pivoted, not %s" % p["state"], error="invalidParams")
    if p["timeout"] <= 0 or p["pivot_timeout"] <= 0:
        module.fail_json(msg="timeout and pivot_timeout must be positive", error="invalidParams")

    with agent_session(module) as client:
        job_before = current_job(client, p)
        history = disk_history(client, p) if p["state"] != "absent" else []
        changed, job, msg = Runner(module, client).run(job_before, history)
    result = dict(changed=changed, msg=msg)
    if job is not None:
        result["job"] = job
    if module._diff:
        if module.check_mode and changed:
            after = {"state": "absent"} if p["state"] == "absent" else {
                "state": p["state"], "destination": p["destination"] or view(job_before).get("destination")}
        else:
            after = view(job)
        result["diff"] = dict(before=view(job_before), after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
