#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_pull
short_description: Flatten a running VM's backing chain into its active layer (libvirt block pull)
version_added: "0.2.0"
description:
  - Drives C(blockcopy-agent) on the managed host (its C(blockPull) method) to copy the data of a
    running domain's backing layers into its active layer while the guest runs (what
    C(virsh blockpull) does). The pull completes on its own and the agent verifies the chain -
    below the active layer only I(base) and what lies below it remain (nothing without I(base)).
  - Pull and commit are two modules, as in virsh and in the agent's API; see
    M(blockcopy.agent.block_commit) for why.
  - Idempotent - when the live XML already shows the chain the pull would leave (a single layer,
    or I(base) right below the active layer), or the agent remembers the same pull completed and
    the live XML cannot be read, nothing is done and C(changed=false).
  - The live chain is read from the agent (its C(diskInfo) method), wherever I(endpoint) points.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.bandwidth
attributes:
  check_mode:
    support: full
    description: Reads the live XML and the agent's jobs and reports whether a pull would start; starts and aborts nothing.
  diff_mode:
    support: full
    description: Shows the job's state and the disk's live chain before and after.
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
  base:
    description:
      - The backing layer that stays, as an absolute path or libvirt's C(vda[N]) (N is the C(index)
        of the layer in the live XML, not its depth); the layers above it are pulled.
      - Default - the whole chain is pulled and the active layer ends with no backing file.
    type: str
  state:
    description:
      - C(completed) - the pull has ended and the chain is flattened down to I(base).
      - C(absent) - no pull job runs on the disk (a running one is aborted; the chain stays valid).
    type: str
    choices: [completed, absent]
    default: completed
  job_id:
    description:
      - Idempotency key for the job; the same key again refers to the same job.
    type: str
  wait:
    description:
      - Wait until the pull has ended. With C(false) the module returns once it has started.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait. A pull that has not ended in time is cancelled by the agent
        (like C(virsh blockpull --timeout)) and the task fails with C(error=timeout).
    type: int
    default: 3600
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - The pulled layers stay on disk; remove them once nothing references them.
seealso:
  - module: blockcopy.agent.block_commit
  - module: blockcopy.agent.disk_snapshot
'''

EXAMPLES = r'''
- name: Make vda of web1 a single self-contained image
  blockcopy.agent.block_pull:
    domain: web1
    disk: vda

- name: Pull the layers above the golden image only
  blockcopy.agent.block_pull:
    domain: web1
    disk: vda
    base: /var/lib/libvirt/images/golden.qcow2
    bandwidth: "{{ 100 * 1024 * 1024 }}"
'''

RETURN = r'''
job:
  description: The disk's pull job as the agent reports it (the agent's Job schema, each key in snake_case - jobId is job_id).
  returned: when a job exists or was created
  type: dict
  contains:
    job_id:
      description: The job's id.
      type: str
    kind:
      description: Always pull.
      type: str
      sample: pull
    domain:
      description: The domain (name and uuid).
      type: dict
    disk:
      description: Disk target.
      type: str
    source:
      description: The disk's active layer when the job started (path and format).
      type: dict
    destination:
      description: The active layer the data is pulled into (path, format, type).
      type: dict
    layers:
      description: The active layer (top), the layer that stays (base, null for a full pull) and the chain when the pull started.
      type: dict
    state:
      description: copying, completed, cancelling, cancelled or failed.
      type: str
      sample: completed
    progress:
      description: Bytes pulled (cur) of end, percent, rate in bytes/s and eta in seconds.
      type: dict
    bandwidth:
      description: Bandwidth limit in bytes/s; 0 means unlimited.
      type: int
    owner:
      description: agent, or adopted (a pull started elsewhere).
      type: str
    created_at:
      description: When the job was created (ISO 8601).
      type: str
    updated_at:
      description: When the job's state last changed (ISO 8601).
      type: str
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
chain:
  description: The disk's backing chain in the live XML after the task, active layer first (paths).
  returned: when the live XML can be read on the host the module runs on
  type: list
  elements: str
  sample: [/var/lib/libvirt/images/web1-vda.qcow2]
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: pulled web1/vda (completed)
error:
  description: >-
    The error's name on failure - the agent's (notFound, jobExists, invalidState, unsupported, timeout, libvirtError,
    ...), transport when the agent could not be reached, or invalidParams.
  returned: failed
  type: str
  sample: jobExists
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
  description: The job's state and the disk's chain before and after, with C(--diff).
  returned: in diff mode
  type: dict
  sample: {before: {state: absent, chain: [/i/top.qcow2, /i/base.qcow2]}, after: {state: completed, kind: pull, chain: [/i/top.qcow2]}}
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import CHAIN_ARGS, chain_view, disk_job, disk_jobs, job_view, live_chain
from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session, carry_out, check_bandwidth
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import pull_decision


def run(module, client, job, chain):
    """Carries out pull_decision (module_utils/decide.py)."""
    p = module.params

    def call(method, params):
        return client.call_retrying(method, params, timeout=p["timeout"])

    history = [] if p["state"] == "absent" else disk_jobs(client, p["domain"], p["disk"], ("pull",))
    d = pull_decision(p, job, history, chain, module.check_mode)
    settled = carry_out(module, client, d, job)
    if settled:
        return settled
    params = {"domain": p["domain"], "disk": p["disk"], "wait": d.wait, "timeout": p["timeout"]}
    for opt, key in (("base", "base"), ("bandwidth", "bandwidth"), ("job_id", "jobId")):
        if p[opt] is not None:
            params[key] = p[opt]
    r = call("blockPull", params)
    job = r["job"]
    if job["state"] in ("failed", "cancelled"):
        err = job.get("error") or {}
        module.fail_json(msg="the pull of %s/%s %s: %s" % (p["domain"], p["disk"], job["state"], err.get("message", "")),
                         error=err.get("name", "invalidState"), job=job, changed=False)
    return r["changed"], job, d.msg % {"state": job["state"]}


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        base=dict(type="str"),
        state=dict(type="str", default="completed", choices=["completed", "absent"]),
        bandwidth=dict(type="raw"),
        job_id=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
    )
    argument_spec.update(CHAIN_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    check_bandwidth(module)
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive", error="invalidParams")
    chain = live_chain(module)
    with agent_session(module, changed=False) as client:
        before = disk_job(client, p["domain"], p["disk"])
        changed, job, msg = run(module, client, before, chain)
    after_chain = chain if module.check_mode or not changed else live_chain(module)
    result = dict(changed=changed, msg=msg)
    if job is not None:
        result["job"] = job
    if after_chain is not None:
        result["chain"] = chain_view(after_chain)
    if module._diff:
        before_view = job_view(before if before is not None and before["kind"] == "pull" else None, chain)
        if module.check_mode and changed:
            after = {"state": "absent" if p["state"] == "absent" else "completed", "kind": "pull"}
        else:
            after = job_view(job, after_chain)
        result["diff"] = dict(before=before_view, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
