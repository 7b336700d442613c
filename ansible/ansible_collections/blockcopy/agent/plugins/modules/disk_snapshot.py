#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: disk_snapshot
short_description: Take an external disk-only snapshot of some disks of a running VM
version_added: "0.2.0"
description:
  - Drives C(blockcopy-agent) on the managed host (its C(snapshotDisks) method) to put a new qcow2
    overlay on top of each listed disk of a running domain, all at one moment (what
    C(virsh snapshot-create-as --disk-only --no-metadata --atomic) does). The guest writes into the
    overlays from then on; the former images become read-only backing layers that a backup can
    read, then merge back with M(blockcopy.agent.block_commit).
  - Only the listed disks are snapshotted; the domain's other disks are left alone (unlike virsh's
    default).
  - Overlays obey the agent's destination policy exactly as copy destinations do (allowed roots,
    trusted directories, no existing file, not any domain's disk).
  - Idempotent - when every listed disk already runs on its overlay (the overlay is the disk's
    active layer in the live XML) nothing is done and C(changed=false). When only some of them do,
    the task fails with C(error=invalidState), since snapshotting the others would not be one moment.
  - The live chain is read from the agent (its C(diskInfo) method), wherever I(endpoint) points.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
attributes:
  check_mode:
    support: full
    description: Reads the live XML and reports whether the snapshot would be taken; takes nothing.
  diff_mode:
    support: full
    description: Shows each listed disk's active layer before and after.
options:
  domain:
    description:
      - Name or UUID of the running domain.
    type: str
    required: true
  disks:
    description:
      - The disks to snapshot and their overlays (distinct disks, distinct overlays).
    type: list
    elements: dict
    required: true
    suboptions:
      disk:
        description:
          - Target of the disk, as in the domain XML (for example C(vda)).
        type: str
        required: true
      overlay:
        description:
          - Absolute path of the new qcow2 overlay; it must not exist yet (libvirt creates it).
        type: path
        required: true
  quiesce:
    description:
      - C(none) - a crash-consistent snapshot.
      - C(required) - freeze the guest's filesystems through the QEMU guest agent for the moment of
        the snapshot; the task fails with C(error=quiesceFailed) when it cannot, and nothing changes.
      - C(try) - freeze if the guest agent answers, else snapshot without it (C(quiesced=false)).
    type: str
    choices: [required, try, none]
    default: none
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - For a persistent domain libvirt moves the persistent definition onto the overlays too.
seealso:
  - module: blockcopy.agent.block_commit
  - module: blockcopy.agent.block_pull
'''

EXAMPLES = r'''
- name: Freeze vda and vdb of db1 at one moment for a backup
  blockcopy.agent.disk_snapshot:
    domain: db1
    disks:
      - disk: vda
        overlay: /var/lib/libvirt/images/db1-vda.backup.qcow2
      - disk: vdb
        overlay: /var/lib/libvirt/images/db1-vdb.backup.qcow2
    quiesce: try
  register: snap

- name: Back up the stable former image of vda while the guest writes into the overlay
  ansible.builtin.command: >-
    qemu-img convert -O qcow2 {{ snap.disks[0].backing }} /backup/db1-vda.qcow2
  changed_when: true

- name: Merge the overlay back and move the guest down onto its image
  blockcopy.agent.block_commit:
    domain: db1
    disk: vda
    state: pivoted
'''

RETURN = r'''
domain:
  description: The domain (name and uuid) as the agent answered, or as given when nothing was done.
  returned: success
  type: raw
  sample: {name: db1, uuid: 5f5c8a4c-def5-4ddc-aebf-412eef4b821c}
quiesced:
  description: Whether the guest's filesystems were frozen for the snapshot.
  returned: when the snapshot was taken
  type: bool
  sample: false
