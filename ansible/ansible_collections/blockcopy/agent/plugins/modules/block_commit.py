#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_commit
short_description: Merge a running VM's snapshot overlays back down (libvirt block commit)
version_added: "0.2.0"
description:
  - Drives C(blockcopy-agent) on the managed host (its C(blockCommit) method) to merge layers of a
    running domain's disk into a lower layer while the guest runs (what C(virsh blockcommit) does).
  - Without I(top) the active layer is merged (an active commit, C(virsh blockcommit --active));
    it reaches ready, then the agent pivots the guest down onto I(base) (I(state=pivoted)) or
    stops merging and leaves the guest on its overlay (I(state=finished)). With a I(top) below the
    active layer the commit completes on its own (I(state=completed)), verified by the shortened
    chain.
  - Commit and pull are two modules, as in virsh (C(blockcommit), C(blockpull)) and in the agent's
    API, because their options and end states differ (I(top), I(shallow) and the pivot exist only
    for a commit); M(blockcopy.agent.block_pull) is the other one. Both share their helpers.
  - Idempotent - the agent remembers its jobs; a rerun with the same layers finds the earlier
    commit and, when the live XML agrees (the guest still runs on the base it was pivoted onto,
    the merged layer is no longer in the chain), reports C(changed=false). An active commit of a
    disk that has a single layer has nothing to merge and changes nothing either.
  - The live chain is read from the agent (its C(diskInfo) method), wherever I(endpoint) points.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.bandwidth
attributes:
  check_mode:
    support: full
    description: Asks the agent for the disk's jobs, reads the live XML and reports what would change; starts, pivots, finishes and aborts nothing.
  diff_mode:
    support: full
    description: Shows the job's kind and state and the disk's live chain before and after.
options:
  domain:
    description:
      - Name or UUID of the running domain.
    type: str
    required: true
  disk:
    description:
      - Target of the disk, as in the domain XML (for example C(vda)).
    type: str
    required: true
  top:
    description:
      - The highest layer to merge, as an absolute path or as libvirt's C(vda[N]) (N is the
        C(index) of the layer in the live XML, not its depth).
      - Default - the active layer (an active commit).
      - A I(top) that names the active layer is recognised as an active commit only where the live
        XML can be read (not with I(endpoint)); leave I(top) out for an active commit.
    type: str
  base:
    description:
      - The layer that receives the data, below I(top), as a path or C(vda[N]).
      - Default - the deepest layer of the chain, or with I(shallow) the layer right below I(top).
    type: str
  shallow:
    description:
      - Merge I(top) into the layer right below it only (C(virsh blockcommit --shallow)).
    type: bool
    default: false
  state:
    description:
      - C(pivoted) - an active commit, then the guest runs on I(base) (C(--active --pivot)).
      - C(finished) - an active commit, then merging stops and the guest stays on its overlay;
        I(base) holds the merged data (C(--active --keep-overlay)).
      - C(ready) - an active commit runs and stays in sync (C(--active --wait) alone).
      - C(completed) - a commit below the active layer (I(top) given) has ended.
      - C(absent) - no commit job runs on the disk (a running one is aborted; the chain stays as it was).
      - Default - C(pivoted) without I(top), C(completed) with it.
    type: str
    choices: [pivoted, finished, ready, completed, absent]
  job_id:
    description:
      - Idempotency key for the job; the same key again refers to the same job.
    type: str
  wait:
    description:
      - Wait until the disk is where I(state) says. With C(false) the module returns once the
        commit has started; for C(pivoted) or C(finished) the agent then acts by itself when
        ready, which needs the agent's daemon on the host (else C(error=noDaemon)).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait. A commit that does not get there in time is cancelled by the agent
        (like C(virsh blockcommit --timeout)) and the task fails with C(error=timeout).
    type: int
    default: 3600
  pivot_timeout:
    description:
      - Seconds the agent keeps retrying a pivot or finish while QEMU reports the job not ready.
    type: int
    default: 60
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - The merged overlays stay on disk; remove them once nothing references them.
seealso:
  - module: blockcopy.agent.disk_snapshot
  - module: blockcopy.agent.block_pull
  - module: blockcopy.agent.block_copy_info
