# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""A disk's history as block_copy reads it from listJobs, which lists the agent's backups too."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.blockcopy.agent.plugins.modules.block_copy import disk_history

# A backup of the domain: a job of every disk it backs up, with no "disk" key.
BACKUP = {"jobId": "bk", "kind": "backup", "domain": {"name": "vm1"}, "disks": [{"disk": "vda"}], "state": "running"}
COPY = {"jobId": "cp", "kind": "copy", "domain": {"name": "vm1"}, "disk": "vda", "state": "ready"}
OTHER = {"jobId": "cp2", "kind": "copy", "domain": {"name": "vm1"}, "disk": "vdb", "state": "ready"}


class FakeClient:
    def __init__(self, jobs):
        self.jobs = jobs

    def call(self, method, params):
        assert method == "listJobs"
        return {"jobs": self.jobs}


class HistoryTest(unittest.TestCase):
    def test_backups_are_not_a_disks_history(self):
        self.assertEqual(disk_history(FakeClient([BACKUP, COPY, OTHER]), {"domain": "vm1", "disk": "vda"}), [COPY])


if __name__ == "__main__":
    unittest.main()
