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
  - blockcopy-agent developers
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
  description: The disk's commit job as the agent reports it (see the agent's Job schema).
  returned: when a job exists or was created
  type: dict
  contains:
    jobId:
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
    whenReady:
      description: What the agent does by itself once an active commit is ready (none, pivot or finish).
      type: str
    owner:
      description: agent, or adopted (a commit started elsewhere, for example by virsh).
      type: str
    createdAt:
      description: When the job was created (ISO 8601).
      type: str
    updatedAt:
      description: When the job's state last changed (ISO 8601).
      type: str
    readyAt:
      description: When an active commit first became ready.
      type: str
      returned: once ready
    endedAt:
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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.blockcopy.agent.plugins.module_utils.agent_client import AgentError
from ansible_collections.blockcopy.agent.plugins.module_utils.chain import (
    ACTIVE, CHAIN_ARGS, disk_job, disk_jobs, find_layer, job_view, live_chain, chain_view, names_layer, require_daemon, same_path)
from ansible_collections.blockcopy.agent.plugins.module_utils.common import CONNECTION_ARGS, check_bandwidth, TERMINAL, connect, fail_agent

KINDS = ("activeCommit", "commit")


class Commit(object):
    def __init__(self, module, client, chain):
        self.module = module
        self.client = client
        self.p = module.params
        self.chain = chain
        p = self.p
        self.active = p["top"] is None or (chain is not None and find_layer(chain, p["top"], p["disk"]) == 0)
        self.goal = p["state"] or ("pivoted" if self.active else "completed")
        self.where = "%s/%s" % (p["domain"], p["disk"])

    def call(self, method, params):
        return self.client.call_retrying(method, params, timeout=self.p["timeout"])

    def fail(self, msg, error, job=None):
        self.module.fail_json(msg=msg, error=error, job=job, changed=False)

    def matches(self, job):
        """Whether `job` is the commit these options ask for (same kind and layers)."""
        p = self.p
        layers = job.get("layers") or {}
        if job["kind"] != ("activeCommit" if self.active else "commit"):
            return False
        if p["top"] is not None and job["kind"] == "commit" and not names_layer(p["top"], layers.get("top"), p["disk"]):
            return False
        return p["base"] is None or names_layer(p["base"], layers.get("base"), p["disk"])

    def done(self, prior):
        """Whether an ended commit left the disk where the goal says, by the live XML when it can be read."""
        goal, state, chain = self.goal, prior["state"], self.chain
        if not (state == goal or (goal == "ready" and state in ("pivoted", "finished"))):
            return False
        if chain is None:
            return True
        if state == "pivoted":
            return same_path(chain[0]["path"], prior["destination"]["path"])
        if state == "finished":
            return same_path(chain[0]["path"], ((prior.get("layers") or {}).get("top") or {}).get("path"))
        top = ((prior.get("layers") or {}).get("top") or {}).get("path")
        return top is not None and find_layer(chain, top, None) is None

    def run(self, job):
        p, goal = self.p, self.goal
        if goal == "absent":
            if job is None or job["state"] in TERMINAL + ("completed",) or job["kind"] not in KINDS:
                return False, job, "no commit job runs on %s" % self.where
            if self.module.check_mode:
                return True, job, "would abort the commit job on %s" % self.where
            r = self.call("abort", {"jobId": job["jobId"]})
            return r["changed"], r["job"], "aborted the commit job on %s" % self.where
        if job is not None and job["state"] in ACTIVE:
            return self.running(job)
        prior = next((j for j in reversed(disk_jobs(self.client, p["domain"], p["disk"], KINDS)) if self.matches(j)), None)
        if prior is not None and self.done(prior):
            return False, prior, "%s is already %s (job %s)" % (self.where, prior["state"], prior["jobId"])
        if self.active and self.chain is not None and len(self.chain) == 1 and goal in ("pivoted", "finished"):
            return False, prior, "%s has a single layer: nothing to commit" % self.where
        if self.module.check_mode:
            return True, job, "would commit %s (%s)" % (self.where, goal)
        when_ready = {"pivoted": "pivot", "finished": "finish"}.get(goal, "none")
        if not p["wait"] and when_ready != "none":
            require_daemon(self.module, self.client, "%s when the commit is ready" % when_ready)
        params = {"domain": p["domain"], "disk": p["disk"], "whenReady": when_ready, "timeout": p["timeout"],
                  "wait": "none" if not p["wait"] else ("ready" if goal == "ready" else "done")}
        for opt, key in (("top", "top"), ("base", "base"), ("bandwidth", "bandwidth"), ("job_id", "jobId")):
            if p[opt] is not None:
                params[key] = p[opt]
        if p["shallow"]:
            params["shallow"] = True
        r = self.call("blockCommit", params)
        job = r["job"]
        if job["state"] in ("failed", "cancelled"):
            self.fail("the commit of %s %s: %s" % (self.where, job["state"], (job.get("error") or {}).get("message", "")),
                      (job.get("error") or {}).get("name", "invalidState"), job)
        return r["changed"], job, "%s %s (%s)" % ("committed" if p["wait"] else "started committing", self.where, job["state"])

    def running(self, job):
        """A commit already runs on the disk: take it where the goal says."""
        goal = self.goal
        if job["kind"] not in KINDS or not self.matches(job):
            self.fail("disk %s already has a %s job (%s)" % (self.where, job["kind"], job["jobId"]), "jobExists", job)
        if job["state"] == "cancelling":
            self.fail("the commit job on %s is being cancelled; run again once it ended" % self.where, "invalidState", job)
        wait = self.p["wait"]
        if goal in ("completed", "ready") or job["state"] in ("pivoting", "finishing"):
            if wait:
                until = "ready" if goal == "ready" else "done"
                job = self.call("wait", {"jobId": job["jobId"], "until": until, "timeout": self.p["timeout"]})["job"]
            return False, job, "a commit of %s already runs (%s)" % (self.where, job["state"])
        method = "pivot" if goal == "pivoted" else "finish"
        if self.module.check_mode:
            return True, job, "would %s the commit of %s" % (method, self.where)
        if job["state"] == "copying":
            if not wait:
                if job.get("whenReady") != method:
                    self.fail("the commit of %s is still merging and will not %s by itself; run with wait=true" % (self.where, method),
                              "notReady", job)
                require_daemon(self.module, self.client, "%s when the commit is ready" % method)
                return False, job, "the commit of %s is still merging; the agent will %s it when ready" % (self.where, method)
            self.call("wait", {"jobId": job["jobId"], "until": "ready", "timeout": self.p["timeout"]})
        r = self.call(method, {"jobId": job["jobId"], "timeout": self.p["pivot_timeout"]})
        return r["changed"], r["job"], "%s the commit of %s" % ("pivoted" if method == "pivot" else "finished", self.where)


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
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, mutually_exclusive=[("shallow", "base")])
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

    client = connect(module)
    runner.client = client
    try:
        before = disk_job(client, p["domain"], p["disk"])
        changed, job, msg = runner.run(before)
    except AgentError as e:
        fail_agent(module, e, changed=False)
    finally:
        client.close()
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
