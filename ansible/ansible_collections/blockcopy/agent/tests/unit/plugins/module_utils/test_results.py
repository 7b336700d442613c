# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The one place where the agent's camelCase answers become snake_case module results."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.common import snake_key, snake_result

# A job as the agent's jobInfo answers it (schemas/defs/job.json), trimmed.
JOB = {
    "jobId": "3f1c", "kind": "activeCommit", "state": "pivoted", "whenReady": "pivot", "groupId": "g1",
    "domain": {"name": "vmCamel", "uuid": "5f5c"}, "disk": "vda",
    "progress": {"cur": 1, "end": 2, "etaSeconds": 0, "copyRateBytesPerSecond": 10},
    "persistent": {"defined": True, "matchesLive": True},
    "cleanup": {"removeSource": True, "removed": ["/srv/a.qcow2"], "kept": [{"path": "/srv/base.qcow2", "reason": "used by domain vmB"}]},
    "createdAt": "2026-12-07T00:00:00Z", "readyAt": None,
}


class SnakeKeyTest(unittest.TestCase):
    def test_names(self):
        for camel, snake in (("jobId", "job_id"), ("matchesLive", "matches_live"), ("createdAt", "created_at"),
                             ("bandwidthBytesPerSecond", "bandwidth_bytes_per_second"), ("destinationXml", "destination_xml"),
                             ("state", "state"), ("already_there", "already_there"), ("vda", "vda")):
            self.assertEqual(snake_key(camel), snake)


class SnakeResultTest(unittest.TestCase):
    def test_every_depth(self):
        out = snake_result({"changed": True, "job": JOB, "jobs": [JOB], "group": {"groupId": "g1", "lastSwitch": None, "jobs": [JOB]}})
        text = json.dumps(out)
        for camel in ("jobId", "whenReady", "etaSeconds", "matchesLive", "removeSource", "createdAt", "groupId", "lastSwitch"):
            self.assertNotIn('"%s"' % camel, text)
        self.assertEqual(out["job"]["job_id"], "3f1c")
        self.assertEqual(out["jobs"][0]["persistent"]["matches_live"], True)
        self.assertEqual(out["group"]["jobs"][0]["progress"]["copy_rate_bytes_per_second"], 10)
        self.assertEqual(out["group"]["last_switch"], None)

    def test_values_unchanged(self):
        out = snake_result({"job": JOB})
        self.assertEqual(out["job"]["kind"], "activeCommit")
        self.assertEqual(out["job"]["when_ready"], "pivot")
        self.assertEqual(out["job"]["domain"]["name"], "vmCamel")
        self.assertEqual(out["job"]["cleanup"]["kept"][0]["reason"], "used by domain vmB")

    def test_data_keys_kept(self):
        # disk_snapshot's diff is keyed by disk target: data, not field names.
        diff = {"before": {"hdA": "/i/a.qcow2"}, "after": {"hdA": "/i/a.snap.qcow2"}}
        out = snake_result({"diff": diff, "changed": True})
        self.assertEqual(out["diff"], diff)

    def test_input_not_modified(self):
        job = json.loads(json.dumps(JOB))
        snake_result({"job": job})
        self.assertEqual(job, JOB)


if __name__ == "__main__":
    unittest.main()
