# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""block_backup's decisions (module_utils/decide.py) without an agent: a new backup or the one
job_id names, the check-mode answer, the refusals, and which checkpoints retention deletes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.decide import (
    NEW_CHECKPOINT, backup_decision, backup_retention, checkpoints_to_delete)


def backup(state, job_id="b1", domain="vm1", kind="backup", **extra):
    j = {"jobId": job_id, "kind": kind, "state": state, "domain": {"name": domain, "uuid": "uuid-" + domain},
         "mode": "full", "disks": [{"disk": "vda", "file": "/b/vm1-vda-c1.full.qcow2", "format": "qcow2"}]}
    j.update(extra)
    return j


def opts(**kw):
    p = dict(domain="vm1", dir="/b", pool=None, mode="full", since=None, checkpoint=True, checkpoint_name=None,
             job_id=None, wait=True, keep_checkpoints=None, endpoint=None)
    p.update(kw)
    return p


class BackupDecisionTests(unittest.TestCase):
    def test_a_new_full_backup_starts(self):
        d = backup_decision(opts(), None, [], None, check_mode=False)
        self.assertEqual((d.action, d.needs_daemon), ("start", None))
        self.assertEqual(d.msg % {"state": "completed"}, "made a full backup of vm1 to /b (completed)")

    def test_check_mode_says_changed_and_starts_nothing(self):
        d = backup_decision(opts(mode="incremental"), None, ["c1", "c2"], None, check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", True))
        self.assertEqual(d.msg, "would make an incremental backup of vm1 to /b since c2")
        d = backup_decision(opts(pool="backups", dir=None, mode="incremental", since="c1"), None, ["c1", "c2"], None, check_mode=True)
        self.assertEqual(d.msg, "would make an incremental backup of vm1 to pool backups since c1")

    def test_same_job_id_completed_is_not_changed(self):
        for check_mode in (False, True):
            d = backup_decision(opts(job_id="b1"), backup("completed"), ["c1"], None, check_mode=check_mode)
            self.assertEqual((d.action, d.changed), ("done", False))
            self.assertIn("already completed", d.msg)

    def test_same_job_id_running_is_waited_for(self):
        d = backup_decision(opts(job_id="b1"), backup("running"), [], None, check_mode=False)
        self.assertEqual((d.action, d.until, d.changed), ("wait", "done", False))
        d = backup_decision(opts(job_id="b1", wait=False), backup("running"), [], None, check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))
        d = backup_decision(opts(job_id="b1"), backup("running"), [], None, check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", False))

    def test_same_job_id_failed_fails_again(self):
        failed = backup("failed", error={"name": "libvirtError", "message": "no space left"})
        d = backup_decision(opts(job_id="b1"), failed, [], None, check_mode=False)
        self.assertEqual((d.action, d.error), ("fail", "libvirtError"))
        self.assertIn("no space left", d.msg)
        self.assertIn("a new job_id", d.msg)
        d = backup_decision(opts(job_id="b1"), backup("cancelled"), [], None, check_mode=True)
        self.assertEqual((d.action, d.error), ("fail", "invalidState"))

    def test_job_id_of_another_domain_or_kind_is_refused(self):
        d = backup_decision(opts(job_id="b1"), backup("completed", domain="vm2"), [], None, check_mode=False)
        self.assertEqual((d.action, d.error), ("fail", "jobExists"))
        self.assertIn("of vm2, not of vm1", d.msg)
        d = backup_decision(opts(job_id="b1", domain="uuid-vm1"), backup("completed"), [], None, check_mode=False)
        self.assertEqual(d.action, "done")
        d = backup_decision(opts(job_id="b1"), backup("pivoted", kind="copy"), [], None, check_mode=False)
        self.assertEqual((d.action, d.error), ("fail", "jobExists"))

    def test_another_backup_running_is_refused(self):
        for check_mode in (False, True):
            d = backup_decision(opts(), None, [], backup("running", job_id="other"), check_mode=check_mode)
            self.assertEqual((d.action, d.error), ("fail", "backupRunning"))
            self.assertIn("other", d.msg)

    def test_incremental_needs_a_checkpoint(self):
        d = backup_decision(opts(mode="incremental"), None, [], None, check_mode=True)
        self.assertEqual((d.action, d.error), ("fail", "notFound"))
        d = backup_decision(opts(mode="incremental", since="c9"), None, ["c1"], None, check_mode=False)
        self.assertEqual((d.action, d.error), ("fail", "notFound"))
        self.assertIn("no checkpoint c9", d.msg)
        self.assertEqual(backup_decision(opts(mode="incremental"), None, ["c1"], None, check_mode=False).action, "start")

    def test_wait_false_needs_the_daemon(self):
        d = backup_decision(opts(wait=False), None, [], None, check_mode=False)
        self.assertEqual(d.action, "start")
        self.assertIn("manifest", d.needs_daemon)
        self.assertEqual(d.msg % {"state": "running"}, "started a full backup of vm1 to /b (running)")

    def test_option_combinations_refused(self):
        for p in (opts(keep_checkpoints=2, wait=False), opts(since="c1"), opts(checkpoint=False, checkpoint_name="x")):
            d = backup_decision(p, None, ["c1"], None, check_mode=False)
            self.assertEqual((d.action, d.error), ("fail", "invalidParams"), p)


class RetentionTests(unittest.TestCase):
    def test_the_oldest_go(self):
        self.assertEqual(checkpoints_to_delete(["c1", "c2", "c3"], 2), ["c1"])
        self.assertEqual(checkpoints_to_delete(["c1", "c2", "c3"], 0), ["c1", "c2", "c3"])
        self.assertEqual(checkpoints_to_delete(["c1", "c2"], 2), [])
        self.assertEqual(checkpoints_to_delete(["c1", "c2"], None), [])

    def test_after_a_backup(self):
        self.assertEqual(backup_retention(opts(keep_checkpoints=2), ["c1", "c2", "c3"]), (["c1"], ["c2", "c3"]))
        self.assertEqual(backup_retention(opts(), ["c1", "c2", "c3"]), ([], ["c1", "c2", "c3"]))

    def test_check_mode_counts_the_new_checkpoint(self):
        self.assertEqual(backup_retention(opts(keep_checkpoints=2), ["c1", "c2"], starts=True), (["c1"], ["c2", NEW_CHECKPOINT]))
        self.assertEqual(backup_retention(opts(keep_checkpoints=2, checkpoint_name="c3"), ["c1", "c2"], starts=True), (["c1"], ["c2", "c3"]))
        self.assertEqual(backup_retention(opts(keep_checkpoints=2, checkpoint=False), ["c1", "c2"], starts=True), ([], ["c1", "c2"]))
        self.assertEqual(backup_retention(opts(keep_checkpoints=1), ["c1", "c2"], starts=False), (["c1"], ["c2"]))


if __name__ == "__main__":
    unittest.main()
