#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_copy_info
short_description: Report the jobs (copies, commits, pulls, backups) of a host, a domain or a disk
version_added: "0.1.0"
description:
  - Asks C(blockcopy-agent) on the managed host for its jobs - running ones, and ended
    ones it still remembers. Each job has a C(kind) - C(copy), C(activeCommit), C(commit),
    C(pull) or C(backup); commit and pull jobs also carry their C(layers), backups their C(mode),
    C(disks) and files (see M(blockcopy.agent.block_backup)).
  - Never changes anything.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.info_module
options:
  domain:
    description:
      - Only this domain's jobs (name or UUID).
    type: str
  disk:
    description:
      - Only this disk's job (needs I(domain)); the running job, else the most recent one.
    type: str
  job_id:
    description:
      - Only this job.
    type: str
  states:
    description:
      - Only jobs in these states.
    type: list
    elements: str
    choices: [copying, ready, pivoting, pivoted, finishing, finished, completed, cancelling, cancelled, failed, running]
  kinds:
    description:
      - Only jobs of these kinds (default - every kind).
    type: list
    elements: str
    choices: [copy, activeCommit, commit, pull, backup]
    version_added: "0.2.0"
  include_ended:
    description:
      - Include jobs that have ended.
    type: bool
    default: true
seealso:
  - module: blockcopy.agent.block_copy
  - module: blockcopy.agent.block_commit
  - module: blockcopy.agent.block_pull
  - module: blockcopy.agent.block_backup
'''

EXAMPLES = r'''
- name: Every copy job this hypervisor knows
  blockcopy.agent.block_copy_info:
  register: copies

- name: Fail if a VM about to be migrated still has a running copy job
  blockcopy.agent.block_copy_info:
    domain: vm1
    include_ended: false
  register: running
  failed_when: running.jobs | length > 0

- name: The commits and pulls of vm1
  blockcopy.agent.block_copy_info:
    domain: vm1
    kinds: [activeCommit, commit, pull]

- name: The backups of db1 the agent remembers
  blockcopy.agent.block_copy_info:
    domain: db1
    kinds: [backup]

- name: One disk's job
  blockcopy.agent.block_copy_info:
    domain: vm1
    disk: vda
'''

RETURN = r'''
jobs:
  description: The matching jobs, oldest first, as the agent reports them, keys in snake_case (see block_copy's C(job)).
  returned: always
  type: list
  elements: dict
  sample:
    - job_id: move-vda
      kind: copy
      state: ready
      domain: {name: vm1, uuid: 5f5c8a4c-def5-4ddc-aebf-412eef4b821c}
      disk: vda
      destination: {path: /srv/pool-b/vm1-vda.qcow2, format: qcow2, type: file}
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, TERMINAL, agent_session, job_or_none

STATES = ["copying", "ready", "pivoting", "pivoted", "finishing", "finished", "completed", "cancelling", "cancelled", "failed", "running"]
KINDS = ["copy", "activeCommit", "commit", "pull", "backup"]


def main():
    argument_spec = dict(
        domain=dict(type="str"),
        disk=dict(type="str"),
        job_id=dict(type="str"),
        states=dict(type="list", elements="str", choices=STATES),
        include_ended=dict(type="bool", default=True),
        kinds=dict(type="list", elements="str", choices=KINDS),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(argument_spec=argument_spec, supports_check_mode=True,
                         required_by={"disk": "domain"}, mutually_exclusive=[("job_id", "domain")])
    p = module.params
    with agent_session(module) as client:
        if p["job_id"] or p["disk"]:
            ref = {"jobId": p["job_id"]} if p["job_id"] else {"domain": p["domain"], "disk": p["disk"]}
            job = job_or_none(client, ref)
            jobs = [j for j in ([job] if job else []) if (p["include_ended"] or j["state"] not in TERMINAL) and (not p["states"] or j["state"] in p["states"])
                    and (not p["kinds"] or j.get("kind", "copy") in p["kinds"])]
        else:
            params = {"includeEnded": p["include_ended"]}
            if p["domain"]:
                params["domain"] = p["domain"]
            if p["states"]:
                params["state"] = p["states"]
            if p["kinds"]:
                params["kind"] = sorted(set(p["kinds"]))
            jobs = client.call("listJobs", params)["jobs"]
    module.exit_json(changed=False, jobs=jobs)


if __name__ == "__main__":
    main()