disks:
  description: Each listed disk, its overlay (now its active layer) and its former image (the overlay's backing layer).
  returned: success
  type: list
  elements: dict
  sample: [{disk: vda, overlay: {path: /var/lib/libvirt/images/db1-vda.backup.qcow2, format: qcow2}, backing: /var/lib/libvirt/images/db1-vda.qcow2}]
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: snapshotted vda, vdb of db1
error:
  description: >-
    The error's name on failure - the agent's (notFound, jobExists, destinationRejected, quiesceFailed, unsupported,
    libvirtError, ...), transport when the agent could not be reached, invalidParams, or invalidState (only some disks
    already run on their overlays).
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
reason:
  description: The agent's reason for a refusal (for example why an overlay was rejected).
  returned: when the agent gives one
  type: str
errors:
  description: Schema validation errors of the request (invalidParams).
  returned: when the agent rejected the parameters
  type: list
  elements: dict
diff:
  description: Each listed disk's active layer before and after, with C(--diff).
  returned: in diff mode
  type: dict
  sample: {before: {vda: /images/db1-vda.qcow2}, after: {vda: /images/db1-vda.backup.qcow2}}
'''

import os

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import CHAIN_ARGS, live_chain
from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import snapshot_decision


def chains(module, disks):
    """Each listed disk's live chain, or None when the live XML cannot be read here."""
    out = {}
    for d in disks:
        module.params["disk"] = d["disk"]
        chain = live_chain(module)
        if chain is None:
            return None
        out[d["disk"]] = chain
    return out


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        disks=dict(type="list", elements="dict", required=True, options=dict(
            disk=dict(type="str", required=True),
            overlay=dict(type="path", required=True),
        )),
        quiesce=dict(type="str", default="none", choices=["required", "try", "none"]),
    )
    argument_spec.update(CHAIN_ARGS)
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    disks = p["disks"]
    if not disks:
        module.fail_json(msg="disks must list at least one disk", error="invalidParams")
    for d in disks:
        if not os.path.isabs(d["overlay"]):
            module.fail_json(msg="overlay must be an absolute path, got %s" % d["overlay"], error="invalidParams")
    names = [d["disk"] for d in disks]
    if len(set(names)) != len(names):
        module.fail_json(msg="a disk is listed twice: %s" % ", ".join(names), error="invalidParams")

    live = chains(module, disks)
    before = dict((d, c[0]["path"]) for d, c in live.items()) if live is not None else None
    result = dict(changed=False, domain=dict(name=p["domain"]))
    decision = snapshot_decision(p, live, module.check_mode)
    if decision.action == "fail":
        module.fail_json(msg=decision.msg, error=decision.error, changed=False)
    if decision.action == "done" and not decision.changed:
        result["disks"] = [dict(disk=d["disk"], overlay=dict(path=live[d["disk"]][0]["path"], format=live[d["disk"]][0]["format"]),
                                backing=live[d["disk"]][1]["path"] if len(live[d["disk"]]) > 1 else None) for d in disks]
        result["msg"] = decision.msg
        if module._diff:
            result["diff"] = dict(before=before, after=before)
        module.exit_json(**result)
    after = dict((d["disk"], d["overlay"]) for d in disks)
    if decision.action == "done":
        result.update(changed=True, msg=decision.msg,
                      disks=[dict(disk=d["disk"], overlay=dict(path=d["overlay"], format="qcow2"),
                                  backing=before[d["disk"]] if before else None) for d in disks])
    else:
        with agent_session(module, changed=False) as client:
            r = client.call("snapshotDisks", {
                "domain": p["domain"], "quiesce": p["quiesce"],
                "disks": [{"disk": d["disk"], "overlay": {"path": d["overlay"]}} for d in disks],
            })
        result.update(changed=True, domain=r["domain"], quiesced=r["quiesced"], disks=r["disks"],
                      msg=decision.msg % {"domain": r["domain"]["name"], "quiesced": " (quiesced)" if r["quiesced"] else ""})
        after = dict((d["disk"], d["overlay"]["path"]) for d in r["disks"])
    if module._diff:
        result["diff"] = dict(before=before or {}, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