'''

EXAMPLES = r'''
- name: Merge the backup overlay of vda back and move the guest onto its image
  blockcopy.agent.block_commit:
    domain: db1
    disk: vda
    state: pivoted

- name: Shorten a chain below the active layer (merge vda[2] into the layer under it)
  blockcopy.agent.block_commit:
    domain: db1
    disk: vda
    top: vda[2]
    shallow: true

- name: Make sure no commit job is left on the disk
  blockcopy.agent.block_commit:
    domain: db1
    disk: vda
    state: absent
'''

RETURN = r'''
job:
  description: The disk's commit job as the agent reports it (the agent's Job schema, each key in snake_case - jobId is job_id).
  returned: when a job exists or was created
  type: dict
  contains:
    job_id:
      description: The job's id.
      type: str
      sample: 3f1c0d8e-2a52-4a57-9d0b-b8b9e2d7f2a1
    kind:
      description: activeCommit (the active layer merged) or commit (a layer below it).
      type: str
      sample: activeCommit
    domain:
      description: The domain (name and uuid).
      type: dict
    disk:
      description: Disk target.
      type: str
      sample: vda
    source:
      description: The disk's active layer when the job started (path and format).
      type: dict
    destination:
      description: The base layer the data is merged into (path, format, type); an active commit pivots the guest onto it.
      type: dict
      sample: {path: /var/lib/libvirt/images/db1-vda.qcow2, format: qcow2, type: file}
    layers:
      description: The layers the commit works on (top, base) and the disk's whole chain when it started, each with path, format and index.
      type: dict
      sample: {top: {path: /images/db1-vda.snap.qcow2, format: qcow2, index: 3}, base: {path: /images/db1-vda.qcow2, format: qcow2, index: 1}}
    state:
      description: copying, ready, pivoting, pivoted, finishing, finished, completed, cancelling, cancelled or failed.
      type: str
      sample: pivoted
    progress:
      description: Bytes merged (cur) of end, percent, rate in bytes/s and eta in seconds.
      type: dict
    bandwidth:
      description: Bandwidth limit in bytes/s; 0 means unlimited.
      type: int
    when_ready:
      description: What the agent does by itself once an active commit is ready (none, pivot or finish).
      type: str
    owner:
      description: agent, or adopted (a commit started elsewhere, for example by virsh).
      type: str
    created_at:
      description: When the job was created (ISO 8601).
      type: str
    updated_at:
      description: When the job's state last changed (ISO 8601).
      type: str
    ready_at:
      description: When an active commit first became ready.
      type: str
      returned: once ready
    ended_at:
      description: When the job reached a terminal state.
      type: str
      returned: once ended
    outcome:
      description: observed, or inferred when the end was concluded from the live XML.
      type: str
      returned: once ended
    error:
      description: Why the job failed (name, message, libvirt's error).
      type: dict
      returned: when the job failed
    persistent:
      description: After a pivot, what the domain's persistent definition says about the disk.
      type: dict
      returned: after a pivot
chain:
  description: The disk's backing chain in the live XML after the task, active layer first (paths).
  returned: when the live XML can be read on the host the module runs on
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/db1-vda.qcow2]
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: pivoted db1/vda onto /var/lib/libvirt/images/db1-vda.qcow2
error:
  description: >-
    The error's name on failure - the agent's (notFound, jobExists, invalidState, notReady, pivotFailed, unsupported,
    timeout, libvirtError, ...), transport when the agent could not be reached, invalidParams, or noDaemon.
  returned: failed
  type: str
  sample: notFound
code:
  description: The JSON-RPC error code of the agent's answer.
  returned: when the agent answered with an error
  type: int
libvirt:
  description: libvirt's own error (code, domain, message) when libvirt refused.
  returned: when libvirt refused
  type: dict
reason:
  description: The agent's reason for a refusal or failure.
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
  description: The job's kind and state and the disk's chain before and after, with C(--diff).
  returned: in diff mode
  type: dict
  sample: {before: {state: absent, chain: [/i/snap.qcow2, /i/base.qcow2]}, after: {state: pivoted, kind: activeCommit, chain: [/i/base.qcow2]}}
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import (
    CHAIN_ARGS, disk_job, disk_jobs, job_view, live_chain, chain_view)
