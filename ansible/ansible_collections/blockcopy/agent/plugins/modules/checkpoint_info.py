#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: checkpoint_info
short_description: Report a running VM's checkpoints (the bases of incremental backups)
version_added: "0.2.0"
description:
  - Asks C(blockcopy-agent) on the managed host for a domain's checkpoints (its C(checkpoints)
    method, libvirt's C(virDomainListAllCheckpoints)), oldest first. M(blockcopy.agent.block_backup)
    creates them and deletes the oldest with I(keep_checkpoints).
  - Never changes anything.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
  - blockcopy.agent.agent.info_module
options:
  domain:
    description:
      - Name or UUID of the domain.
    type: str
    required: true
seealso:
  - module: blockcopy.agent.block_backup
'''

EXAMPLES = r'''
- name: The checkpoints of db1
  blockcopy.agent.checkpoint_info:
    domain: db1
  register: cps

- name: An incremental backup only when there is a checkpoint to start from
  blockcopy.agent.block_backup:
    domain: db1
    dir: /var/lib/libvirt/images/backups/db1
    mode: "{{ 'incremental' if cps.checkpoints | length > 0 else 'full' }}"
'''

RETURN = r'''
checkpoints:
  description: The domain's checkpoints, oldest first (parents before children), keys in snake_case.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The checkpoint's name.
      type: str
    parent:
      description: The checkpoint before it (null for the first).
      type: str
    created_at:
      description: When libvirt created it (ISO 8601).
      type: str
    disks:
      description: The disks with a bitmap in it.
      type: list
      elements: str
  sample:
    - {name: bc-20261207T010000.000Z, parent: null, created_at: "2026-12-07T01:00:00Z", disks: [vda, vdb]}
names:
  description: The checkpoints' names, oldest first.
  returned: always
  type: list
  elements: str
  sample: [bc-20261207T010000.000Z]
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session


def main():
    argument_spec = dict(domain=dict(type="str", required=True))
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(argument_spec=argument_spec, supports_check_mode=True)
    with agent_session(module, changed=False) as client:
        checkpoints = client.call("checkpoints", {"domain": module.params["domain"]})["checkpoints"]
    module.exit_json(changed=False, checkpoints=checkpoints, names=[c["name"] for c in checkpoints])


if __name__ == "__main__":
    main()
