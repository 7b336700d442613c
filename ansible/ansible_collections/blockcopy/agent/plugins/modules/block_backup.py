#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: block_backup
short_description: Back up a running VM's disks, full or incremental, with checkpoints and their retention
version_added: "0.2.0"
description:
  - Drives C(blockcopy-agent) on the managed host (its C(backup) method, libvirt's push-mode
    C(virDomainBackupBegin), what C(virsh backup-begin) does) to write an image of the domain's
    disks as they were at the moment the backup started, while the guest runs. Nothing is paused
    and no overlay is put in the disks' backing chains.
  - A C(full) backup copies every allocated cluster; an C(incremental) one only the clusters
    changed since a checkpoint (libvirt's dirty bitmaps), by default the domain's latest. With
    I(checkpoint=true) (the default) the backup creates a checkpoint at the same moment, the base
    of the next incremental.
  - "Each disk's file is named C(<domain>-<disk>-<checkpoint or start time>.<full|inc>.<format>) in
    the target directory; the agent writes the manifest C(<dir>/<domain>.backups.json) once the
    backup is verified (each file's size, virtual size and SHA-256), which C(blockcopy-agent restore)
    reads to rebuild a disk from a full backup and its incrementals. A file of that name that already
    exists is never overwritten - the task fails with C(error=destinationRejected)."
  - The target directory (or the pool's path) must be under the agent's C(allowedRoots) (the
    C(blockcopy.agent.agent) role's default is C(/var/lib/libvirt/images)), owned by root and not
    group or other writable.
  - A backup is an event, not a state - without I(job_id) every run makes a new backup and reports
    C(changed=true). With I(job_id), the same key again reports that backup with C(changed=false)
    (waiting for it if it still runs); a backup that failed or was cancelled under that key fails the
    task again (a new key starts a new backup).
  - Retention - with I(keep_checkpoints), once the backup has completed, the domain's oldest
    checkpoints are deleted so that the newest I(keep_checkpoints) remain (the agent's
    C(deleteCheckpoints); libvirt merges a deleted checkpoint's bitmaps into the next one, so
    incrementals since the remaining ones stay possible). Deleting any makes the task
    C(changed). The backup files and the manifest are never deleted.
author:
  - blockcopy-agent developers (@blockcopy-agent)
extends_documentation_fragment:
  - blockcopy.agent.agent
attributes:
  check_mode:
    support: full
    description:
      - Reads the agent's jobs and the domain's checkpoints and reports whether a backup would
        start and which checkpoints retention would delete; starts and deletes nothing.
  diff_mode:
    support: full
    description: Shows the backup (none, or its state and files) and the domain's checkpoints before and after.
options:
  domain:
    description:
      - Name or UUID of the running domain.
    type: str
    required: true
  dir:
    description:
      - Absolute path of the directory the backup files go to. Exactly one of I(dir) and I(pool).
    type: path
  pool:
    description:
      - Name of a libvirt storage pool (of type C(dir), C(fs) or C(netfs), listed in the agent's
        C(allowedPools)) whose directory the backup files go to.
    type: str
  disks:
    description:
      - Targets of the disks to back up (for example C([vda, vdb])). Default - every file or block
        disk of the domain.
    type: list
    elements: str
  mode:
    description:
      - C(full) - every allocated cluster of each disk.
      - C(incremental) - the clusters changed since the checkpoint I(since) (default the domain's
        latest); needs an earlier backup that created a checkpoint.
    type: str
    choices: [full, incremental]
    default: full
  since:
    description:
      - With I(mode=incremental), the checkpoint the backup is relative to. Default - the domain's latest.
    type: str
  checkpoint:
    description:
      - Create a checkpoint at the backup's start, the base of the next incremental backup.
    type: bool
    default: true
  checkpoint_name:
    description:
      - Name of the checkpoint I(checkpoint) creates (letters, digits, C(.), C(_), C(:), C(+), C(-)).
        Default - a name the agent generates, C(bc-<UTC time>), returned in RV(job.checkpoint).
    type: str
  format:
    description:
      - Format of a full backup's files. Incremental backups are always C(qcow2) (an unwritten
        cluster means unchanged).
    type: str
    choices: [qcow2, raw]
    default: qcow2
  quiesce:
    description:
      - Freeze the guest's filesystems through the QEMU guest agent for the moment the backup
        starts (thawed as soon as it has begun). C(required) fails with C(error=quiesceFailed) and
        starts nothing when the guest agent cannot freeze; C(try) then backs up unquiesced and
        says why in RV(job.quiesce_note); C(none) does not freeze.
    type: str
    choices: [required, try, none]
    default: none
  checksum:
    description:
      - What the agent records of each file once the backup is complete. C(sha256) reads every
        file back and records its SHA-256 in the manifest before the backup is reported completed
        (the restore verifies it). C(none) skips that read-back (completed as soon as libvirt
        confirmed the end and QEMU closed the files); the manifest records no checksum and the
        restore says the files were not verified.
    type: str
    choices: [sha256, none]
    default: sha256
  job_id:
    description:
      - Idempotency key for the backup; the same key again refers to the same backup (C(changed=false)).
        A key that names another domain's backup, or a job that is not a backup, fails with C(error=jobExists).
    type: str
  wait:
    description:
      - Wait until the backup has ended and was verified. With C(false) the task returns once it
        has started; the agent then verifies its end and writes the manifest by itself, which needs
        the agent's daemon on the host (see M(blockcopy.agent.block_copy)); over a
        C(blockcopy-agent stdio) that serves the module alone the task fails with C(error=noDaemon).
    type: bool
    default: true
  timeout:
    description:
      - Seconds the backup may run. A backup still running then is aborted (cancelled) by the agent
        and the task fails.
    type: int
    default: 3600
  keep_checkpoints:
    description:
      - After a completed backup, delete the domain's oldest checkpoints so that only the newest
        I(keep_checkpoints) remain (C(0) deletes them all, the new one too, so that the next backup
        must be a full one). Needs I(wait=true).
      - Default - no checkpoint is deleted.
    type: int
notes:
  - Needs C(blockcopy-agent) on the managed host (see the C(blockcopy.agent.agent) role).
  - libvirt runs one backup of a domain at a time; another one running fails the task with C(error=backupRunning).
  - Use C(async)/C(poll) for long backups; C(async) cannot be combined with check mode.
  - Restore with C(blockcopy-agent restore <dir>/<domain>.backups.json --disk vda --output PATH)
    (the repository's C(docs/restore.md)); it runs offline and needs only C(qemu-img).
seealso:
  - module: blockcopy.agent.checkpoint_info
  - module: blockcopy.agent.block_copy
'''

EXAMPLES = r'''
- name: A full backup of db1 into the backup directory, with a checkpoint for the next incremental
  blockcopy.agent.block_backup:
    domain: db1
    dir: /var/lib/libvirt/images/backups/db1
    job_id: "db1-full-{{ '%Y%m%d' | strftime }}"

- name: An incremental since the latest checkpoint, keeping the newest 7 checkpoints
  blockcopy.agent.block_backup:
    domain: db1
    dir: /var/lib/libvirt/images/backups/db1
    mode: incremental
    keep_checkpoints: 7
    job_id: "db1-inc-{{ '%Y%m%dT%H' | strftime }}"
  register: backup

- name: The files it wrote
  ansible.builtin.debug:
    msg: "{{ backup.job.disks | map(attribute='file') | list }}, manifest {{ backup.job.manifest }}"

- name: Back up vdb only, to a pool, as raw files, without a checkpoint
  blockcopy.agent.block_backup:
    domain: db1
    pool: backups
    disks: [vdb]
    format: raw
    checkpoint: false
'''

RETURN = r'''
job:
  description: The backup job as the agent reports it (its BackupJob, each key in snake_case - jobId is job_id).
  returned: when a backup was started or found by job_id
  type: dict
  contains:
    job_id:
      description: The backup's id (I(job_id) if given, else generated by the agent).
      type: str
    kind:
      description: Always backup.
      type: str
      sample: backup
    domain:
      description: The domain (name and uuid).
      type: dict
    state:
      description: running, completed, failed or cancelled.
      type: str
      sample: completed
    mode:
      description: full or incremental.
      type: str
      sample: incremental
    since:
      description: The checkpoint an incremental is relative to; null for a full backup.
      type: str
    checkpoint:
      description: The checkpoint created at the backup's start, or null.
      type: str
      sample: bc-20261207T130501.123Z
    quiesced:
      description: The guest's filesystems were frozen at the backup's start.
      type: bool
      returned: for a backup this agent started
    quiesce_note:
      description: With I(quiesce=try), why the backup was taken unquiesced.
      type: str
      returned: when a try did not freeze
    checksum:
      description: What is recorded of each file at completion, sha256 or none (the I(checksum) asked).
      type: str
      returned: for a backup this agent started
    dir:
      description: The directory holding the files and the manifest.
      type: str
    pool:
      description: The pool named as target.
      type: str
      returned: with pool
    manifest:
      description: The manifest file once the backup completed (null before, and for a backup started outside the agent).
      type: str
      sample: /var/lib/libvirt/images/backups/db1/db1.backups.json
    disks:
      description: Each disk backed up - disk, file, format, and once completed virtual_size, size (bytes) and sha256 (not with I(checksum=none)).
      type: list
      elements: dict
      sample: [{disk: vda, file: /var/lib/libvirt/images/backups/db1/db1-vda-bc-20261207T130501.123Z.full.qcow2, format: qcow2}]
    progress:
      description: Bytes written (processed) of total, and percent (null while total is unknown).
      type: dict
    partial_files:
      description: Files a failed or cancelled backup left (never listed in the manifest).
      type: list
      elements: str
      returned: when the backup failed or was cancelled
    error:
      description: Why the backup failed or was cancelled (name, message, evidence).
      type: dict
      returned: when the backup failed or was cancelled
    owner:
      description: agent, or adopted for a backup started outside the agent (virsh backup-begin) that it follows.
      type: str
    created_at:
      description: When the backup started (ISO 8601).
      type: str
    updated_at:
      description: When the backup's state last changed (ISO 8601).
      type: str
    ended_at:
      description: When its end was seen (ISO 8601).
      type: str
      returned: once ended
checkpoints_deleted:
  description: The checkpoints retention deleted, oldest first; in check mode the ones it would delete.
  returned: always
  type: list
  elements: str
  sample: [bc-20261201T010000.000Z]
checkpoints:
  description: >-
    The domain's checkpoints after the task, oldest first; in check mode as they would be, where a checkpoint the
    backup would create is named I(checkpoint_name), or C((the checkpoint this backup creates)) without it.
  returned: always
  type: list
  elements: str
  sample: [bc-20261206T010000.000Z, bc-20261207T010000.000Z]
msg:
  description: What the module did or found.
  returned: always
  type: str
  sample: made an incremental backup of db1 to /var/lib/libvirt/images/backups/db1 (completed)
error:
  description: >-
    The error's name on failure - the agent's (notFound, backupRunning, destinationRejected, jobExists,
    timeout, libvirtError, ...), transport when the agent could not be reached, noDaemon, or invalidParams.
  returned: failed
  type: str
  sample: backupRunning
code:
  description: The JSON-RPC error code of the agent's answer.
  returned: when the agent answered with an error
  type: int
libvirt:
  description: libvirt's own error (code, domain, message) when libvirt refused.
  returned: when libvirt refused
  type: dict
reason:
  description: The agent's reason for a refusal.
  returned: when the agent gives one
  type: str
diff:
  description: The backup and the domain's checkpoints before and after, with C(--diff).
  returned: in diff mode
  type: dict
  sample: {before: {backup: null, checkpoints: [bc-1]}, after: {backup: {state: completed, files: [/b/db1-vda-bc-2.inc.qcow2]}, checkpoints: [bc-2]}}
'''

from ansible_collections.blockcopy.agent.plugins.module_utils.common import AgentModule, CONNECTION_ARGS, agent_session, carry_out, job_or_none
from ansible_collections.blockcopy.agent.plugins.module_utils.decide import backup_decision, backup_retention


def backup_params(p):
    """The agent's backup call for a Decision("start")."""
    params = {"domain": p["domain"], "target": {"dir": p["dir"]} if p["dir"] else {"pool": p["pool"]},
              "format": p["format"], "wait": p["wait"], "timeout": p["timeout"]}
    if p["quiesce"] != "none":
        params["quiesce"] = p["quiesce"]
    if p["checksum"] != "sha256":
        params["checksum"] = p["checksum"]
    if p["disks"] is not None:
        params["disks"] = p["disks"]
    if p["mode"] == "incremental":
        # Named when given; else the agent takes the domain's latest, as decided.
        params["incremental"] = p["since"] if p["since"] is not None else True
    if p["checkpoint"]:
        params["checkpoint"] = p["checkpoint_name"] if p["checkpoint_name"] is not None else True
    if p["job_id"] is not None:
        params["jobId"] = p["job_id"]
    return params


def known_backup(client, job_id):
    """The job the agent knows by job_id (any kind), or None."""
    return None if job_id is None else job_or_none(client, {"jobId": job_id})


def running_backup(client, domain):
    jobs = client.call("listJobs", {"domain": domain, "kind": ["backup"], "includeEnded": False})["jobs"]
    return next((j for j in jobs if j["state"] == "running"), None)


def checkpoint_names(client, domain):
    return [c["name"] for c in client.call("checkpoints", {"domain": domain})["checkpoints"]]


def backup_view(job):
    if job is None:
        return None
    return {"job_id": job["jobId"], "state": job["state"], "mode": job["mode"], "files": [d["file"] for d in job["disks"]]}


def run(module, client):
    """Carries out backup_decision and backup_retention (module_utils/decide.py)."""
    p = module.params
    found = known_backup(client, p["job_id"])
    running = running_backup(client, p["domain"]) if found is None else None
    before = checkpoint_names(client, p["domain"])
    d = backup_decision(p, found, before, running, module.check_mode)
    settled = carry_out(module, client, d, found)
    if settled:
        changed, job, msg = settled
    else:
        r = client.call_retrying("backup", backup_params(p), timeout=p["timeout"] + 60)
        changed, job = r["changed"], r["job"]
        msg = d.msg % {"state": job["state"]}
    if job is not None and job["state"] in ("failed", "cancelled"):
        err = job.get("error") or {}
        module.fail_json(msg="backup %s of %s %s: %s" % (job["jobId"], p["domain"], job["state"], err.get("message", "")),
                         error=err.get("name") or "invalidState", job=job, changed=changed)
    if module.check_mode:
        # The checkpoints as they would be: with the new one (if a backup would start with one), less retention's.
        deleted, after = backup_retention(p, before, starts=d.changed)
        if deleted:
            msg += "; would delete checkpoint(s) %s" % ", ".join(deleted)
    else:
        deleted = []
        after = checkpoint_names(client, p["domain"]) if changed or p["keep_checkpoints"] is not None else before
        # Retention only once the backup completed (the agent refuses it while a backup runs).
        if job is not None and job["state"] == "completed" and backup_retention(p, after)[0]:
            r = client.call_retrying("deleteCheckpoints", {"domain": p["domain"], "keep": p["keep_checkpoints"]}, timeout=p["timeout"])
            deleted, after = r["deleted"], r["kept"]
            if deleted:
                msg += "; deleted checkpoint(s) %s" % ", ".join(deleted)
    result = dict(changed=changed or bool(deleted), msg=msg, checkpoints_deleted=deleted, checkpoints=after)
    if job is not None:
        result["job"] = job
    if module._diff:
        would = {"state": "completed", "mode": p["mode"], "files": []} if module.check_mode and d.changed else None
        result["diff"] = dict(before=dict(backup=backup_view(found), checkpoints=before),
                              after=dict(backup=would or backup_view(job), checkpoints=after))
    return result


def main():
    argument_spec = dict(
        domain=dict(type="str", required=True),
        dir=dict(type="path"),
        pool=dict(type="str"),
        disks=dict(type="list", elements="str"),
        mode=dict(type="str", default="full", choices=["full", "incremental"]),
        since=dict(type="str"),
        checkpoint=dict(type="bool", default=True),
        checkpoint_name=dict(type="str"),
        format=dict(type="str", default="qcow2", choices=["qcow2", "raw"]),
        quiesce=dict(type="str", default="none", choices=["required", "try", "none"]),
        checksum=dict(type="str", default="sha256", choices=["sha256", "none"]),
        job_id=dict(type="str"),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
        keep_checkpoints=dict(type="int"),
    )
    argument_spec.update(CONNECTION_ARGS)
    module = AgentModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("dir", "pool")],
        required_one_of=[("dir", "pool")],
    )
    p = module.params
    if p["dir"] is not None and not p["dir"].startswith("/"):
        module.fail_json(msg="dir must be an absolute path, got %s" % p["dir"], error="invalidParams")
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive", error="invalidParams")
    if p["keep_checkpoints"] is not None and p["keep_checkpoints"] < 0:
        module.fail_json(msg="keep_checkpoints must be 0 or more", error="invalidParams")
    with agent_session(module, changed=False) as client:
        result = run(module, client)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