from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session, carry_out, check_bandwidth
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import COMMIT_KINDS as KINDS, commit_active, commit_decision, commit_goal


class Commit(object):
    """Carries out commit_decision (module_utils/decide.py): the calls, the daemon check."""

    def __init__(self, module, client, chain):
        self.module = module
        self.client = client
        self.p = module.params
        self.chain = chain
        self.active = commit_active(self.p, chain)
        self.goal = commit_goal(self.p, chain)

    def call(self, method, params):
        return self.client.call_retrying(method, params, timeout=self.p["timeout"])

    def fail(self, msg, error, job=None):
        self.module.fail_json(msg=msg, error=error, job=job, changed=False)

    def run(self, job):
        p = self.p
        history = [] if self.goal == "absent" else disk_jobs(self.client, p["domain"], p["disk"], KINDS)
        d = commit_decision(p, job, history, self.chain, self.module.check_mode)
        settled = carry_out(self.module, self.client, d, job)
        if settled:
            return settled
        if d.action == "start":
            params = {"domain": p["domain"], "disk": p["disk"], "whenReady": d.when_ready, "timeout": p["timeout"], "wait": d.wait}
            for opt, key in (("top", "top"), ("base", "base"), ("bandwidth", "bandwidth"), ("job_id", "jobId")):
                if p[opt] is not None:
                    params[key] = p[opt]
            if p["shallow"]:
                params["shallow"] = True
            r = self.call("blockCommit", params)
            job = r["job"]
            if job["state"] in ("failed", "cancelled"):
                self.fail("the commit of %s/%s %s: %s" % (p["domain"], p["disk"], job["state"], (job.get("error") or {}).get("message", "")),
                          (job.get("error") or {}).get("name", "invalidState"), job)
            return r["changed"], job, d.msg % {"state": job["state"]}
        # switch: wait until ready first if the commit is still merging
        if d.wait_ready:
            self.call("wait", {"jobId": job["jobId"], "until": "ready", "timeout": p["timeout"]})
        r = self.call(d.method, {"jobId": job["jobId"], "timeout": p["pivot_timeout"]})
        return r["changed"], r["job"], d.msg


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        top=dict(type="str"),
        base=dict(type="str"),
        shallow=dict(type="bool", default=False),
        state=dict(type="str", choices=["pivoted", "finished", "ready", "completed", "absent"]),
        bandwidth=dict(type="raw"),
        job_id=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
        pivot_timeout=dict(type="int", default=60),
    )
    argument_spec.update(CHAIN_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(argument_spec=argument_spec, supports_check_mode=True, mutually_exclusive=[("shallow", "base")])
    p = module.params
    check_bandwidth(module)
    if p["timeout"] <= 0 or p["pivot_timeout"] <= 0:
        module.fail_json(msg="timeout and pivot_timeout must be positive", error="invalidParams")
    chain = live_chain(module)
    runner = Commit(module, chain=chain, client=None)
    if runner.goal in ("pivoted", "finished", "ready") and not runner.active:
        module.fail_json(msg="state=%s needs an active commit (no top, or top naming the active layer)" % runner.goal, error="invalidParams")
    if runner.goal == "completed" and runner.active:
        module.fail_json(msg="an active commit does not complete on its own: use state pivoted, finished or ready", error="invalidParams")

    with agent_session(module, changed=False) as client:
        runner.client = client
        before = disk_job(client, p["domain"], p["disk"])
        changed, job, msg = runner.run(before)
    after_chain = chain if module.check_mode or not changed else live_chain(module)
    result = dict(changed=changed, msg=msg)
    if job is not None:
        result["job"] = job
    if after_chain is not None:
        result["chain"] = chain_view(after_chain)
    if module._diff:
        before_view = job_view(before if before is not None and before["kind"] in KINDS else None, chain)
        if module.check_mode and changed:
            after = {"state": "absent" if runner.goal == "absent" else runner.goal, "kind": "activeCommit" if runner.active else "commit"}
        else:
            after = job_view(job, after_chain)
        result["diff"] = dict(before=before_view, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
